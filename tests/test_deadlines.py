"""Deadlines that stop work and a queue that sheds load, on a real uvicorn server.

A ``Gate`` wraps the real BM25 retriever: it answers, then holds the pipeline thread
until the test opens it (or for a fixed pause), which makes "the budget ran out
between stages" and "every thread busy" happen on cue, not by timing.
"""

from __future__ import annotations

import itertools
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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
def serving(settings: Settings) -> Iterator[tuple[str, AppState]]:
    """The app on 127.0.0.1 in a thread, ready."""
    app = create_app(settings)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_config=None)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.config.port}"
    try:
        wait_ready(base)
        yield base, app.state.twofold
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@contextmanager
def serve(settings: Settings, pause_s: float | None = None) -> Iterator[tuple[str, Gate, AppState]]:
    """The app on 127.0.0.1 in a thread, its ``bm25`` pipeline behind a ``Gate``."""
    with serving(settings) as (base, state):
        pipeline = state.collection(None).pipeline("bm25")
        gate = Gate(pipeline.retrievers["bm25"], pause_s)
        pipeline.retrievers = {"bm25": gate}
        try:
            # one search first, so the JVM is attached to the pipeline thread before timing
            warm = {"query": "warm up", "k": 1, "pipeline": "bm25"}
            key = settings.api_key.get_secret_value() if settings.api_key else None
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            resp = httpx.post(f"{base}/v1/search", json=warm, headers=headers, timeout=120)
            assert resp.status_code == 200, resp.text
            gate.armed = True
            yield base, gate, state
        finally:
            gate.release.set()


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


def stops(base: str, stage: str) -> float:
    """How many requests stopped before ``stage`` (``twofold_deadline_stops_total``)."""
    text = httpx.get(f"{base}/metrics").text
    pattern = re.compile(
        rf'^twofold_deadline_stops_total{{stage="{re.escape(stage)}"}} (\S+)$', re.M
    )
    return sum(float(v) for v in pattern.findall(text))


class Hold:
    """Wraps a real callable: it runs, then (once ``armed``) holds its thread until
    ``release`` is set: the test sets it once its request has had its 504, so the
    deadline has passed when the work goes on to its next check."""

    def __init__(self, inner: Callable[..., Any]) -> None:
        self.inner = inner
        self.armed = False
        self.release = threading.Event()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        out = self.inner(*args, **kwargs)
        if self.armed:
            self.release.wait(timeout=120)
        return out


def stopped_before(
    base: str, hold: Hold, path: str, body: dict[str, Any], stage: str, budget_ms: bool = True
) -> None:
    """Run ``body`` once with room (the warm-up: models loaded, JVM attached), then under
    a 1.5 s budget (``budget_ms``, else the server's) with ``hold`` armed: the answer is
    a 504, and the work, once released, stops at the check before ``stage`` (and at no
    other)."""
    room, tight = ({"budget_ms": 600_000}, {"budget_ms": 1500}) if budget_ms else ({}, {})
    warm = httpx.post(f"{base}{path}", json={**body, **room}, timeout=120)
    assert warm.status_code == 200, warm.text
    hold.armed = True
    try:
        resp = httpx.post(f"{base}{path}", json={**body, **tight}, timeout=60)
        assert resp.status_code == 504, resp.text
    finally:
        hold.release.set()
    wait_for(lambda: metric(base, "twofold_deadline_stops_total") >= 1)
    time.sleep(0.2)  # a second, wrong stop would show up by now
    assert stops(base, stage) == 1, httpx.get(f"{base}/metrics").text
    assert metric(base, "twofold_deadline_stops_total") == 1


def hold_pipeline(monkeypatch: pytest.MonkeyPatch, state: AppState, name: str) -> Hold:
    pipeline = state.collection(None).pipeline(name)
    hold = Hold(pipeline.run)
    monkeypatch.setattr(pipeline, "run", hold)
    return hold


@pytest.mark.parametrize(
    ("pipeline", "extra", "stage"),
    [
        ("sparse", {"explain": True, "fields": ["score"]}, "explain"),
        ("dense", {"diversify": True}, "diversify"),
    ],
)
def test_explain_and_diversify_are_inside_the_budget(
    full_collection: Path,
    monkeypatch: pytest.MonkeyPatch,
    pipeline: str,
    extra: dict[str, Any],
    stage: str,
) -> None:
    settings = Settings(collections=[full_collection], warmup=False)
    with serving(settings) as (base, state):
        hold = hold_pipeline(monkeypatch, state, pipeline)
        body = {"query": "heat transfer", "k": 3, "pipeline": pipeline, **extra}
        stopped_before(base, hold, "/v1/search", body, stage)


def test_document_reads_are_inside_the_budget(
    full_collection: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(collections=[full_collection], warmup=False)
    with serving(settings) as (base, state):
        docs = state.collection(None).collection.docs
        hold = Hold(docs.get)  # the first hit's read holds; the second's check stops
        monkeypatch.setattr(docs, "get", hold)
        body = {"query": "heat transfer", "k": 3, "pipeline": "bm25", "fields": ["title"]}
        stopped_before(base, hold, "/v1/search", body, "document reads and snippets")


def test_recommend_checks_its_budget_before_each_stage(
    full_collection: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # /v1/recommend has no budget_ms: the server's budget
    settings = Settings(collections=[full_collection], time_budget_ms=1500, warmup=False)
    with serving(settings) as (base, state):
        cs = state.collection(None)
        assert cs.interests is not None
        history = [{"doc_id": doc.doc_id} for doc in itertools.islice(cs.collection.docs, 3)]
        hold = Hold(cs.interests.recommend)  # recommend ran: the document reads stop
        monkeypatch.setattr(cs.interests, "recommend", hold)
        body = {"history": history, "k": 3}
        stopped_before(base, hold, "/v1/recommend", body, "document reads", budget_ms=False)
    with serving(settings) as (base, state):
        # held before the recommendation itself (taking the lease, on the pipeline thread)
        hold = Hold(state.lease)
        monkeypatch.setattr(state, "lease", hold)
        stopped_before(base, hold, "/v1/recommend", body, "recommend", budget_ms=False)
