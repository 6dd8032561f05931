"""Retrievers of a pipeline run concurrently; a zero-weight retriever is not run.

Retrievers here are deterministic in-memory lists: the pipeline's scheduling, not the
retrieval, is under test. Concurrency is shown by a barrier both retrievers must reach
together (a sequential loop would break it), not by timings."""

from __future__ import annotations

import threading

from twofold.core.types import Hit, Query, Ranking
from twofold.search.fusion import FusionConfig
from twofold.search.pipeline import Pipeline

from .test_pipeline import ListRetriever


class Meeting(ListRetriever):
    """Waits at ``barrier`` (with every other Meeting of the pipeline) before answering."""

    def __init__(self, name: str, docs: list[str], barrier: threading.Barrier) -> None:
        super().__init__(name, docs)
        self.barrier = barrier
        self.threads: list[str] = []

    def retrieve(self, query: Query, k: int) -> Ranking:
        self.barrier.wait()  # BrokenBarrierError after the timeout if run one by one
        self.threads.append(threading.current_thread().name)
        return super().retrieve(query, k)


def lists() -> dict[str, list[str]]:
    return {
        "a": [f"d{i}" for i in range(0, 30)],
        "b": [f"d{i}" for i in range(15, 45, 2)],
        "c": [f"d{i}" for i in range(40, 0, -3)],
    }


def test_parallel_equals_sequential() -> None:
    q = Query("q1", "anything")
    for fusion in (FusionConfig("rrf"), FusionConfig("score", weights={"a": 0.5, "c": 2.0})):
        barrier = threading.Barrier(3, timeout=10)
        retrievers = {n: Meeting(n, d, barrier) for n, d in lists().items()}
        outcome = Pipeline("p", retrievers, fuser=fusion).run(q, k=12)
        assert not outcome.degraded
        assert all(r.threads[0].startswith("twofold-retrieve") for r in retrievers.values())
        sequential = {n: ListRetriever(n, d).retrieve(q, 100) for n, d in lists().items()}
        expected = fusion.fuse("q1", sequential, 100).top(12)
        assert outcome.ranking == expected
        assert set(outcome.timings_ms) >= {"retrieve.a", "retrieve.b", "retrieve.c", "fuse"}


def test_zero_weight_retriever_is_not_run() -> None:
    retrievers = {n: ListRetriever(n, d) for n, d in lists().items()}
    fusion = FusionConfig("convex", weights={"a": 1.0, "b": 0.0, "c": 1.0})
    outcome = Pipeline("p", retrievers, fuser=fusion).run(Query("q", "x"), k=10)
    assert retrievers["b"].asked == [] and retrievers["a"].asked == [100]
    assert "retrieve.b" not in outcome.timings_ms
    sources = {name for hit in outcome.ranking.hits for name in hit.sources}
    assert "b" not in sources and sources <= {"a", "c"}
    assert isinstance(outcome.ranking.hits[0], Hit)
