"""Load benchmark of the HTTP service against the in-process pipeline.

Starts a real ``twofold serve`` on 127.0.0.1, sends N ``POST /v1/search`` requests at a
given concurrency (queries cycled from a BEIR split), counts errors, and reports
latency p50/p90/p99 and throughput. Then runs the same pipeline in this process on the
same queries, with the same concurrency (threads) and one at a time, and reports the
ratio of HTTP p50 to in-process p50 for each. Both sides get one warm-up pass over
the queries first (the JVM's JIT and the encoders warm up).

    .venv/bin/python bench/bench_load.py build/scifact --dataset ../shared/datasets/scifact \\
        --pipeline hybrid --requests 2000 --concurrency 8 --out bench/load-scifact.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# as `twofold` does at query time (see twofold/app/cli.py): torch + FAISS OpenMP pools
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentiles(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms or [0.0])
    return {f"p{p}": round(float(np.percentile(a, p)), 3) for p in (50, 90, 99)} | {
        "mean": round(float(a.mean()), 3)
    }


@contextlib.contextmanager
def serving(collection: Path, *options: str) -> Iterator[str]:
    """A real ``twofold serve COLLECTION *options`` on a free port; yields its base URL
    once /readyz answers 200, and stops it on exit."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "twofold.app.cli", "serve", str(collection)]
    cmd += ["--port", str(port), *options]
    log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"twofold-bench-{port}.log"
    with log_path.open("wb") as log_fh:
        server = subprocess.Popen(cmd, stdout=log_fh, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        until = time.monotonic() + 300
        while True:
            if server.poll() is not None or time.monotonic() > until:
                raise SystemExit(f"server did not start; see {log_path}")
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=60)


def load_queries(dataset: Path, split: str, limit: int | None) -> list[str]:
    from twofold.indexing.corpus import BeirDataset

    ds = BeirDataset(dataset)
    queries = [q.text for q in ds.queries(split, ds.qrels(split))]
    return queries[:limit] if limit else queries


async def http_load(
    base: str, queries: list[str], pipeline: str, k: int, n: int, concurrency: int
) -> dict[str, Any]:
    latencies: list[float] = []
    errors: dict[str, int] = {}
    counter = iter(range(n))

    async def worker(client: httpx.AsyncClient) -> None:
        for i in counter:
            body = {"query": queries[i % len(queries)], "k": k, "pipeline": pipeline}
            t0 = time.perf_counter()
            try:
                resp = await client.post("/v1/search", json=body)
                ok = resp.status_code == 200
                key = str(resp.status_code)
            except httpx.HTTPError as exc:
                ok, key = False, type(exc).__name__
            latencies.append((time.perf_counter() - t0) * 1000.0)
            if not ok:
                errors[key] = errors.get(key, 0) + 1

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return {
        "requests": n,
        "concurrency": concurrency,
        "errors": sum(errors.values()),
        "errors_by_kind": errors,
        "latency_ms": percentiles(latencies),
        "throughput_rps": round(n / wall, 2),
        "wall_s": round(wall, 2),
    }


def in_process(
    collection_dir: Path,
    queries: list[str],
    pipeline: str,
    k: int,
    reranker: str | None,
    n: int,
    concurrency: int,
) -> dict[str, Any]:
    """The same pipeline in this process: one warm pass over the queries, then a serial
    pass and a pass with ``concurrency`` threads (``n`` queries, cycled)."""
    from concurrent.futures import ThreadPoolExecutor

    from twofold.core.types import Query
    from twofold.indexing.collection import Collection
    from twofold.search.pipeline import build_pipeline

    rr = None
    if reranker:
        from twofold.models.reranker import RerankerConfig, load_reranker

        rr = load_reranker(RerankerConfig(reranker))
    pipe = build_pipeline(Collection(collection_dir), pipeline, reranker=rr)

    def one(i: int) -> float:
        t0 = time.perf_counter()
        pipe.run(Query(str(i), queries[i % len(queries)]), k)
        return (time.perf_counter() - t0) * 1000.0

    for i in range(len(queries)):  # warm-up pass, as the server got
        one(i)
    t0 = time.perf_counter()
    serial = [one(i) for i in range(len(queries))]
    serial_wall = time.perf_counter() - t0
    with ThreadPoolExecutor(concurrency) as pool:
        t0 = time.perf_counter()
        loaded = list(pool.map(one, range(n)))
        loaded_wall = time.perf_counter() - t0
    return {
        "serial": {
            "queries": len(serial),
            "latency_ms": percentiles(serial),
            "throughput_qps": round(len(serial) / serial_wall, 2),
        },
        "concurrent": {
            "queries": n,
            "threads": concurrency,
            "latency_ms": percentiles(loaded),
            "throughput_qps": round(n / loaded_wall, 2),
        },
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("collection", type=Path)
    ap.add_argument("--dataset", type=Path, required=True, help="BEIR dir for the queries")
    ap.add_argument("--split", default="test")
    ap.add_argument("--pipeline", default="hybrid")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--serial-requests", type=int, default=300, help="0 skips the c=1 pass")
    ap.add_argument("--search-threads", type=int, default=4)
    ap.add_argument("--reranker", default=None)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    queries = load_queries(args.dataset, args.split, None)
    options = ["--search-threads", str(args.search_threads)]
    if args.reranker:
        options += ["--reranker", args.reranker]
    with serving(args.collection, *options) as base:
        # one pass over the queries first, so both sides are warm alike
        asyncio.run(http_load(base, queries, args.pipeline, args.k, len(queries), 2))
        loaded = asyncio.run(
            http_load(base, queries, args.pipeline, args.k, args.requests, args.concurrency)
        )
        serial = (
            asyncio.run(http_load(base, queries, args.pipeline, args.k, args.serial_requests, 1))
            if args.serial_requests
            else None
        )
    local = in_process(
        args.collection,
        queries,
        args.pipeline,
        args.k,
        args.reranker,
        args.requests,
        args.concurrency,
    )
    serial_p50 = local["serial"]["latency_ms"]["p50"] or 1e-9
    loaded_p50 = local["concurrent"]["latency_ms"]["p50"] or 1e-9
    report = {
        "collection": str(args.collection),
        "pipeline": args.pipeline,
        "k": args.k,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "http_load": loaded,
        "http_serial": serial,
        "in_process": local,
        # same concurrency on both sides: HTTP p50 / in-process p50
        "ratio_http_p50_to_in_process_p50": round(loaded["latency_ms"]["p50"] / loaded_p50, 3),
        "ratio_serial_http_p50_to_serial_in_process_p50": (
            round(serial["latency_ms"]["p50"] / serial_p50, 3) if serial else None
        ),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 1 if loaded["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
