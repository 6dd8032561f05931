"""The HTTP API against a real ``twofold serve`` (uvicorn) on 127.0.0.1, through httpx.

One server per session: the Cranfield sample (BM25), a tiny random cross-encoder as
reranker, and an API key. Every error path a client can hit is checked for its status
and for a message that says what to change.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from tests.test_reranker import save_tiny_cross_encoder
from twofold.app.main import Loader, create_app
from twofold.app.settings import Settings
from twofold.app.state import load_state
from twofold.indexing.build import build_collection
from twofold.indexing.buildctx import BuildOptions
from twofold.models.reranker import CrossEncoder, RerankerConfig

ROOT = Path(__file__).resolve().parent.parent
KEY = "test-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(base: str, proc: subprocess.Popen[bytes] | None = None, limit: float = 120) -> None:
    until = time.monotonic() + limit
    while time.monotonic() < until:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{base} did not become ready")


@pytest.fixture(scope="session")
def sample_collection(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("api") / "cranfield"
    build_collection(ROOT / "data" / "cranfield", out, BuildOptions(progress=False))
    return out


@pytest.fixture(scope="session")
def tiny_reranker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_cross_encoder(tmp_path_factory.mktemp("ce") / "tiny-ce")


@pytest.fixture(scope="session")
def server(
    sample_collection: Path, tiny_reranker: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("log") / "server.log"
    env = {**os.environ, "TWOFOLD_API_KEY": KEY, "TWOFOLD_MAX_BODY_BYTES": "4096"}
    cmd = [sys.executable, "-m", "twofold.app.cli", "serve", str(sample_collection)]
    cmd += ["--port", str(port), "--reranker", str(tiny_reranker)]
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        logs = log.read_text()
        assert "Traceback" not in logs, logs[-3000:]


@pytest.fixture
def client(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, headers=AUTH, timeout=30) as c:
        yield c


def search(client: httpx.Client, **body: object) -> httpx.Response:
    return client.post("/v1/search", json=body)


# ---- happy paths --------------------------------------------------------------------


def test_health_readiness_and_metrics_need_no_key(server: str) -> None:
    assert httpx.get(f"{server}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{server}/readyz").json()
    assert ready["status"] == "ready" and ready["collections"] == ["cranfield"]
    metrics = httpx.get(f"{server}/metrics")
    assert metrics.status_code == 200
    assert "twofold_http_requests_total" in metrics.text


def test_search_returns_hits_with_snippets_and_sources(client: httpx.Client) -> None:
    resp = client.post(
        "/v1/search",
        json={"query": "boundary layer heat transfer", "k": 5, "pipeline": "bm25"},
        headers={"X-Request-ID": "abc-123"},
    )
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-request-id"] == "abc-123"
    data = resp.json()
    assert data["request_id"] == "abc-123"
    assert data["pipeline"] == "bm25" and data["collection"] == "cranfield"
    assert data["degraded"] is False and data["degraded_reasons"] == []
    hits = data["hits"]
    assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    top = hits[0]
    assert top["sources"]["bm25"]["rank"] == 1
    marked = {top["snippet"][s:e].lower() for s, e in top["highlights"]}
    assert marked and marked <= {"boundary", "layer", "layers", "heat", "transfer", "transfers"}
    assert "retrieve.bm25" in data["timings_ms"]


ALL_FIELDS = {"rank", "doc_id", "score", "title", "text", "snippet", "highlights"}
ALL_FIELDS |= {"title_highlights", "sources"}


def test_fields_leave_out_what_is_not_asked_for(client: httpx.Client) -> None:
    body = {"query": "boundary layer heat transfer", "k": 5, "pipeline": "bm25"}
    full = search(client, **body).json()
    assert [set(h) for h in full["hits"]] == [ALL_FIELDS] * 5  # the default: everything
    lean = search(client, **body, fields=["doc_id", "score", "title"]).json()
    assert [set(h) for h in lean["hits"]] == [{"rank", "doc_id", "score", "title"}] * 5
    for f, h in zip(full["hits"], lean["hits"], strict=True):
        assert h == {k: f[k] for k in ("rank", "doc_id", "score", "title")}
    bare = search(client, **body, fields=[]).json()
    assert [set(h) for h in bare["hits"]] == [{"rank", "doc_id"}] * 5
    snip = search(client, **body, fields=["highlights"], explain=True).json()
    for f, h in zip(full["hits"], snip["hits"], strict=True):
        assert h == {"rank": f["rank"], "doc_id": f["doc_id"], "highlights": f["highlights"]} | {
            "terms": {}  # explain still answers (BM25 explains no terms)
        }
    batch = client.post("/v1/search/batch", json={"searches": [{**body, "fields": ["score"]}]})
    assert set(batch.json()["results"][0]["hits"][0]) == {"rank", "doc_id", "score"}


@pytest.mark.parametrize("pipeline", ["bm25", "hybrid+rerank"])
def test_offset_pages_through_one_ranking(client: httpx.Client, pipeline: str) -> None:
    body = {"query": "buckling of thin shells", "pipeline": pipeline, "fields": ["score"]}
    whole = search(client, **body, k=30).json()
    assert whole["offset"] == 0 and len(whole["hits"]) == 30
    pages = [search(client, **body, k=10, offset=o).json() for o in (0, 10, 20)]
    assert [p["offset"] for p in pages] == [0, 10, 20]
    assert [h for p in pages for h in p["hits"]] == whole["hits"]
    assert [h["rank"] for h in pages[2]["hits"]] == list(range(21, 31))
    # the ranking is served to rank 100: a page past it is short, not an error
    last = search(client, **body, k=10, offset=95).json()
    assert [h["rank"] for h in last["hits"]] == [96, 97, 98, 99, 100]
    assert last["k"] == 10 and last["offset"] == 95
    assert last["hits"] == search(client, **body, k=100).json()["hits"][95:]


def test_default_pipeline_and_request_ids_are_made(client: httpx.Client) -> None:
    data = search(client, query="supersonic flow", k=3).json()
    assert data["pipeline"] == "hybrid"
    assert len(data["request_id"]) == 32


def test_hybrid_plus_rerank_uses_the_cross_encoder(
    client: httpx.Client, tiny_reranker: Path
) -> None:
    """The reranked top 10 is the ranking the cross-encoder gives the fused top 50 (the
    rerank depth): the same model scores those candidates here, in-process, from the
    documents' own title and text, and the service's order and scores must equal it."""
    query = "buckling of thin shells"
    fused = search(client, query=query, k=50, pipeline="hybrid", fields=["score"]).json()
    data = search(client, query=query, k=10, pipeline="hybrid+rerank").json()
    assert data["degraded"] is False, data["degraded_reasons"]
    assert "rerank" in data["timings_ms"]
    assert all("fusion" in h["sources"] for h in data["hits"])
    candidates = [h["doc_id"] for h in fused["hits"]]
    docs = [client.get(f"/v1/docs/{d}").json() for d in candidates]
    texts = [f"{d['title']}\n{d['text']}" if d["title"] else d["text"] for d in docs]
    model = CrossEncoder(RerankerConfig(str(tiny_reranker)))
    scores = model.score(query, texts)
    expected = sorted(zip(scores, candidates, strict=True), key=lambda p: (-p[0], p[1]))[:10]
    assert [h["doc_id"] for h in data["hits"]] == [d for _, d in expected]
    assert [h["score"] for h in data["hits"]] == pytest.approx([s for s, _ in expected], abs=1e-5)
    assert [d for _, d in expected] != candidates[:10]  # the model reorders this list


def test_ad_hoc_retrievers_with_fusion(client: httpx.Client) -> None:
    data = search(
        client,
        query="lift and drag",
        k=4,
        retrievers=["bm25"],
        fusion={"method": "convex", "weights": {"bm25": 1.0}},
        rerank=True,
        explain=True,
    ).json()
    assert data["pipeline"] == "custom" and len(data["hits"]) == 4
    assert all(h["terms"] == {} for h in data["hits"])  # BM25 has no term explainer


def test_batch(client: httpx.Client) -> None:
    body = {"searches": [{"query": "heat transfer", "k": 2}, {"query": "wings", "k": 3}]}
    resp = client.post("/v1/search/batch", json=body)
    assert resp.status_code == 200, resp.text
    results = resp.json()["results"]
    assert [len(r["hits"]) for r in results] == [2, 3]
    assert results[0]["request_id"].endswith("-0")


def test_collections_and_docs(client: httpx.Client) -> None:
    data = client.get("/v1/collections").json()
    assert data["default"] == "cranfield" and data["reranker"] == "tiny-ce"
    (c,) = data["collections"]
    assert c["doc_count"] == 1400 and c["retrievers"] == ["bm25"]
    names = [p["name"] for p in c["pipelines"]]
    assert names == ["bm25", "hybrid", "hybrid-rrf", "hybrid+rerank", "bm25+rerank"]
    doc = client.get("/v1/docs/1").json()
    assert doc["doc_id"] == "1" and doc["text"]
    assert client.get("/v1/docs/1", params={"collection": "cranfield"}).status_code == 200


# ---- error paths --------------------------------------------------------------------


def expect(resp: httpx.Response, status: int, *needles: str) -> dict[str, object]:
    assert resp.status_code == status, resp.text
    body: dict[str, object] = resp.json()
    assert body["request_id"] == resp.headers["x-request-id"]
    for needle in needles:
        assert needle in str(body["detail"]), body
    return body


@pytest.mark.parametrize(
    ("headers", "needle"),
    [
        ({}, "Authorization: Bearer"),
        ({"Authorization": "Bearer wrong-key"}, "not valid"),
        ({"Authorization": f"Basic {KEY}"}, "Authorization: Bearer"),
        ({"Authorization": "Bearer"}, "Authorization: Bearer"),
    ],
)
def test_bad_or_missing_token(server: str, headers: dict[str, str], needle: str) -> None:
    for resp in (
        httpx.post(f"{server}/v1/search", json={"query": "heat"}, headers=headers),
        httpx.get(f"{server}/v1/collections", headers=headers),
        httpx.get(f"{server}/v1/docs/1", headers=headers),
    ):
        expect(resp, 401, needle)
        assert resp.headers["www-authenticate"] == "Bearer"


def test_unknown_pipeline_lists_the_known_ones(client: httpx.Client) -> None:
    expect(search(client, query="heat", pipeline="hybird"), 404, "hybird", "known: bm25")
    expect(search(client, query="heat", pipeline="dense"), 400, "cannot run", "available")


def test_rerank_pipeline_without_reranker_says_how_to_add_one(
    sample_collection: Path,
) -> None:
    with run_in_thread(Settings(collections=[sample_collection], warmup=False)) as base:
        resp = httpx.post(f"{base}/v1/search", json={"query": "heat", "pipeline": "hybrid+rerank"})
        expect(resp, 400, "--reranker DIR")
        resp = httpx.post(
            f"{base}/v1/search", json={"query": "heat", "retrievers": ["bm25"], "rerank": True}
        )
        expect(resp, 400, "no reranker")


@pytest.mark.parametrize(
    ("body", "needles"),
    [
        ({"query": "heat", "k": 0}, ["body.k", "greater than or equal to 1"]),
        ({"query": "heat", "k": 101}, ["body.k", "less than or equal to 100"]),
        ({"query": "heat", "k": "10"}, ["body.k", "valid integer"]),
        ({"query": "heat", "k": 2.5}, ["body.k"]),
        ({"query": ""}, ["body.query", "at least 1 character"]),
        ({"query": "   "}, ["body.query", "blank"]),
        ({"query": "x" * 1001}, ["body.query", "at most 1000 characters"]),
        ({"query": 42}, ["body.query", "valid string"]),
        ({"k": 3}, ["body.query", "Field required"]),
        ({"query": "heat", "pipline": "bm25"}, ["body.pipline", "Extra inputs"]),
        ({"query": "heat", "pipeline": "bm25", "retrievers": ["bm25"]}, ["either `pipeline`"]),
        ({"query": "heat", "fusion": {"method": "rrf"}}, ["go with `retrievers`"]),
        ({"query": "heat", "retrievers": []}, ["body.retrievers"]),
        (
            {"query": "heat", "retrievers": ["bm25"], "fusion": {"method": "borda"}},
            ["body.fusion.method"],
        ),
        ({"query": "heat", "explain": "yes"}, ["body.explain"]),
        ({"query": "heat", "budget_ms": 1}, ["body.budget_ms"]),
        ({"query": "heat", "budget_ms": 776.5}, ["body.budget_ms"]),
        ({"query": "heat", "k": True}, ["body.k"]),
        ({"query": "heat", "offset": -1}, ["body.offset", "greater than or equal to 0"]),
        ({"query": "heat", "offset": 100}, ["body.offset", "less than or equal to 99"]),
        ({"query": "heat", "offset": "10"}, ["body.offset", "valid integer"]),
        ({"query": "heat", "offset": 1.5}, ["body.offset"]),
        ({"query": "heat", "fields": ["id"]}, ["body.fields.0", "'doc_id'"]),
        ({"query": "heat", "fields": "title"}, ["body.fields", "valid list"]),
        ({"query": "heat", "fields": ["title"] * 10}, ["body.fields", "at most 9"]),
    ],
)
def test_invalid_search_bodies_are_422(
    client: httpx.Client, body: dict[str, object], needles: list[str]
) -> None:
    data = expect(search(client, **body), 422, *needles)
    assert data["code"] == "invalid_request" and data["errors"]


def test_domain_errors_are_400(client: httpx.Client) -> None:
    expect(search(client, query="heat", collection="nope"), 404, "unknown collection", "cranfield")
    expect(search(client, query="heat", retrievers=["dense"]), 404, "no retriever 'dense'")
    bad_fusion = {"method": "score", "normalization": "z_score", "combination": "geometric"}
    expect(search(client, query="heat", retrievers=["bm25"], fusion=bad_fusion), 400, "z_score")
    # a weight for a retriever the request does not run is refused, not ignored
    stray = {"method": "convex", "weights": {"bm25": 0.3, "dense": 0.7}}
    body = expect(
        search(client, query="heat", retrievers=["bm25"], fusion=stray),
        400,
        "fusion weights name 'dense'",
        "valid names: bm25",
    )
    assert body["code"] == "bad_request"


def test_malformed_json_and_wrong_content(client: httpx.Client) -> None:
    resp = client.post(
        "/v1/search", content=b'{"query": "heat",', headers={"content-type": "application/json"}
    )
    expect(resp, 422, "JSON")
    expect(client.post("/v1/search", json=["heat"]), 422)


def test_oversized_body_is_413(client: httpx.Client) -> None:
    resp = client.post("/v1/search", content=json.dumps({"query": "x" * 5000}).encode())
    assert resp.status_code == 413
    assert "larger than 4096 bytes" in resp.json()["detail"]


def test_batch_limits(client: httpx.Client) -> None:
    expect(client.post("/v1/search/batch", json={"searches": []}), 422, "body.searches")
    many = {"searches": [{"query": "a"}] * 33}
    # 33 tiny searches fit in 4 KiB: the batch limit (32), not the body limit, refuses it
    expect(client.post("/v1/search/batch", json=many), 422, "at most 32")
    bad = {"searches": [{"query": "heat"}, {"query": "heat", "k": 0}]}
    expect(client.post("/v1/search/batch", json=bad), 422, "body.searches.1.k")


def test_unknown_doc_and_route(client: httpx.Client) -> None:
    expect(client.get("/v1/docs/no-such-doc"), 404, "unknown doc id 'no-such-doc'")
    expect(client.get("/v1/docs/" + "x" * 600), 422, "doc_id")
    expect(client.get("/v1/nothing-here"), 404)
    wrong = client.get("/v1/search")
    expect(wrong, 405)
    assert wrong.headers["allow"] == "POST"  # RFC 9110: a 405 says what is allowed


def test_integral_numbers_are_integers(client: httpx.Client) -> None:
    """JSON Schema's ``integer`` includes 776.0: the schema says integer, so it is one."""
    resp = search(client, query="heat", k=3.0, budget_ms=776.0, pipeline="bm25")
    assert resp.status_code == 200, resp.text
    assert len(resp.json()["hits"]) == 3


