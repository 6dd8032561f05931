"""Dense sub-index: vectors = encoder output in doc-store order, shard resume after a
crash, write/read round trip of each FAISS index type, exact subset search, the
retriever, and ``twofold search/eval --pipeline dense`` on a tiny random model."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.test_dense_model import WORDS, make_tiny_model
from twofold.app.cli import main
from twofold.core.errors import CollectionError, InputError
from twofold.core.types import Query
from twofold.indexing.build import build_collection, partial_dir
from twofold.indexing.buildctx import BuildContext, BuildOptions, DenseOptions
from twofold.indexing.collection import Collection
from twofold.indexing.dense.index import (
    DenseIndex,
    build_faiss,
    choose_index_type,
    index_params,
)
from twofold.indexing.docstore import DocStore
from twofold.indexing.encoding import Chunk, ChunkEncoder, EncoderRecipe, Executor, Outputs
from twofold.models.dense import DenseEncoder
from twofold.search.dense import DenseRetriever


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("dense-model"), hidden=16)


def write_corpus(path: Path, n: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    with path.open("w") as fh:
        for i in range(n):
            words = rng.choice(WORDS, size=int(rng.integers(2, 12)))
            fh.write(json.dumps({"_id": f"doc{i}", "title": "", "text": " ".join(words)}) + "\n")
    return path


def options(model: Path, index: str = "flat", **dense: Any) -> BuildOptions:
    return BuildOptions(
        retrievers=("dense",),
        dense=DenseOptions(model=str(model), index=index, **dense),
        batch_size=4,
        progress=False,
    )


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_vectors_are_encoder_output_in_doc_store_order(
    tmp_path: Path, tiny_model: Path, precision: str
) -> None:
    corpus = write_corpus(tmp_path / "c.jsonl", 11)
    opts = options(tiny_model, shard_size=4, precision=precision)
    manifest = build_collection(corpus, tmp_path / "col", opts)
    entry = manifest.sub_indexes["dense"]
    assert entry["precision"] == precision
    assert entry["index"] == {"type": "flat"} and entry["dim"] == 16 and entry["count"] == 11
    assert entry["shards"] == {"size": 4, "reused": 0, "written": 3}
    assert entry["encoder"]["name"] == str(tiny_model) and len(entry["encoder"]["sha256"]) == 64
    col = Collection(tmp_path / "col")
    index: DenseIndex = col.index("dense")
    texts = [d.contents for d in col.docs]
    want = DenseEncoder(str(tiny_model), precision=precision).encode_docs(texts)
    np.testing.assert_allclose(np.asarray(index.vectors), want, atol=1e-6)
    assert not (tmp_path / "col" / "dense" / "shards").exists()
    # exact search = a numpy matrix product
    q = index.encode_queries(["heat transfer", "swept wings"])
    hits = index.search_vectors(q, 5)
    brute = np.sort(q @ want.T, axis=1)[:, ::-1][:, :5]
    np.testing.assert_allclose(hits.scores, brute, atol=1e-5)


@dataclass
class CrashingContext(BuildContext):
    """A build context whose encoding dies at the chunk holding document ``crash_after``
    (after the shards before it were written)."""

    crash_after: int = 0

    def encoding(self) -> Executor:
        return CrashingExecutor(super().encoding(), self.crash_after)


class CrashingExecutor:
    def __init__(self, inner: Executor, crash_after: int) -> None:
        self.inner, self.crash_after = inner, crash_after
        self.kind, self.device, self.actors = inner.kind, inner.device, inner.actors

    def encode(
        self,
        docs: DocStore,
        recipe: EncoderRecipe,
        chunks: Sequence[Chunk],
        local: ChunkEncoder,
        desc: str,
    ) -> Iterator[tuple[Chunk, Outputs]]:
        for chunk, outputs in self.inner.encode(docs, recipe, chunks, local, desc):
            if chunk.start <= self.crash_after < chunk.stop:
                raise KeyboardInterrupt("simulated crash")
            yield chunk, outputs


def test_interrupted_build_resumes_after_last_complete_shard(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import twofold.indexing.build as build_module

    corpus = write_corpus(tmp_path / "c.jsonl", 10)
    opts = options(tiny_model, shard_size=3)
    out = tmp_path / "col"
    made: dict[str, BuildContext] = {}

    def crashing(docs: Any, options: BuildOptions, device: str, ex: Executor) -> BuildContext:
        made["ctx"] = CrashingContext(docs, options, device, ex, crash_after=7)
        return made["ctx"]

    monkeypatch.setattr(build_module, "BuildContext", crashing)
    with pytest.raises(KeyboardInterrupt):
        build_collection(corpus, out, opts)
    shards = partial_dir(out) / "dense" / "shards"
    assert sorted(p.name for p in shards.iterdir()) == ["00000.npy", "00001.npy"]
    # mark the finished shards: the resumed build must keep them, not recompute them
    kept = np.load(shards / "00000.npy")
    sentinel = np.full_like(kept, 0.25)
    np.save(shards / "00000.npy", sentinel)
    monkeypatch.undo()
    entry = build_collection(corpus, out, opts).sub_indexes["dense"]
    assert entry["shards"] == {"size": 3, "reused": 2, "written": 2}
    vectors = np.load(out / "dense" / "vectors.npy")
    np.testing.assert_array_equal(vectors[:3], sentinel)
    fresh = build_collection(corpus, tmp_path / "fresh", opts)
    assert fresh.sub_indexes["dense"]["shards"]["reused"] == 0
    np.testing.assert_allclose(vectors[3:], np.load(tmp_path / "fresh/dense/vectors.npy")[3:])


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivfpq"])
def test_index_round_trip_each_type(tmp_path: Path, tiny_model: Path, kind: str) -> None:
    corpus = write_corpus(tmp_path / "c.jsonl", 60, seed=1)
    entry = build_collection(corpus, tmp_path / kind, options(tiny_model, kind)).sub_indexes[
        "dense"
    ]
    assert entry["index"]["type"] == kind
    assert (tmp_path / kind / "dense" / "index.faiss").is_file() == (kind != "flat")
    col = Collection(tmp_path / kind)
    index: DenseIndex = col.index("dense")
    assert index.index.ntotal == 60
    vectors = np.asarray(index.vectors)
    exact = DenseIndex(tmp_path / kind / "dense", {**entry, "index": {"type": "flat"}})
    # every stored vector finds a document with its own score (duplicates may tie)
    hits, truth = index.search_vectors(vectors, 1), exact.search_vectors(vectors, 1)
    np.testing.assert_allclose(hits.scores[:, 0], truth.scores[:, 0], atol=1e-4)
    index.set_search_params(ef_search=16, nprobe=1, k_factor=2)  # each applies to its type
    assert index.search_vectors(vectors[:3], 4).ordinals.shape == (3, 4)
    retriever = DenseRetriever(col)
    ranking = retriever.retrieve(Query("q", "laminar boundary layer heat transfer"), 5)
    assert len(ranking) == 5 and all(h.doc_id.startswith("doc") for h in ranking)
    assert [h.score for h in ranking] == sorted((h.score for h in ranking), reverse=True)
    batch = retriever.retrieve_batch([Query("q", "laminar boundary layer heat transfer")], 5)
    assert batch[0].doc_ids() == ranking.doc_ids()


def test_ivfpq_write_read_same_results(tmp_path: Path) -> None:
    import faiss

    rng = np.random.default_rng(0)
    x = rng.standard_normal((3000, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    params = index_params("ivfpq", len(x), 32)
    assert params["pq_m"] == 4 and params["nbits"] == 4  # fewer than 256*39 points
    index = build_faiss(x, "ivfpq", params, gpu=False)
    faiss.write_index(index, str(tmp_path / "i.faiss"))
    again = faiss.read_index(str(tmp_path / "i.faiss"))
    d1, i1 = index.search(x[:50], 10)
    _, i2 = again.search(x[:50], 10)
    np.testing.assert_array_equal(i1, i2)
    # the refine stage returns exact inner products of the vectors it picks
    np.testing.assert_allclose(d1, np.einsum("qd,qkd->qk", x[:50], x[i1]), atol=1e-5)
    assert (i1[:, 0] == np.arange(50)).all()


def test_search_within_a_subset_is_exact(tmp_path: Path, tiny_model: Path) -> None:
    corpus = write_corpus(tmp_path / "c.jsonl", 30, seed=2)
    build_collection(corpus, tmp_path / "col", options(tiny_model))
    index: DenseIndex = Collection(tmp_path / "col").index("dense")
    q = index.encode_queries(["flat plate", "shells"])
    within = np.array([3, 7, 11, 19, 29])
    hits = index.search_vectors(q, 3, within=within)
    sims = q @ np.asarray(index.vectors)[within].T
    np.testing.assert_array_equal(hits.ordinals, within[np.argsort(-sims, axis=1)[:, :3]])
    assert index.search_vectors(q, 10, within=within).ordinals.shape == (2, 5)
    with pytest.raises(InputError):
        index.search_vectors(q, 3, within=np.array([30]))
    with pytest.raises(InputError):
        index.search_vectors(q[:, :4], 3)


def test_open_refuses_mismatches(tmp_path: Path, tiny_model: Path) -> None:
    corpus = write_corpus(tmp_path / "c.jsonl", 8)
    entry = build_collection(corpus, tmp_path / "col", options(tiny_model)).sub_indexes["dense"]
    path = tmp_path / "col" / "dense"
    with pytest.raises(CollectionError, match="format_version"):
        DenseIndex(path, {**entry, "format_version": 99})
    with pytest.raises(CollectionError, match=r"vectors\.npy"):
        DenseIndex(path, {**entry, "count": 9})


def test_choose_index_type_and_bad_params() -> None:
    assert choose_index_type("auto", 5_000) == "flat"
    assert choose_index_type("auto", 500_000) == "hnsw"
    assert choose_index_type("auto", 5_000_000) == "ivfpq"
    assert choose_index_type("hnsw", 10) == "hnsw"
    with pytest.raises(InputError, match="known"):
        choose_index_type("lsh", 10)
    with pytest.raises(InputError, match="cannot train"):
        index_params("ivfpq", 10, 16)
    with pytest.raises(InputError, match="divide"):
        index_params("ivfpq", 5000, 384, DenseOptions(pq_m=7))
    assert index_params("hnsw", 10, 8, DenseOptions(hnsw_m=8))["m"] == 8


def test_cli_search_and_eval_dense(
    tmp_path: Path, tiny_model: Path, tiny_corpus: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    col = tmp_path / "col"
    assert (
        main(
            [
                "index",
                "build",
                str(tiny_corpus),
                "--out",
                str(col),
                "--retrievers",
                "dense",
                "--dense-model",
                str(tiny_model),
                "--quiet",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["search", str(col), "boundary layer", "--pipeline", "dense", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert len(hits) == 5 and {h["doc_id"] for h in hits} == {"d1", "d2", "d3", "d4", "d5"}
    assert all("dense" in h["sources"] for h in hits)
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text(tiny_corpus.read_text())
    (beir / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "shells"}) + "\n")
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td2\t1\n")
    out = tmp_path / "eval.json"
    args = ["eval", str(col), "--dataset", str(beir), "--pipeline", "dense", "--out", str(out)]
    assert main([*args, "--quiet"]) == 0
    result = json.loads(out.read_text())["pipelines"]["dense"]
    assert result["queries"] == 1 and result["recall@100"] == 1.0
