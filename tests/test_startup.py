"""Start-up probes on a real uvicorn server: while collections load, ``/healthz`` is 200
and ``/readyz`` is 503 ``loading`` (other routes 503 with ``Retry-After``); once loaded,
``/readyz`` is 200. A load that fails turns both probes to 503 ``failed``.

The loader is the service's own ``load_state``, held back by an event until the probes
have been read, so that "while loading" is a state the test controls, not a race."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn

from tests.conftest import TINY_DOCS
from tests.test_api import free_port
from twofold.app.main import create_app
from twofold.app.metrics import Metrics
from twofold.app.settings import Settings
from twofold.app.state import AppState, load_state
from twofold.indexing.build import build_collection
from twofold.indexing.buildctx import BuildOptions


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> Path:
    corpus = tmp_path_factory.mktemp("startup") / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in TINY_DOCS))
    out = corpus.parent / "tiny"
    build_collection(corpus, out, BuildOptions(progress=False))
    return out


class Server:
    def __init__(self, settings: Settings, loader: object) -> None:
        self.port = free_port()
        app = create_app(settings, loader)  # type: ignore[arg-type]
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_config=None)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.base = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> str:
        self.thread.start()
        until = time.monotonic() + 60
        while not self.server.started:  # listening (uvicorn's own flag)
            if time.monotonic() > until or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start listening")
            time.sleep(0.05)
        return self.base

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)


def test_probes_answer_while_collections_load(collection: Path) -> None:
    release, entered = threading.Event(), threading.Event()

    def held_back(settings: Settings, metrics: Metrics) -> AppState:
        entered.set()
        assert release.wait(120)
        return load_state(settings, metrics)

    with Server(Settings(collections=[collection], warmup=False), held_back) as base:
        assert entered.wait(60)
        health = httpx.get(f"{base}/healthz", timeout=10)
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        ready = httpx.get(f"{base}/readyz", timeout=10)
        assert ready.status_code == 503 and ready.json() == {"status": "loading"}
        search = httpx.post(f"{base}/v1/search", json={"query": "heat"}, timeout=10)
        assert search.status_code == 503 and search.json()["code"] == "not_ready"
        assert search.headers["Retry-After"] == "1"
        release.set()
        until = time.monotonic() + 120
        while (ready := httpx.get(f"{base}/readyz", timeout=10)).status_code != 200:
            assert ready.json() == {"status": "loading"}
            assert time.monotonic() < until, "never became ready"
            time.sleep(0.1)
        assert ready.json() == {"status": "ready", "collections": ["tiny"]}
        hits = httpx.post(f"{base}/v1/search", json={"query": "heat transfer"}, timeout=30)
        assert hits.status_code == 200 and hits.json()["hits"][0]["doc_id"] == "d1"


def test_a_failed_load_turns_both_probes_to_failed(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with Server(Settings(collections=[missing], warmup=False), load_state) as base:
        until = time.monotonic() + 60
        while (ready := httpx.get(f"{base}/readyz", timeout=10)).json()["status"] == "loading":
            assert time.monotonic() < until
            time.sleep(0.1)
        assert ready.status_code == 503 and ready.json()["status"] == "failed"
        assert "does not exist" in ready.json()["detail"]
        health = httpx.get(f"{base}/healthz", timeout=10)
        assert health.status_code == 503 and health.json()["status"] == "failed"
        search = httpx.post(f"{base}/v1/search", json={"query": "heat"}, timeout=10)
        assert search.status_code == 503 and "failed to load" in search.json()["detail"]
