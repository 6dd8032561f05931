"""Retrievers of a pipeline run concurrently, in at most one lane per core, dearest
first (``twofold.search.lanes``); a zero-weight retriever is not run.

Retrievers here are deterministic in-memory lists: the pipeline's scheduling, not the
retrieval, is under test. Concurrency is shown by a barrier the retrievers must reach
together (a sequential loop would break it), not by timings."""

from __future__ import annotations

import threading

from twofold.core.types import Hit, Query, Ranking
from twofold.search.fusion import FusionConfig
from twofold.search.lanes import Lanes, plan
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
        # three lanes: the first on the calling thread, the others on the pool
        outcome = Pipeline("p", retrievers, fuser=fusion, lanes=Lanes(width=3)).run(q, k=12)
        assert not outcome.degraded
        threads = [r.threads[0] for r in retrievers.values()]
        assert len(set(threads)) == 3 and threading.current_thread().name in threads
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


def test_plan_puts_the_dearest_alone_and_balances_the_rest() -> None:
    # the 2-core hybrid: dense alone, splade then bm25 then sparse beside it
    costs = {"bm25": 2.0, "dense": 10.0, "sparse": 1.0, "splade": 7.0}
    assert plan(costs, 2) == [["dense"], ["splade", "bm25", "sparse"]]
    assert plan(costs, 1) == [["dense", "splade", "bm25", "sparse"]]
    assert sorted(map(len, plan(costs, 8))) == [1, 1, 1, 1]  # enough cores: all at once
    # unknown costs get lanes of their own before anything measured is placed
    assert plan({"a": None, "b": None, "c": 5.0}, 2) == [["a", "c"], ["b"]]
    assert plan({}, 2) == []


def test_lanes_learn_costs_and_keep_every_result_and_error() -> None:
    lanes = Lanes(width=2)
    seen: list[str] = []

    def task(name: str, ms: float) -> tuple[str, float]:
        seen.append(threading.current_thread().name)
        if name == "bad":
            raise ValueError("no")
        return name, ms

    tasks = {n: (lambda n=n, ms=ms: task(n, ms)) for n, ms in (("a", 9.0), ("b", 1.0))}
    tasks["bad"] = lambda: task("bad", 0.0)
    from twofold.search.pipeline import _retrieve_pool

    futures = lanes.run(tasks, _retrieve_pool(), cost_of=lambda out: out[1])
    assert list(futures) == ["a", "b", "bad"]
    assert futures["a"].result() == ("a", 9.0) and futures["b"].result() == ("b", 1.0)
    assert isinstance(futures["bad"].exception(), ValueError)
    assert lanes.costs(["a", "b", "bad"]) == {"a": 9.0, "b": 1.0, "bad": None}
    lanes.observe("a", 4.0)  # a moving average: 0.8 * 9 + 0.2 * 4
    assert lanes.costs(["a"])["a"] == 8.0
    assert len(seen) == 3
    assert lanes.run({}, _retrieve_pool()) == {}


def test_many_threads_share_one_pipelines_lanes() -> None:
    """Eight threads run the same three-retriever pipeline at once, 25 queries each, with
    two lanes: every result equals the sequential fusion, and the learned costs stay
    one finite number per retriever."""
    from concurrent.futures import ThreadPoolExecutor

    retrievers = {n: ListRetriever(n, d) for n, d in lists().items()}
    fusion = FusionConfig("convex")
    pipe = Pipeline("p", retrievers, fuser=fusion, lanes=Lanes(width=2))
    q = Query("q1", "anything")
    sequential = {n: ListRetriever(n, d).retrieve(q, 100) for n, d in lists().items()}
    expected = fusion.fuse("q1", sequential, 100).top(10)

    def many(_: int) -> list[Ranking]:
        return [pipe.run(q, k=10).ranking for _ in range(25)]

    with ThreadPoolExecutor(8) as pool:
        results = [r for batch in pool.map(many, range(8)) for r in batch]
    assert len(results) == 200 and all(r == expected for r in results)
    costs = pipe.lanes.costs(list(retrievers))
    assert all(c is not None and c >= 0 for c in costs.values())
