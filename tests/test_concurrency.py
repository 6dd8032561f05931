"""The query path under concurrency: 8 threads of hybrid+rerank requests against a real
server over a collection with every retriever give exactly the rankings that one-at-a-time
calls give, with nothing ``degraded``; and torch's thread count is never switched per
query."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import torch

from tests.test_api import run_in_thread
from tests.test_reranker import WORDS, save_tiny_cross_encoder
from twofold.app.schemas import HIT_FIELDS
from twofold.app.settings import Settings
from twofold.models.reranker import CrossEncoder, RerankerConfig
from twofold.models.sparse import MLMSparseEncoder

QUERIES = [
    "boundary layer heat transfer",
    "supersonic flow over a flat plate",
    "buckling of thin cylindrical shells under pressure",
    "lift and drag of swept wings",
    "turbulent skin friction measurements",
    "shock wave boundary layer interaction",
    "similarity solutions of the laminar boundary layer equations",
    "hypersonic viscous flow near the leading edge",
]
THREADS = 8


def run_together(worker: Callable[[int], None], n: int = THREADS) -> None:
    """``worker(seed)`` for seeds 0..n-1, each on its own thread, all released at once by
    a barrier; fails with the first errors any thread raised."""
    errors: list[BaseException] = []
    start = threading.Barrier(n)

    def run(seed: int) -> None:
        try:
            start.wait()
            worker(seed)
        except BaseException as exc:  # reported below, with the thread's seed
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]


def ranking(resp: httpx.Response) -> list[tuple[str, float]]:
    assert resp.status_code == 200, resp.text
    data = resp.json()
    assert data["degraded"] is False, data["degraded_reasons"]
    return [(h["doc_id"], h["score"]) for h in data["hits"]]


def test_concurrent_hybrid_rerank_equals_sequential(full_collection: Path, tmp_path: Path) -> None:
    reranker = save_tiny_cross_encoder(tmp_path / "ce")
    settings = Settings(
        collections=[full_collection],
        reranker=str(reranker),
        reranker_max_length=64,  # the tiny model's positions: every pair is truncated
        search_threads=THREADS,
        time_budget_ms=600_000,
    )
    with run_in_thread(settings) as base, httpx.Client(base_url=base, timeout=600) as client:
        pipelines = ("hybrid+rerank", "hybrid")

        def ask(query: str, pipeline: str) -> list[tuple[str, float]]:
            body = {"query": query, "k": 20, "pipeline": pipeline}
            return ranking(client.post("/v1/search", json=body))

        expected = {(q, p): ask(q, p) for q in QUERIES for p in pipelines}
        assert len({tuple(expected[q, "hybrid+rerank"]) for q in QUERIES}) == len(QUERIES)
        got: dict[tuple[str, str, int], list[tuple[str, float]]] = {}

        def worker(seed: int) -> None:
            order = [(q, p) for q in QUERIES for p in pipelines]
            random.Random(seed).shuffle(order)
            with httpx.Client(base_url=base, timeout=600) as own:
                for q, p in order:
                    body = {"query": q, "k": 20, "pipeline": p}
                    got[q, p, seed] = ranking(own.post("/v1/search", json=body))

        run_together(worker)
        assert len(got) == THREADS * len(expected)
        for (q, p, _), hits in got.items():
            assert hits == expected[q, p], (q, p)


def test_pages_and_fields_from_several_threads_equal_one_ranking(full_collection: Path) -> None:
    """Clients page through the hybrid ranking (``offset``) with different ``fields``,
    from several threads at once: every page is the matching slice of the one-shot
    ranking, with exactly the fields it asked for."""
    settings = Settings(
        collections=[full_collection], search_threads=THREADS, time_budget_ms=600_000
    )
    shapes: list[list[str] | None] = [None, ["score"], ["score", "title", "snippet"], []]
    with run_in_thread(settings) as base, httpx.Client(base_url=base, timeout=600) as client:

        def page(own: httpx.Client, query: str, offset: int, fields: list[str] | None) -> dict:
            body = {"query": query, "k": 5, "offset": offset, "pipeline": "hybrid"}
            resp = own.post(
                "/v1/search", json=body | ({} if fields is None else {"fields": fields})
            )
            assert resp.status_code == 200, resp.text
            data: dict = resp.json()
            assert data["degraded"] is False and data["offset"] == offset
            return data

        whole = {}  # the one-shot ranking to rank 20, asked once per query
        for q in QUERIES:
            body = {"query": q, "k": 20, "pipeline": "hybrid", "fields": ["score"]}
            whole[q] = client.post("/v1/search", json=body).json()["hits"]
            assert len(whole[q]) == 20
        seen: list[tuple[str, int, int]] = []

        def worker(seed: int) -> None:
            rng = random.Random(seed)
            jobs = [(q, off) for q in QUERIES for off in (0, 5, 10, 15)]
            rng.shuffle(jobs)
            with httpx.Client(base_url=base, timeout=600) as own:
                for q, off in jobs:
                    fields = shapes[rng.randrange(len(shapes))]
                    hits = page(own, q, off, fields)["hits"]
                    want = whole[q][off : off + 5]
                    assert [(h["rank"], h["doc_id"]) for h in hits] == [
                        (h["rank"], h["doc_id"]) for h in want
                    ], (q, off)
                    asked = set(HIT_FIELDS if fields is None else fields) | {"rank", "doc_id"}
                    assert all(set(h) == asked for h in hits), (fields, hits[0])
                    if fields is None or "score" in fields:
                        assert [h["score"] for h in hits] == [h["score"] for h in want]
                    seen.append((q, off, seed))

        run_together(worker)
        assert len(seen) == THREADS * len(QUERIES) * 4


def test_cross_encoder_is_safe_from_several_threads(tmp_path: Path) -> None:
    """One shared CrossEncoder, 8 threads: each thread's scores equal the sequential ones
    (a shared tokenizer flipped between truncation settings and failed or mis-cut)."""
    encoder = CrossEncoder(RerankerConfig(str(save_tiny_cross_encoder(tmp_path / "ce")), 4, 64))
    rng = random.Random(0)
    cases = [
        (
            " ".join(rng.choices(WORDS, k=rng.randint(1, 40))),
            [" ".join(rng.choices(WORDS, k=rng.randint(1, 80))) for _ in range(12)],
        )
        for _ in range(12)
    ]
    expected = [encoder.score(q, texts) for q, texts in cases]
    failures: list[str] = []

    def worker() -> None:
        for _ in range(2):
            for (q, texts), want in zip(cases, expected, strict=True):
                try:
                    if encoder.score(q, texts) != want:
                        failures.append(f"different scores for {q!r}")
                except Exception as exc:
                    failures.append(repr(exc))

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


@pytest.fixture(scope="module")
def splade_tiny() -> MLMSparseEncoder:
    return MLMSparseEncoder("splade-tiny")


def test_query_encoding_leaves_torch_threads_alone(splade_tiny: MLMSparseEncoder) -> None:
    """The thread count a SPLADE query runs with is the process's, and stays so. (The
    hook sees the eager calls: the first query also traces the encoder and checks the
    trace, in this thread, with the same count.)"""
    before = torch.get_num_threads()
    seen: list[int] = []
    handle = splade_tiny.model.base_model.register_forward_pre_hook(
        lambda *_: seen.append(torch.get_num_threads())
    )
    try:
        splade_tiny.encode_queries(["boundary layer heat transfer"])
    finally:
        handle.remove()
    assert seen and set(seen) == {before}
    assert torch.get_num_threads() == before
