"""``twofold train dense`` on a tiny bm25+dense collection: the contrastive loss by hand,
a few-step run lowers the loss, the output is a dense model a build reads, the held-out
figures are recorded, and bad output paths are refused before any work."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.test_dense_index import write_corpus
from tests.test_dense_model import make_tiny_model
from tests.test_train_adapter import labelled_queries
from twofold.core.errors import InputError
from twofold.indexing.build import build_collection
from twofold.indexing.buildctx import BuildOptions, DenseOptions
from twofold.indexing.collection import Collection
from twofold.models.dense import DenseEncoder
from twofold.models.registry import MODELS
from twofold.train.dense import DenseTrainConfig, contrastive_loss, train_dense
from twofold.train.publish import ARGS_FILE, CARD_FILE


def test_contrastive_loss_by_hand() -> None:
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    docs = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0], [0.0, 0.0]])  # group 2
    # query 0: logits (1, 0, 0, 0) -> -log(e / (e + 3)); query 1 the same by symmetry
    expected = -math.log(math.e / (math.e + 3))
    assert float(contrastive_loss(q, docs, group=2, tau=1.0)) == pytest.approx(expected)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Collection, Path]:
    root = tmp_path_factory.mktemp("train-dense")
    model = make_tiny_model(root / "model", hidden=16)
    corpus = write_corpus(root / "corpus.jsonl", 60, seed=5)
    options = BuildOptions(
        retrievers=("bm25", "dense"),
        dense=DenseOptions(model=str(model)),
        batch_size=8,
        progress=False,
    )
    build_collection(corpus, root / "c", options)
    return Collection(root / "c"), model


def test_few_steps_lower_the_loss_and_the_output_builds(
    setup: tuple[Collection, Path], tmp_path: Path
) -> None:
    collection, model = setup
    config = DenseTrainConfig(
        base=str(model), epochs=6, batch_size=8, lr=3e-3, max_length=32, device="cpu"
    )
    out = tmp_path / "student"
    result = train_dense(collection, labelled_queries(collection), out, config)
    assert result.steps >= 6 * 5
    first, last = np.mean(result.losses[:5]), np.mean(result.losses[-5:])
    assert last < first, result.losses
    record = json.loads((out / ARGS_FILE).read_text())
    assert record["metrics"]["heldout_ndcg@10_student"] == round(result.heldout_trained, 4)
    assert record["train_queries"] + record["heldout_queries"] <= 60
    assert "heldout" in (out / CARD_FILE).read_text()
    # what a build reads: the same pooling, unit vectors of the same width
    encoder = DenseEncoder(str(out))
    vecs = encoder.encode_docs(["laminar flow", "heat"])
    assert vecs.shape == (2, 16) and np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-5)
    built = tmp_path / "rebuilt"
    source = collection.path.parent / "corpus.jsonl"
    options = BuildOptions(
        retrievers=("dense",), dense=DenseOptions(model=str(out)), progress=False
    )
    build_collection(source, built, options)
    assert Collection(built).has("dense")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_rebuild_takes_the_trainers_corpus_vectors(tmp_path: Path, precision: str) -> None:
    """The trainer encodes the corpus for its held-out check in the precision the
    collection's dense sub-index was built in, so the rebuild that ``optimize`` runs with
    the new model (``ReuseVectors``) takes those vectors instead of encoding again, and
    the collection keeps its recorded precision."""
    from twofold.indexing.dense.shards import ReuseVectors
    from twofold.indexing.encoding import LocalExecutor
    from twofold.indexing.manifest import read_manifest
    from twofold.indexing.rebuild import publish_rebuild, stage_rebuild

    model = make_tiny_model(tmp_path / "model", hidden=16)
    corpus = write_corpus(tmp_path / "corpus.jsonl", 40, seed=3)
    options = BuildOptions(
        retrievers=("bm25", "dense"),
        dense=DenseOptions(model=str(model), precision=precision),
        batch_size=8,
        progress=False,
    )
    build_collection(corpus, tmp_path / "c", options)
    collection = Collection(tmp_path / "c")
    config = DenseTrainConfig(base=str(model), epochs=1, batch_size=8, device="cpu")
    out = tmp_path / "student"
    trained = train_dense(collection, labelled_queries(collection), out, config)
    assert trained.doc_encoding["precision"] == precision and trained.doc_vectors is not None
    reuse = ReuseVectors(LocalExecutor("cpu", False), trained.doc_vectors, trained.doc_encoding)
    stage_rebuild(collection.path, "dense", {"model": str(out)}, False, reuse)
    publish_rebuild(collection.path)
    assert reuse.reused
    entry = read_manifest(collection.path).sub_indexes["dense"]
    assert entry["precision"] == precision
    stored = np.load(collection.path / "dense" / "vectors.npy")
    np.testing.assert_array_equal(stored, trained.doc_vectors)


def test_refuses_the_model_cache_and_unlabelled_queries(
    setup: tuple[Collection, Path], tmp_path: Path
) -> None:
    collection, model = setup
    config = DenseTrainConfig(base=str(model), device="cpu")
    cache_target = MODELS.get("minilm-l6").path().parent / "mine"
    with pytest.raises(InputError):
        train_dense(collection, labelled_queries(collection), cache_target, config)
    unlabelled = [q.__class__(q.query) for q in labelled_queries(collection)]
    with pytest.raises(InputError, match="labelled"):
        train_dense(collection, unlabelled, tmp_path / "x", config)
    assert not (tmp_path / "x").exists()
    with pytest.raises(InputError):
        DenseTrainConfig(kl_weight=1.0, negatives=0)
