"""Cross-encoder reranker on tiny random BertForSequenceClassification models."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

from twofold.core.errors import ModelError
from twofold.models.reranker import CrossEncoder, RerankerConfig, RerankTimeout

WORDS = ["the", "a", "of", "and", "boundary", "layer", "heat", "transfer", "flow"]
WORDS += ["shells", "wings", "supersonic", "lift", "drag"]


def save_tiny_cross_encoder(
    directory: Path, num_labels: int = 1, seed: int = 0, vocab_size: int | None = None
) -> Path:
    """A random 1-layer BERT classifier + WordPiece tokenizer, in the HF on-disk layout."""
    directory.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)})
    assert tokenizer("heat")["input_ids"] == [2, vocab.index("heat"), 3]
    tokenizer.save_pretrained(directory)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=vocab_size or 5 + len(WORDS),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        num_labels=num_labels,
    )
    BertForSequenceClassification(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_cross_encoder(tmp_path_factory.mktemp("ce") / "tiny")


DOCS = ["heat transfer in a boundary layer", "lift and drag of wings", "shells", "flow " * 100]


def reference_scores(path: Path, query: str, docs: list[str], max_length: int) -> list[float]:
    """One pair at a time, straight through transformers."""
    tok = BertTokenizerFast.from_pretrained(path)
    model = BertForSequenceClassification.from_pretrained(path).eval()
    out = []
    for doc in docs:
        enc = tok(query, doc, truncation="only_second", max_length=max_length, return_tensors="pt")
        with torch.inference_mode():
            out.append(float(model(**enc).logits[0, 0]))
    return out


def test_scores_match_unbatched_reference(model_dir: Path) -> None:
    query = "boundary layer heat transfer"
    for batch_size in (1, 3, 16):
        config = RerankerConfig(str(model_dir), batch_size=batch_size, max_length=32)
        ce = CrossEncoder(replace(config, precision="fp32"))
        assert ce.score(query, DOCS) == pytest.approx(
            reference_scores(model_dir, query, DOCS, 32), abs=1e-5
        )
    assert ce.score(query, []) == []


def test_bf16_scores_are_the_fp32_ones_within_its_precision(model_dir: Path) -> None:
    query = "boundary layer heat transfer"
    config = RerankerConfig(str(model_dir), batch_size=3, max_length=32)
    fp32 = CrossEncoder(replace(config, precision="fp32"))
    bf16 = CrossEncoder(replace(config, precision="bf16"))
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16")
    assert next(bf16._model.parameters()).dtype == torch.bfloat16
    got = bf16.score(query, DOCS)
    assert all(isinstance(x, float) for x in got)
    # bfloat16 keeps 8 bits of mantissa: scores of order 0.1-1 move by a few 1e-3
    assert got == pytest.approx(fp32.score(query, DOCS), abs=0.02)
    # int8 asked for wins: the quantized model is float32 with int8 Linear layers
    int8 = CrossEncoder(replace(config, quantize=True, precision="bf16"))
    assert int8.precision == "int8" and int8.quantized


def test_long_documents_are_cut_after_max_length(model_dir: Path) -> None:
    ce = CrossEncoder(RerankerConfig(str(model_dir), max_length=16, precision="fp32"))
    base = "heat transfer " * 20
    # Everything past 16 tokens is dropped, so a different ending changes nothing.
    a, b = ce.score("heat", [base + "wings lift", base + "shells drag"])
    assert a == pytest.approx(b, abs=1e-6)


def test_max_length_is_capped_at_the_models_positions(model_dir: Path) -> None:
    ce = CrossEncoder(RerankerConfig(str(model_dir), max_length=512, precision="fp32"))
    assert ce.max_length == 64
    (score,) = ce.score("heat", ["heat transfer " * 200])
    assert score == pytest.approx(
        reference_scores(model_dir, "heat", ["heat transfer " * 200], 64)[0], abs=1e-5
    )


def test_long_queries_keep_room_for_the_document(model_dir: Path) -> None:
    ce = CrossEncoder(
        RerankerConfig(str(model_dir), max_length=24, max_query_tokens=4, precision="fp32")
    )
    long_query = "boundary layer heat transfer " * 30
    short_query = "boundary layer heat transfer"
    assert ce.score(long_query, DOCS) == pytest.approx(ce.score(short_query, DOCS), abs=1e-6)
    # and the documents still matter
    assert len(set(round(s, 6) for s in ce.score(long_query, DOCS))) > 1


def test_two_label_models_score_the_log_odds(tmp_path: Path) -> None:
    path = save_tiny_cross_encoder(tmp_path / "two", num_labels=2, seed=1)
    ce = CrossEncoder(RerankerConfig(str(path), max_length=32, precision="fp32"))
    tok = BertTokenizerFast.from_pretrained(path)
    model = BertForSequenceClassification.from_pretrained(path).eval()
    enc = tok("heat", DOCS[0], return_tensors="pt")
    with torch.inference_mode():
        logits = model(**enc).logits[0]
    assert ce.score("heat", DOCS[:1]) == pytest.approx([float(logits[1] - logits[0])], abs=1e-5)


def test_a_spent_deadline_raises_before_scoring(model_dir: Path) -> None:
    ce = CrossEncoder(RerankerConfig(str(model_dir), batch_size=1))
    with pytest.raises(RerankTimeout, match="0 of 4"):
        ce.score("heat", DOCS, deadline=time.monotonic() - 1)


def test_load_errors_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not a directory"):
        CrossEncoder(RerankerConfig(str(tmp_path / "nope")))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match="cannot load"):
        CrossEncoder(RerankerConfig(str(empty)))
    three = save_tiny_cross_encoder(tmp_path / "three", num_labels=3)
    with pytest.raises(ModelError, match="3 labels"):
        CrossEncoder(RerankerConfig(str(three)))
