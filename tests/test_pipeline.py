"""The query pipeline: stage order, depths, degradation, and the named pipelines on a
real BM25 collection (Cranfield sample)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from twofold.core.errors import InputError, UnknownNameError
from twofold.core.types import Hit, Query, Ranking
from twofold.indexing.build import build_collection
from twofold.indexing.buildctx import BuildOptions
from twofold.indexing.collection import Collection
from twofold.indexing.manifest import read_manifest, write_manifest
from twofold.search.fusion import FusionConfig
from twofold.search.pipeline import (
    FUSED,
    PIPELINES,
    Depths,
    Pipeline,
    available_pipelines,
    build_pipeline,
    describe_pipeline,
)

ROOT = Path(__file__).resolve().parent.parent


class ListRetriever:
    """A retriever over a fixed list (the pipeline, not retrieval, is under test)."""

    def __init__(self, name: str, docs: Sequence[str]) -> None:
        self.name = name
        self.docs = list(docs)
        self.asked: list[int] = []

    def retrieve(self, query: Query, k: int) -> Ranking:
        self.asked.append(k)
        n = len(self.docs)
        return Ranking(
            query.query_id, tuple(Hit(d, float(n - i)) for i, d in enumerate(self.docs[:k]))
        )


class Broken:
    name = "broken"

    def retrieve(self, query: Query, k: int) -> Ranking:
        raise RuntimeError("index unavailable")


class ByLength:
    """Scores a text by its length; records what it was asked."""

    name = "by-length"

    def __init__(self, fail: bool = False, sleep: float = 0.0) -> None:
        self.fail, self.sleep = fail, sleep
        self.seen: list[str] = []

    def score(
        self, query: str, texts: Sequence[str], deadline: float | None = None
    ) -> Sequence[float]:
        if self.fail:
            raise RuntimeError("model crashed")
        time.sleep(self.sleep)
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError("reranker ran out of time")
        self.seen.extend(texts)
        return [float(len(t)) for t in texts]


TEXTS = {"a": "x", "b": "xxxx", "c": "xx", "d": "xxx", "e": "xxxxx"}


def test_single_retriever_passes_through_with_provenance() -> None:
    r = ListRetriever("one", "abc")
    p = Pipeline("p", {"one": r}, depths=Depths(retrieve=5))
    out = p.run(Query("q", "t"), k=2)
    assert out.ranking.doc_ids() == ["a", "b"]
    assert out.ranking.hits[1].sources == {"one": (2, 2.0)}
    assert r.asked == [2]  # a lone retriever without a reranker fetches only k
    assert set(out.timings_ms) == {"retrieve.one"}
    assert out.degraded == ()


def test_k_above_depth_asks_for_k() -> None:
    x, y = ListRetriever("x", "abcde"), ListRetriever("y", "edcba")
    Pipeline("p", {"x": x, "y": y}, depths=Depths(retrieve=2)).search(Query("q", "t"), k=4)
    assert x.asked == y.asked == [4]
    Pipeline("p", {"x": x, "y": y}, depths=Depths(retrieve=5)).search(Query("q", "t"), k=4)
    assert x.asked == [4, 5]  # fusion fetches the retrieve depth


def test_fusion_then_rerank_then_tail() -> None:
    x, y = ListRetriever("x", "abcd"), ListRetriever("y", "bea")
    reranker = ByLength()
    p = Pipeline(
        "p",
        {"x": x, "y": y},
        FusionConfig("rrf"),
        reranker,
        Depths(retrieve=10, rerank=3),
        doc_text=TEXTS.__getitem__,
    )
    out = p.run(Query("q", "t"), k=10)
    fused = FusionConfig("rrf").fuse(
        "q", {"x": x.retrieve(Query("q", ""), 10), "y": y.retrieve(Query("q", ""), 10)}, 10
    )
    head = fused.doc_ids()[:3]
    assert reranker.seen == [TEXTS[d] for d in head]  # only the top `rerank` depth
    ids = out.ranking.doc_ids()
    assert ids[:3] == sorted(head, key=lambda d: -len(TEXTS[d]))
    assert ids[3:] == fused.doc_ids()[3:]  # the tail keeps its fused order below
    assert sorted(ids) == sorted(fused.doc_ids())
    top = out.ranking.hits[0]
    assert top.score == float(len(TEXTS[top.doc_id]))
    assert FUSED in top.sources and {"x", "y"} & set(top.sources)
    assert set(out.timings_ms) == {"retrieve.x", "retrieve.y", "fuse", "rerank"}


@pytest.mark.parametrize(
    ("reranker", "deadline", "reason"),
    [
        (ByLength(fail=True), None, "model crashed"),
        (ByLength(sleep=0.01), 0.0, "budget"),
        (ByLength(sleep=0.05), 0.02, "out of time"),
    ],
)
def test_reranker_failure_degrades_to_the_fused_ranking(
    reranker: ByLength, deadline: float | None, reason: str
) -> None:
    x, y = ListRetriever("x", "abcd"), ListRetriever("y", "bea")
    p = Pipeline("p", {"x": x, "y": y}, reranker=reranker, doc_text=TEXTS.__getitem__)
    plain = Pipeline("p", {"x": x, "y": y}).run(Query("q", "t"), 10)
    out = p.run(Query("q", "t"), 10, None if deadline is None else time.monotonic() + deadline)
    assert out.ranking == plain.ranking
    assert len(out.degraded) == 1 and reason in out.degraded[0]


def test_a_failing_retriever_is_left_out_of_the_fusion() -> None:
    x = ListRetriever("x", "abc")
    out = Pipeline("p", {"x": x, "broken": Broken()}).run(Query("q", "t"), 10)
    assert out.ranking.doc_ids() == ["a", "b", "c"]
    assert out.degraded == ("retriever broken failed: index unavailable",)
    with pytest.raises(RuntimeError):
        Pipeline("p", {"broken": Broken()}).run(Query("q", "t"), 10)


# ---- named pipelines on a real BM25 collection ---------------------------------------


@pytest.fixture(scope="module")
def bm25_collection(tmp_path_factory: pytest.TempPathFactory) -> Collection:
    out = tmp_path_factory.mktemp("pipeline") / "cranfield"
    build_collection(ROOT / "data" / "cranfield", out, BuildOptions(progress=False))
    return Collection(out)


def test_named_pipelines_on_a_bm25_collection(bm25_collection: Collection) -> None:
    names = available_pipelines(bm25_collection)
    assert names == ["bm25", "hybrid", "hybrid-rrf"]
    assert "hybrid+rerank" in available_pipelines(bm25_collection, with_reranker=True)
    query = Query("q1", "boundary layer heat transfer")
    bm25 = build_pipeline(bm25_collection, "bm25").search(query, 10)
    assert len(bm25) == 10
    # hybrid over a one-retriever collection is that retriever
    assert build_pipeline(bm25_collection, "hybrid").search(query, 10) == bm25
    assert describe_pipeline(bm25_collection, "hybrid")["retrievers"] == ["bm25"]


def test_pipeline_errors_name_what_to_do(bm25_collection: Collection) -> None:
    with pytest.raises(UnknownNameError, match=r"known: .*hybrid"):
        build_pipeline(bm25_collection, "hybird")
    with pytest.raises(InputError, match=r"lacks .*available pipelines: bm25, hybrid"):
        build_pipeline(bm25_collection, "dense")
    with pytest.raises(InputError, match="--reranker DIR"):
        build_pipeline(bm25_collection, "hybrid+rerank")
    assert set(PIPELINES.names()) >= {"bm25", "sparse", "splade", "dense", "hybrid"}


def test_tuned_fusion_in_the_manifest_is_used(tmp_path: Path, bm25_collection: Collection) -> None:
    manifest = read_manifest(bm25_collection.path)
    tuned = FusionConfig("convex", weights={"bm25": 1.0})
    entry = {"retrievers": ["bm25"], "fusion": tuned.to_dict()}
    write_manifest(bm25_collection.path, replace(manifest, pipelines={"hybrid": entry}))
    try:
        reopened = Collection(bm25_collection.path)
        assert build_pipeline(reopened, "hybrid").fuser == tuned
        assert build_pipeline(reopened, "hybrid-rrf").fuser == FusionConfig("rrf")
    finally:
        write_manifest(bm25_collection.path, manifest)
