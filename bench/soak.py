"""Soak test of the HTTP service: many mixed requests at a fixed concurrency against a
real ``twofold serve``; reports errors (any status other than 200, or a failed
connection), latency p50/p99 per request kind, and the server's RSS growth after a
warm-up share of the requests (goal: <= 10 %).

The mix, drawn with a fixed seed: searches over every named pipeline of the
collection (some with ``explain``/``diversify``), batches of three searches,
document reads, collection listings, recommendations (when the collection has an
interests index) and health probes.

Full soak (issue 11; minutes on a CPU, not run by the suite)::

    .venv/bin/python bench/soak.py build/scifact --requests 20000 --concurrency 16 \\
        --out bench/results/soak-scifact.json

The suite runs a short variant (``tests/test_soak.py``: 500 requests, concurrency 8,
in-process server).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
QUERIES = (
    "heat transfer in a laminar boundary layer",
    "buckling of cylindrical shells",
    "supersonic flow over a flat plate",
    "lift and drag of swept wings",
    "turbulent skin friction",
    "shock wave interaction",
)
Request = tuple[str, str, str, dict[str, Any] | None]  # kind, method, path, body


def mixed_requests(
    n: int, pipelines: list[str], doc_ids: list[str], interests: bool, seed: int = 0
) -> list[Request]:
    rng = random.Random(seed)
    kinds = ["search"] * 6 + ["batch", "doc", "collections", "health"]
    kinds += ["recommend"] * 2 if interests else []
    out: list[Request] = []
    for _ in range(n):
        kind = rng.choice(kinds)
        query = rng.choice(QUERIES)
        if kind == "search":
            body: dict[str, Any] = {"query": query, "k": 10, "pipeline": rng.choice(pipelines)}
            body["explain"] = rng.random() < 0.1
            if interests and rng.random() < 0.1:
                body["diversify"] = True
            out.append((kind, "POST", "/v1/search", body))
        elif kind == "batch":
            searches = [{"query": rng.choice(QUERIES), "k": 5} for _ in range(3)]
            out.append((kind, "POST", "/v1/search/batch", {"searches": searches}))
        elif kind == "doc":
            out.append((kind, "GET", f"/v1/docs/{rng.choice(doc_ids)}", None))
        elif kind == "collections":
            out.append((kind, "GET", "/v1/collections", None))
        elif kind == "health":
            out.append((kind, "GET", rng.choice(["/healthz", "/readyz"]), None))
        else:
            history = rng.sample(doc_ids, min(3, len(doc_ids)))
            out.append((kind, "POST", "/v1/recommend", {"history": history, "k": 10}))
    return out


def describe(base: str, headers: dict[str, str]) -> tuple[list[str], list[str], bool]:
    """Pipelines, some doc ids and whether recommend works, from the service itself."""
    with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
        col = client.get("/v1/collections").json()["collections"][0]
        hits = client.post("/v1/search", json={"query": QUERIES[0], "k": 20}).json()["hits"]
        rec = client.post("/v1/recommend", json={"history": [hits[0]["doc_id"]], "k": 3})
    return [p["name"] for p in col["pipelines"]], [h["doc_id"] for h in hits], rec.is_success


async def _drive(
    base: str,
    requests: list[Request],
    concurrency: int,
    headers: dict[str, str],
    on_done: Callable[[int], None] | None,
) -> list[tuple[str, int, float]]:
    """(kind, status or -1, ms) per request, in completion order."""
    results: list[tuple[str, int, float]] = []
    queue: asyncio.Queue[Request] = asyncio.Queue()
    for item in requests:
        queue.put_nowait(item)
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=120, limits=limits) as c:

        async def worker() -> None:
            while not queue.empty():
                kind, method, path, body = queue.get_nowait()
                t0 = time.perf_counter()
                try:
                    status = (await c.request(method, path, json=body)).status_code
                except httpx.HTTPError:
                    status = -1
                results.append((kind, status, (time.perf_counter() - t0) * 1000.0))
                if on_done is not None:
                    on_done(len(results))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


def soak(
    base: str,
    requests: list[Request],
    concurrency: int,
    headers: dict[str, str] | None = None,
    rss: Callable[[], int] | None = None,
    warmup_share: float = 0.1,
) -> dict[str, Any]:
    """Send ``requests`` at ``concurrency``; errors, latency per kind, RSS growth."""
    marks: dict[str, int] = {}
    warm_at = max(1, int(len(requests) * warmup_share))

    def on_done(done: int) -> None:
        if rss is not None and done == warm_at:
            marks["after_warmup"] = rss()

    t0 = time.perf_counter()
    results = asyncio.run(_drive(base, requests, concurrency, headers or {}, on_done))
    wall = time.perf_counter() - t0
    statuses = Counter(s for _, s, _ in results)
    out: dict[str, Any] = {
        "requests": len(results),
        "concurrency": concurrency,
        "errors": sum(n for s, n in statuses.items() if s != 200),
        "statuses": {str(s): n for s, n in sorted(statuses.items())},
        "seconds": round(wall, 3),
        "latency_ms": {},
    }
    for kind in sorted({k for k, _, _ in results}):
        ms = np.asarray([m for k, _, m in results if k == kind])
        out["latency_ms"][kind] = {
            "n": int(ms.size),
            "p50": round(float(np.percentile(ms, 50)), 3),
            "p99": round(float(np.percentile(ms, 99)), 3),
        }
    everything = np.asarray([m for _, _, m in results])
    out["latency_ms"]["all"] = {
        "p50": round(float(np.percentile(everything, 50)), 3),
        "p99": round(float(np.percentile(everything, 99)), 3),
    }
    if rss is not None and "after_warmup" in marks:
        end = rss()
        out["rss_bytes"] = {"after_warmup": marks["after_warmup"], "end": end}
        out["rss_growth"] = round(end / marks["after_warmup"] - 1.0, 4)
    return out


def process_rss(pid: int) -> Callable[[], int]:
    def read() -> int:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    return read


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("collection", type=Path)
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--serve-option", action="append", default=[], help="passed to serve")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    from bench.bench_load import free_port

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "twofold.app.cli", "serve", str(args.collection)]
    cmd += ["--port", str(port), *args.serve_option]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        until = time.monotonic() + 600
        while True:
            if server.poll() is not None or time.monotonic() > until:
                raise SystemExit(f"server did not become ready (exit {server.poll()})")
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        pipelines, doc_ids, interests = describe(base, {})
        requests = mixed_requests(args.requests, pipelines, doc_ids, interests, args.seed)
        report = soak(base, requests, args.concurrency, rss=process_rss(server.pid))
    finally:
        server.terminate()
        server.wait(timeout=60)
    report["command"] = " ".join(sys.argv)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
