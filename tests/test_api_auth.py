"""Auth on a real server: every ``/v1`` route (read from the app's own OpenAPI schema, so
a new route is covered when it is added) answers 401 without the key and with a wrong
one; admin routes answer 401 to the search key; and neither key ever appears in the
log (captured at DEBUG, every logger), the metrics or an error body."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from tests.test_api import run_in_thread
from twofold.app.main import create_app
from twofold.app.settings import Settings
from twofold.indexing.build import build_collection
from twofold.indexing.buildctx import BuildOptions

SEARCH_KEY = "search-key-7f3c9a1e5b"
ADMIN_KEY = "admin-key-2d8e4b6f0c"


@pytest.fixture
def settings(tiny_corpus: Path, tmp_path: Path) -> Settings:
    out = tmp_path / "tiny"
    build_collection(tiny_corpus, out, BuildOptions(progress=False))
    return Settings(collections=[out], api_key=SEARCH_KEY, admin_key=ADMIN_KEY, warmup=False)


def v1_routes(settings: Settings) -> list[tuple[str, str, bool]]:
    """(method, concrete path, is_admin) for every /v1 route of the app's OpenAPI schema
    (every route is in it)."""
    out = []
    for path, ops in create_app(settings).openapi()["paths"].items():
        if not path.startswith("/v1"):
            continue
        concrete = path.replace("{name}", "tiny").replace("{doc_id}", "d1")
        for method, op in ops.items():
            out.append((method.upper(), concrete, "admin" in op.get("tags", [])))
    return out


def call(base: str, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
    bodies = {
        "/v1/search": {"query": "heat"},
        "/v1/search/batch": {"searches": [{"query": "heat"}]},
        "/v1/recommend": {"history": ["d1"]},
    }
    return httpx.request(
        method, f"{base}{path}", json=bodies.get(path), headers=headers, timeout=60
    )


def test_every_v1_route_needs_its_key_and_no_key_is_logged(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    routes = v1_routes(settings)
    paths = {p for _, p, _ in routes}
    assert {
        "/v1/search",
        "/v1/search/batch",
        "/v1/recommend",
        "/v1/collections",
        "/v1/docs/d1",
        "/v1/collections/tiny/reload",
    } <= paths
    assert any(admin for *_, admin in routes)
    search_auth = {"Authorization": f"Bearer {SEARCH_KEY}"}
    admin_auth = {"Authorization": f"Bearer {ADMIN_KEY}"}
    bodies: list[str] = []
    with caplog.at_level(logging.DEBUG), run_in_thread(settings) as base:
        for method, path, admin in routes:
            refused = [{}, {"Authorization": f"Bearer {SEARCH_KEY}x"}, {"X-Api-Key": SEARCH_KEY}]
            if admin:
                refused += [search_auth]  # the search key does not open admin routes
            else:
                refused += [admin_auth]  # nor the admin key search routes
            for headers in refused:
                resp = call(base, method, path, headers)
                assert resp.status_code == 401, (method, path, headers, resp.text)
                assert resp.headers["www-authenticate"] == "Bearer"
                bodies.append(resp.text)
            allowed = call(base, method, path, admin_auth if admin else search_auth)
            assert allowed.status_code != 401, (method, path, allowed.text)
            bodies.append(allowed.text)
        bodies.append(httpx.get(f"{base}/metrics").text)
    assert "twofold.app" in caplog.text or '"event": "access"' in caplog.text  # it logged
    for key in (SEARCH_KEY, ADMIN_KEY):
        assert key not in caplog.text
        assert not any(key in body for body in bodies)
