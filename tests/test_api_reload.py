"""``POST /v1/collections/{name}/reload``: a rewritten manifest (what ``tune-fusion``
does) goes live without a restart, and requests keep being answered meanwhile."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from tests.test_api import run_in_thread
from twofold.app.settings import Settings
from twofold.indexing.build import build_collection
from twofold.indexing.buildctx import BuildOptions
from twofold.indexing.manifest import read_manifest, write_manifest
from twofold.search.fusion import FusionConfig

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def collection(tmp_path: Path) -> Path:
    out = tmp_path / "cranfield"
    build_collection(ROOT / "data" / "cranfield", out, BuildOptions(progress=False))
    return out


ADMIN = {"Authorization": "Bearer admin-key-0123456789"}


def test_reload_swaps_in_the_new_manifest_without_dropping_requests(collection: Path) -> None:
    settings = Settings(collections=[collection], admin_key="admin-key-0123456789")
    with run_in_thread(settings) as base:
        statuses: list[int] = []
        stop = threading.Event()
        answered = threading.Event()  # traffic is flowing before the reload starts

        def traffic() -> None:
            with httpx.Client(base_url=base, timeout=30) as client:
                while not stop.is_set():
                    resp = client.post("/v1/search", json={"query": "heat transfer", "k": 3})
                    statuses.append(resp.status_code)
                    answered.set()

        before = httpx.get(f"{base}/v1/collections").json()["collections"][0]
        (hybrid,) = [p for p in before["pipelines"] if p["name"] == "hybrid"]
        assert hybrid["fusion"] is None  # one retriever: nothing to fuse
        assert before["pipeline_config"] == {}

        manifest = read_manifest(collection)
        tuned = FusionConfig("convex", weights={"bm25": 1.0})
        entry = {"retrievers": ["bm25"], "fusion": tuned.to_dict()}
        write_manifest(collection, replace(manifest, pipelines={"hybrid": entry}))

        worker = threading.Thread(target=traffic)
        worker.start()
        try:
            assert answered.wait(60), "no search answered before the reload"
            resp = httpx.post(f"{base}/v1/collections/cranfield/reload", headers=ADMIN, timeout=60)
        finally:
            stop.set()
            worker.join(timeout=60)
        assert resp.status_code == 200, resp.text
        assert resp.json()["pipeline_config"] == {"hybrid": entry}
        after = httpx.get(f"{base}/v1/collections").json()["collections"][0]
        assert after["pipeline_config"] == {"hybrid": entry}
        assert statuses and set(statuses) == {200}
        expect = httpx.post(f"{base}/v1/collections/nope/reload", headers=ADMIN)
        assert expect.status_code == 404 and "unknown collection 'nope'" in expect.json()["detail"]
        search = httpx.post(f"{base}/v1/search", json={"query": "heat transfer"}).json()
        assert search["hits"] and search["pipeline"] == "hybrid"


def test_reload_needs_the_admin_key_and_runs_one_at_a_time(collection: Path) -> None:
    from tests.test_deadlines import serve

    search_key = {"Authorization": "Bearer search-key-0123456789"}
    settings = Settings(
        collections=[collection],
        api_key="search-key-0123456789",
        admin_key="admin-key-0123456789",
        warmup=False,
    )
    with serve(settings) as (base, _, state):
        url = f"{base}/v1/collections/cranfield/reload"
        for headers in ({}, search_key, {"Authorization": "Bearer wrong"}):
            resp = httpx.post(url, headers=headers, timeout=60)
            assert resp.status_code == 401, resp.text
        with state.reload_lock:  # a reload is running
            busy = httpx.post(url, headers=ADMIN, timeout=60)
        assert busy.status_code == 409 and busy.json()["code"] == "reload_in_progress"
        assert httpx.post(url, headers=ADMIN, timeout=60).status_code == 200


def test_without_an_admin_key_admin_routes_are_off(collection: Path) -> None:
    with run_in_thread(Settings(collections=[collection], warmup=False)) as base:
        resp = httpx.post(f"{base}/v1/collections/cranfield/reload", timeout=60)
        assert resp.status_code == 404, resp.text
