"""The dense query adapter: its residual map against hand-computed values, the on-disk
format and its checks, the trainer on a tiny bm25+dense collection (the loss falls, the
held-out guard decides what is written), and ``dense`` using what was written."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tests.test_dense_index import write_corpus
from tests.test_dense_model import make_tiny_model
from twofold.core.errors import CollectionError, InputError
from twofold.core.types import Query
from twofold.indexing.build import build_collection
from twofold.indexing.buildctx import BuildOptions, DenseOptions
from twofold.indexing.collection import Collection
from twofold.indexing.dense.adapter import read_adapter, remove_adapter, residual, write_adapter
from twofold.search.dense import DenseRetriever
from twofold.train.adapter import AdapterConfig, train_adapter
from twofold.train.publish import ARGS_FILE, CARD_FILE
from twofold.train.queries import TrainQuery


def test_residual_map_by_hand() -> None:
    x = np.array([[1.0, 0.0]], dtype=np.float32)
    a = np.array([[1.0, 0.0]], dtype=np.float32)  # r = 1: reads x[0]
    b = np.array([[0.0], [1.0]], dtype=np.float32)  # writes it into x[1]
    # x + B(Ax) = (1, 1), normalized
    assert residual(x, a, b) == pytest.approx(np.array([[2**-0.5, 2**-0.5]]))
    assert residual(x, a, np.zeros_like(b)) == pytest.approx(x)  # B = 0: the identity


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> Collection:
    root = tmp_path_factory.mktemp("adapter")
    model = make_tiny_model(root / "model", hidden=16)
    corpus = write_corpus(root / "corpus.jsonl", 60, seed=3)
    options = BuildOptions(
        retrievers=("bm25", "dense"),
        dense=DenseOptions(model=str(model)),
        batch_size=8,
        progress=False,
    )
    build_collection(corpus, root / "c", options)
    return Collection(root / "c")


def labelled_queries(collection: Collection) -> list[TrainQuery]:
    out = []
    for i, doc_id in enumerate(collection.docs.ids):
        words = collection.docs.get(doc_id).text.split()
        out.append(TrainQuery(Query(f"q{i}", " ".join(words[:3])), {doc_id: 1}))
    return out


def test_format_round_trip_and_both_variant_search(collection: Collection, tmp_path: Path) -> None:
    dense = DenseRetriever(collection, use_adapter=False)
    dim, n = dense.index.dim, dense.index.count
    rng = np.random.default_rng(0)
    w = {
        "query_a": rng.normal(size=(2, dim)).astype(np.float32),
        "query_b": rng.normal(size=(dim, 2)).astype(np.float32) * 0.1,
        "doc_a": rng.normal(size=(2, dim)).astype(np.float32),
        "doc_b": rng.normal(size=(dim, 2)).astype(np.float32) * 0.1,
    }
    write_adapter(collection.path, "both", w, {"dim": dim}, doc_vectors=dense.index.vectors)
    try:
        adapter = read_adapter(collection.path, dim, n, None)
        assert adapter is not None and adapter.docs is not None
        expected_docs = residual(np.asarray(dense.index.vectors), w["doc_a"], w["doc_b"])
        assert np.asarray(adapter.docs) == pytest.approx(expected_docs, abs=1e-6)
        adapted = DenseRetriever(collection)
        q = adapted.encode(["boundary layer"])
        plain = dense.encode(["boundary layer"])
        assert q == pytest.approx(residual(plain, w["query_a"], w["query_b"]), abs=1e-6)
        hits = adapted.search_vectors(q, 5)
        sims = expected_docs @ q[0]
        assert hits.scores[0] == pytest.approx(np.sort(sims)[::-1][:5], abs=1e-5)
        assert sims[hits.ordinals[0]] == pytest.approx(hits.scores[0], abs=1e-5)
        with pytest.raises(CollectionError, match="dim"):
            read_adapter(collection.path, dim + 1, n, None)
    finally:
        remove_adapter(collection.path)
    assert DenseRetriever(collection).adapter is None


def test_trainer_lowers_the_loss_and_guards_the_held_out_queries(collection: Collection) -> None:
    config = AdapterConfig(rank=4, epochs=8, patience=8, lr=5e-3, batch_size=16, negatives=5)
    result = train_adapter(collection, labelled_queries(collection), config)
    losses = [loss for _, loss, _ in result.history]
    assert len(losses) == 8 and losses[-1] < losses[0]
    assert result.heldout_queries == 12 and result.train_queries > 0
    assert result.kept == (result.best > result.baseline)
    folder = collection.path / "adapter"
    try:
        assert folder.is_dir() == result.kept
        if result.kept:
            args = json.loads((folder / ARGS_FILE).read_text())
            assert args["trainer"] == "twofold train adapter"
            assert "heldout_ndcg@10_adapted" in (folder / CARD_FILE).read_text()
    finally:
        remove_adapter(collection.path)


def test_the_same_seed_trains_the_same_adapter(collection: Collection) -> None:
    """Bit-for-bit: the same seed gives the same losses and held-out scores each epoch
    (split, pairs, init and batch order all seeded); another seed does not."""
    config = AdapterConfig(rank=4, epochs=3, patience=3, lr=5e-3, batch_size=16, negatives=5)
    queries = labelled_queries(collection)
    runs = [train_adapter(collection, queries, config, write=False) for _ in range(2)]
    assert runs[0].history == runs[1].history and len(runs[0].history) == 3
    other = train_adapter(collection, queries, replace(config, seed=1), write=False)
    assert other.history != runs[0].history
    assert not (collection.path / "adapter").exists()


def test_adapter_config_rejects_bad_values() -> None:
    with pytest.raises(InputError):
        AdapterConfig(variant="docs")
    with pytest.raises(InputError):
        AdapterConfig(rank=0)
