"""The reranker as served: the interpolation of its score with the fused score (by hand
and through the pipeline), the layer cut of a student, length-sorted batches, and
dynamic int8 quantization ranking like the float model (tiny random models)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from tests.test_reranker import save_tiny_cross_encoder
from tests.test_train import save_tiny_bert
from twofold.core.errors import InputError, ModelError
from twofold.core.types import Hit, Query, Ranking
from twofold.models.reranker import SETTINGS_FILE, CrossEncoder, RerankerConfig
from twofold.search.pipeline import FUSED, Depths, Pipeline, interpolate
from twofold.train.reranker import cut_layers, encoder_layers

TEXTS = [
    "heat transfer in a boundary layer",
    "lift and drag of wings",
    "shells",
    "flow " * 40,
    "supersonic flow of heat",
    "buckling of shells under pressure",
    "the laminar boundary layer",
]


def test_interpolation_by_hand() -> None:
    rerank, fused = [2.0, 0.0, 1.0], [0.9, 0.5, 0.1]
    # min-max: rerank (1, 0, 0.5), fused (1, 0.5, 0)
    assert interpolate(rerank, fused, 0.5) == pytest.approx([1.0, 0.25, 0.25])
    assert interpolate(rerank, fused, 0.8) == pytest.approx([1.0, 0.1, 0.4])
    assert interpolate(rerank, fused, 0.0) == pytest.approx([1.0, 0.5, 0.0])
    assert interpolate(rerank, fused, 1.0) == pytest.approx([1.0, 0.0, 0.5])
    # equal scores normalize to 1 each: only the other side orders
    assert interpolate([3.0, 3.0], [1.0, 0.0], 0.5) == pytest.approx([1.0, 0.5])
    with pytest.raises(InputError):
        interpolate(rerank, fused, 1.5)


class FixedReranker:
    """Given scores per text; ``alpha`` as a trained reranker carries it."""

    name = "fixed"

    def __init__(self, scores: dict[str, float], alpha: float | None) -> None:
        self.scores, self.alpha = scores, alpha

    def score(self, query: str, texts: Sequence[str], deadline: float | None = None) -> list[float]:
        return [self.scores[t] for t in texts]


class ListRetriever:
    name = "list"

    def retrieve(self, query: Query, k: int) -> Ranking:
        hits = (Hit("a", 0.9), Hit("b", 0.5), Hit("c", 0.1), Hit("d", 0.05))
        return Ranking(query.query_id, hits[:k])


def test_pipeline_interpolates_with_the_rerankers_alpha() -> None:
    rerank = {"a": 2.0, "b": 0.0, "c": 1.0}

    def run(alpha: float | None) -> Ranking:
        pipeline = Pipeline(
            "p",
            {"list": ListRetriever()},  # type: ignore[dict-item]
            reranker=FixedReranker(rerank, alpha),
            depths=Depths(retrieve=4, rerank=3),
            doc_text=lambda d: d,
        )
        return pipeline.search(Query("q", "x"), 4)

    # alpha 0.8: a 1.0, c 0.4, b 0.1; d (past the rerank depth) stays last
    r = run(0.8)
    assert [h.doc_id for h in r.hits] == ["a", "c", "b", "d"]
    assert [h.score for h in r.hits[:3]] == pytest.approx([1.0, 0.4, 0.1])
    assert r.hits[1].sources[FUSED] == (3, 0.1)
    # alpha 0.2: a 1.0, b 0.4, c 0.2 (the fused order wins)
    assert [h.doc_id for h in run(0.2).hits] == ["a", "b", "c", "d"]
    # no alpha (an untrained hub cross-encoder): its score replaces the fused one
    assert [h.score for h in run(None).hits[:3]] == [2.0, 1.0, 0.0]


def test_layer_cut_keeps_the_first_n_layers(tmp_path: Path) -> None:
    base = save_tiny_bert(tmp_path / "tiny")
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    first = [p.clone() for p in encoder_layers(model)[0].parameters()]
    cut_layers(model, 1)
    assert len(encoder_layers(model)) == 1 and model.config.num_hidden_layers == 1
    assert all(
        torch.equal(a, b) for a, b in zip(first, encoder_layers(model)[0].parameters(), strict=True)
    )
    model.save_pretrained(tmp_path / "cut")
    again = AutoModelForSequenceClassification.from_pretrained(tmp_path / "cut")
    assert len(encoder_layers(again)) == 1
    with pytest.raises(InputError):
        cut_layers(model, 3)


@pytest.fixture(scope="module")
def tiny_ce(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random cross-encoder whose Linear weights are drawn wide (std 0.3), so its
    scores spread (BERT's 0.02 init gives near-ties that any rounding reorders)."""
    directory = save_tiny_cross_encoder(tmp_path_factory.mktemp("ce") / "tiny", seed=3)
    model = AutoModelForSequenceClassification.from_pretrained(directory)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * 0.3)
    model.save_pretrained(directory)
    return directory


def test_length_sorted_batches_score_as_one_by_one(tiny_ce: Path) -> None:
    one = CrossEncoder(RerankerConfig(str(tiny_ce), batch_size=1)).score("heat flow", TEXTS)
    batched = CrossEncoder(RerankerConfig(str(tiny_ce), batch_size=3)).score("heat flow", TEXTS)
    assert batched == pytest.approx(one, abs=1e-5)


def test_int8_ranks_like_float(tiny_ce: Path) -> None:
    fp = CrossEncoder(RerankerConfig(str(tiny_ce)))
    q8 = CrossEncoder(RerankerConfig(str(tiny_ce), quantize=True))
    assert q8.quantized and not fp.quantized
    for query in ("heat flow", "shells under pressure", "wings"):
        a, b = fp.score(query, TEXTS), q8.score(query, TEXTS)
        order_a = sorted(range(len(TEXTS)), key=lambda i: -a[i])
        order_b = sorted(range(len(TEXTS)), key=lambda i: -b[i])
        assert order_a[0] == order_b[0]
        # pairwise agreement (Kendall): at least 90% of the pairs ordered alike
        pairs = [(i, j) for i in range(len(TEXTS)) for j in range(i + 1, len(TEXTS))]
        agree = sum((a[i] - a[j]) * (b[i] - b[j]) > 0 for i, j in pairs)
        assert agree >= 0.9 * len(pairs), (a, b)


def test_settings_file_is_read_and_checked(tmp_path: Path) -> None:
    model = save_tiny_cross_encoder(tmp_path / "m")
    assert CrossEncoder(RerankerConfig(str(model))).alpha is None
    (model / SETTINGS_FILE).write_text(json.dumps({"alpha": 0.35, "max_length": 24, "int8": True}))
    ce = CrossEncoder(RerankerConfig(str(model)))
    assert ce.alpha == 0.35 and ce.max_length == 24 and ce.quantized
    assert not CrossEncoder(RerankerConfig(str(model), quantize=False)).quantized
    (model / SETTINGS_FILE).write_text(json.dumps({"alpha": 2}))
    with pytest.raises(ModelError):
        CrossEncoder(RerankerConfig(str(model)))
