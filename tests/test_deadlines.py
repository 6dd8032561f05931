"""Deadlines that stop work and a queue that sheds load, on a real uvicorn server.

A ``Gate`` wraps the real BM25 retriever: it answers, then holds the pipeline thread
until the test opens it (or for a fixed pause), which makes "the budget ran out
between stages" and "every thread busy" happen on cue, not by timing.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from pydantic import ValidationError

from tests.test_api import free_port, sample_collection, wait_ready
from twofold.app.main import create_app
from twofold.app.routes_recommend import MAX_HISTORY_TEXT_CHARS, RecommendRequest
from twofold.app.settings import Settings
from twofold.app.state import AppState
from twofold.core.types import Query, Ranking
from twofold.search.retrievers import Retriever

__all__ = ["sample_collection"]  # the session fixture, shared with test_api


class Gate:
    """The real retriever, then (once ``armed``) a wait: until ``release`` is set, or
    ``pause_s``."""

    def __init__(self, inner: Retriever, pause_s: float | None = None) -> None:
        self.name = inner.name
        self.inner = inner
        self.pause_s = pause_s
        self.armed = False
        self.entered = threading.Event()
        self.release = threading.Event()

    def retrieve(self, query: Query, k: int) -> Ranking:
        ranking = self.inner.retrieve(query, k)
        if not self.armed:
            return ranking
        self.entered.set()
        if self.pause_s is not None:
            time.sleep(self.pause_s)
        else:
            self.release.wait(timeout=120)
        return ranking


@contextmanager
def serve(settings: Settings, pause_s: float | None = None) -> Iterator[tuple[str, Gate, AppState]]:
    """The app on 127.0.0.1 in a thread, its ``bm25`` pipeline behind a ``Gate``."""
    app = create_app(settings)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_config=None)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.config.port}"
    try:
        wait_ready(base)
        state: AppState = app.state.twofold
        pipeline = state.collection(None).pipeline("bm25")
        gate = Gate(pipeline.retrievers["bm25"], pause_s)
        pipeline.retrievers = {"bm25": gate}
        # one search first, so the JVM is attached to the pipeline thread before timing
        warm = {"query": "warm up", "k": 1, "pipeline": "bm25"}
        key = settings.api_key.get_secret_value() if settings.api_key else None
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        resp = httpx.post(f"{base}/v1/search", json=warm, headers=headers, timeout=120)
        assert resp.status_code == 200, resp.text
        gate.armed = True
        yield base, gate, state
    finally:
        gate_release = locals().get("gate")
        if isinstance(gate_release, Gate):
            gate_release.release.set()
        server.should_exit = True
        thread.join(timeout=30)


def metric(base: str, name: str) -> float:
    """The sum of a metric's samples (0 when it has none yet)."""
    text = httpx.get(f"{base}/metrics").text
    pattern = re.compile(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", re.M)
    return sum(float(v) for v in pattern.findall(text))


def wait_for(condition: object, limit: float = 60.0) -> None:
    until = time.monotonic() + limit
    while time.monotonic() < until:
        if callable(condition) and condition():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached")


def test_work_past_the_budget_stops_between_stages(sample_collection: Path) -> None:
    settings = Settings(collections=[sample_collection], search_threads=1, warmup=False)
    with serve(settings) as (base, gate, _):
        body = {"query": "heat transfer", "k": 5, "pipeline": "bm25", "budget_ms": 200}
        resp = httpx.post(f"{base}/v1/search", json=body, timeout=60)
        assert resp.status_code == 504, resp.text
        assert resp.json()["code"] == "time_budget_exceeded"
        assert gate.entered.wait(timeout=60)  # the retriever ran, and holds the thread
        gate.release.set()
        # the worker sees the deadline before its next stage and stops there
        wait_for(lambda: metric(base, "twofold_deadline_stops_total") == 1)
        stages = metric(base, "twofold_pipeline_stage_duration_seconds_count")
        assert stages == 1  # the warm-up's: the stopped search recorded none
        ok = httpx.post(f"{base}/v1/search", json={**body, "budget_ms": 60_000}, timeout=60)
        assert ok.status_code == 200 and len(ok.json()["hits"]) == 5


def test_a_full_queue_answers_429_with_retry_after(sample_collection: Path) -> None:
    settings = Settings(
        collections=[sample_collection], search_threads=1, max_queue=1, warmup=False
    )
    with serve(settings) as (base, gate, state):
        body = {"query": "heat transfer", "k": 3, "pipeline": "bm25"}
        answers: list[int] = []

        def send() -> None:
            answers.append(httpx.post(f"{base}/v1/search", json=body, timeout=60).status_code)

        first = threading.Thread(target=send)
        first.start()
        gate.entered.wait(timeout=60)  # the one pipeline thread is busy
        second = threading.Thread(target=send)
        second.start()
        wait_for(lambda: state.queue.held == 2)  # and the one queue place taken
        shed = httpx.post(f"{base}/v1/search", json=body, timeout=60)
        assert shed.status_code == 429, shed.text
        assert shed.headers["retry-after"] == "1"
        assert shed.json()["code"] == "overloaded" and "retry after" in shed.json()["detail"]
        gate.release.set()
        first.join(timeout=60)
        second.join(timeout=60)
        assert answers == [200, 200]
        assert metric(base, "twofold_shed_total") == 1


def test_a_batch_shares_one_budget(sample_collection: Path) -> None:
    # each search holds its thread 0.4 s; three of them cannot fit one 1 s budget
    settings = Settings(collections=[sample_collection], time_budget_ms=1000, warmup=False)
    with serve(settings, pause_s=0.4) as (base, _, _):
        one = {"query": "heat transfer", "k": 3, "pipeline": "bm25"}
        assert httpx.post(f"{base}/v1/search", json=one, timeout=60).status_code == 200
        resp = httpx.post(f"{base}/v1/search/batch", json={"searches": [one] * 3}, timeout=60)
        assert resp.status_code == 504, resp.text


def test_recommend_limits_the_total_text_of_a_history() -> None:
    fits = "w" * (MAX_HISTORY_TEXT_CHARS // 8)
    RecommendRequest.model_validate({"history": [{"text": fits}] * 8})
    long = {"text": "x" * 1000}
    with pytest.raises(ValidationError, match="at most 8000 are encoded"):
        RecommendRequest.model_validate({"history": [long] * 9})


def test_time_waiting_in_the_queue_counts_against_the_budget(sample_collection: Path) -> None:
    """The only pipeline thread is held by a gated search; a second search with a
    300 ms budget waits behind it for longer than that. Had its budget started at
    pickup it would run (and answer 200) once the gate opens; from arrival it is a 504
    and its search never starts (the queued work is cancelled: no stage recorded)."""
    settings = Settings(collections=[sample_collection], search_threads=1, warmup=False)
    with serve(settings) as (base, gate, _):
        slow = {"query": "heat transfer", "k": 3, "pipeline": "bm25"}
        first = threading.Thread(
            target=lambda: httpx.post(f"{base}/v1/search", json=slow, timeout=60)
        )
        first.start()
        assert gate.entered.wait(timeout=60)  # the one thread is busy
        stages_before = metric(base, "twofold_pipeline_stage_duration_seconds_count")
        answers: list[httpx.Response] = []
        second = threading.Thread(
            target=lambda: answers.append(
                httpx.post(f"{base}/v1/search", json={**slow, "budget_ms": 300}, timeout=60)
            )
        )
        second.start()
        time.sleep(0.6)  # past the second's budget while it waits in the queue
        gate.armed = False  # the second search, were it to run, would not be held
        gate.release.set()
        first.join(timeout=60)
        second.join(timeout=60)
        assert answers and answers[0].status_code == 504, answers
        assert answers[0].json()["code"] == "time_budget_exceeded"
        # only the first search's stage was recorded: the second never ran
        stages = metric(base, "twofold_pipeline_stage_duration_seconds_count")
        assert stages == stages_before + 1
