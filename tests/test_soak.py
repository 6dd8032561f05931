"""A short soak (``bench/soak.py``'s own driver): 500 mixed requests (searches over every
pipeline, batches, document reads, listings, recommendations, probes) at concurrency 8
against a real server on the collection with every retriever: 0 errors.
The full soak (20,000 requests at concurrency 16) is a documented command in
``bench/soak.py`` and RELIABILITY.md."""

from __future__ import annotations

import os
from pathlib import Path

from bench.soak import describe, mixed_requests, process_rss, soak
from tests.test_api import run_in_thread
from twofold.app.settings import Settings


def test_500_mixed_requests_at_concurrency_8_give_no_error(full_collection: Path) -> None:
    with run_in_thread(Settings(collections=[full_collection])) as base:
        pipelines, doc_ids, interests = describe(base, {})
        assert interests and {"bm25", "dense", "hybrid"} <= set(pipelines)
        requests = mixed_requests(500, pipelines, doc_ids, interests, seed=0)
        report = soak(base, requests, concurrency=8, rss=process_rss(os.getpid()))
    assert report["requests"] == 500
    assert report["errors"] == 0, report["statuses"]
    assert {"search", "batch", "doc", "recommend"} <= set(report["latency_ms"])