def test_metrics_count_what_happened(server: str, client: httpx.Client) -> None:
    search(client, query="heat", k=1)
    text = httpx.get(f"{server}/metrics").text
    assert 'twofold_http_requests_total{method="POST",route="/v1/search",status="200"}' in text
    assert 'status="401"' in text and 'status="422"' in text
    assert 'twofold_pipeline_stage_duration_seconds_count{pipeline="hybrid"' in text


# ---- degradation with a reranker that fails on real input ---------------------------


class run_in_thread:
    """uvicorn in a thread of this process (shares the JVM; nothing is forked)."""

    def __init__(self, settings: Settings, loader: Loader = load_state) -> None:
        self.port = free_port()
        config = uvicorn.Config(
            create_app(settings, loader), host="127.0.0.1", port=self.port, log_config=None
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        base = f"http://127.0.0.1:{self.port}"
        wait_ready(base)
        return base

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def test_a_failing_reranker_degrades_to_the_fused_ranking(
    sample_collection: Path, tmp_path: Path
) -> None:
    # A model whose tokenizer emits ids past its embedding table loads, then fails to score.
    broken = save_tiny_cross_encoder(tmp_path / "mismatched", vocab_size=6)
    settings = Settings(collections=[sample_collection], reranker=str(broken))
    with run_in_thread(settings) as base:
        body = {"query": "heat transfer in boundary layers", "k": 5}
        fused = httpx.post(f"{base}/v1/search", json={**body, "pipeline": "hybrid"}).json()
        resp = httpx.post(f"{base}/v1/search", json={**body, "pipeline": "hybrid+rerank"})
        assert resp.status_code == 200, resp.text
        data = resp.json()
        assert data["degraded"] is True
        assert data["degraded_reasons"][0].startswith("rerank skipped")
        assert [h["doc_id"] for h in data["hits"]] == [h["doc_id"] for h in fused["hits"]]
        assert "twofold_search_degraded_total" in httpx.get(f"{base}/metrics").text
