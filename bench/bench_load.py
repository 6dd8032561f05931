"""Load benchmark of the HTTP service against the in-process pipeline.

Starts a real ``twofold serve`` on 127.0.0.1, sends N ``POST /v1/search`` requests at a
given concurrency (queries cycled from a BEIR split), counts errors, and reports
latency p50/p90/p99 and throughput. Then runs the same pipeline in this process on the
same queries, with the same concurrency (threads) and one at a time, and reports the
ratio of HTTP p50 to in-process p50 for each. Both sides get one warm-up pass over
the queries first (the JVM's JIT and the encoders warm up).

    .venv/bin/python bench/bench_load.py build/scifact --dataset ../shared/datasets/scifact \\
        --pipeline hybrid --requests 2000 --concurrency 8 --out bench/results/load-scifact.json

``--interleaved ROUNDS`` measures the HTTP overhead instead: serial calls, the
in-process pipeline and ``/v1/search`` (all hit fields, and ``fields`` without texts)
interleaved query by query in one run, medians with their spread and the load average:

    .venv/bin/python bench/bench_load.py build/cranfield --dataset data/cranfield \\
        --pipeline hybrid --interleaved 3 --out bench/results/http-overhead-cranfield.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
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
    with server_process(collection, *options) as (base, _):
        yield base


def cpu_clock(pid: int) -> int:
    """The CPU-time clock of process ``pid`` (all its threads), as Linux makes it
    (``MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED)``, what glibc's ``clock_getcpuclockid``
    returns): ``time.clock_gettime_ns`` of it is that process's CPU time in ns."""
    return ((~pid) << 3) | 2


@contextlib.contextmanager
def server_process(collection: Path, *options: str, src: Path = ROOT) -> Iterator[tuple[str, int]]:
    """``serving``, yielding the base URL and the server's process id; ``src``: the
    checkout whose code serves (another one than this, to compare with it)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "twofold.app.cli", "serve", str(collection)]
    cmd += ["--port", str(port), *options]
    log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"twofold-bench-{port}.log"
    with log_path.open("wb") as log_fh:
        env = {**os.environ, "PYTHONPATH": str(src)}
        server = subprocess.Popen(cmd, stdout=log_fh, stderr=subprocess.STDOUT, cwd=src, env=env)
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
        yield base, server.pid
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


def spread(ms: list[float]) -> dict[str, float]:
    """Median with its spread: p10, p25 (q1), p75 (q3), p90, and the IQR."""
    a = np.asarray(ms or [0.0])
    q = {p: float(np.percentile(a, p)) for p in (10, 25, 50, 75, 90)}
    return {
        "n": len(ms),
        "p50": round(q[50], 3),
        "p10": round(q[10], 3),
        "q1": round(q[25], 3),
        "q3": round(q[75], 3),
        "p90": round(q[90], 3),
        "iqr": round(q[75] - q[25], 3),
    }


# a server's base URL and pid, the ``fields`` to send, the client: "httpx" (what the
# load test uses) or "stdlib" (``http.client``: the request in one write, less Python)
Variant = tuple[str, int, list[str] | None, str]


class StdlibClient:
    """``POST`` over one kept-alive ``http.client`` connection."""

    def __init__(self, base: str) -> None:
        host, port = base.removeprefix("http://").rsplit(":", 1)
        self.conn = http.client.HTTPConnection(host, int(port), timeout=60)

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
        data = json.dumps(body).encode()
        self.conn.request("POST", path, body=data, headers={"content-type": "application/json"})
        resp = self.conn.getresponse()
        return resp.status, resp.read()

    def close(self) -> None:
        self.conn.close()


class HttpxClient:
    def __init__(self, base: str) -> None:
        self.client = httpx.Client(base_url=base, timeout=60)

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
        resp = self.client.post(path, json=body)
        return resp.status_code, resp.content

    def close(self) -> None:
        self.client.close()


CLIENTS = {"httpx": HttpxClient, "stdlib": StdlibClient}


def interleaved(
    collection_dir: Path,
    queries: list[str],
    pipeline: str,
    k: int,
    rounds: int,
    variants: dict[str, Variant],
) -> dict[str, Any]:
    """Serial, one call at a time, interleaved: for each query, the in-process pipeline
    and one ``/v1/search`` per entry of ``variants`` (name -> the server to ask and the
    ``fields`` to send, None: none, which is all of them), in
    an order that rotates from query to query, so that the load of the machine falls on
    every side alike. Per side: latency median and spread; per HTTP variant, the gap
    (HTTP p50 - in-process p50) and the median of the paired per-query differences;
    ``took_ms`` (the service's own time for a request) splits that into the service's
    work past the pipeline and the transport (HTTP, ASGI, client).

    CPU time too, which a busy machine stretches far less than wall time: per
    in-process call the CPU of this process (every thread), per HTTP call the server
    process's (every thread) plus this client thread's (``client_cpu_ms``: httpx's
    share)."""
    from twofold.core.types import Query
    from twofold.indexing.collection import Collection
    from twofold.search.pipeline import build_pipeline

    pipe = build_pipeline(Collection(collection_dir), pipeline)
    clients = {side: CLIENTS[v[3]](v[0]) for side, v in variants.items()}
    server_cpu = {side: cpu_clock(v[1]) for side, v in variants.items()}
    sides = ["in_process", *variants]
    latency: dict[str, list[float]] = {s: [] for s in sides}
    took: dict[str, list[float]] = {s: [] for s in variants}
    sizes: dict[str, list[int]] = {s: [] for s in variants}
    cpu: dict[str, list[float]] = {s: [] for s in sides}
    client_cpu: dict[str, list[float]] = {s: [] for s in variants}

    def call(side: str, i: int, record: bool) -> float:
        text = queries[i % len(queries)]
        if side == "in_process":
            c0 = time.process_time_ns()
            t0 = time.perf_counter()
            pipe.run(Query(str(i), text), k)
            ms = (time.perf_counter() - t0) * 1000.0
            used = time.process_time_ns() - c0
        else:
            body: dict[str, Any] = {"query": text, "k": k, "pipeline": pipeline}
            fields = variants[side][2]
            if fields is not None:
                body["fields"] = fields
            s0, c0 = time.clock_gettime_ns(server_cpu[side]), time.thread_time_ns()
            t0 = time.perf_counter()
            status, content = clients[side].post("/v1/search", body)
            ms = (time.perf_counter() - t0) * 1000.0
            by_client = time.thread_time_ns() - c0
            used = by_client + time.clock_gettime_ns(server_cpu[side]) - s0
            if status != 200:
                raise SystemExit(f"{side}: {status} {content[:300]!r}")
            if record:
                client_cpu[side].append(by_client / 1e6)
                took[side].append(float(json.loads(content)["took_ms"]))
                sizes[side].append(len(content))
        if record:
            latency[side].append(ms)
            cpu[side].append(used / 1e6)
        return ms

    for i in range(len(queries)):  # one warm pass for every side
        for side in sides:
            call(side, i, record=False)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    for r in range(rounds):
        for i in range(len(queries)):
            turn = (i + r) % len(sides)
            for side in sides[turn:] + sides[:turn]:
                call(side, i, record=True)
    wall = time.perf_counter() - t0
    load_after = os.getloadavg()
    for client in clients.values():
        client.close()
    local = latency["in_process"]
    sides_out: dict[str, Any] = {}
    for side, (_, _, fields, client_kind) in variants.items():
        paired = [h - p for h, p in zip(latency[side], local, strict=True)]
        sides_out[side] = {
            "fields": fields,
            "client": client_kind,
            "latency_ms": spread(latency[side]),
            "cpu_ms": spread(cpu[side]),
            "client_cpu_ms": spread(client_cpu[side]),
            "cpu_gap_p50_ms": round(float(np.median(cpu[side]) - np.median(cpu["in_process"])), 3),
            "gap_p50_ms": round(float(np.median(latency[side]) - np.median(local)), 3),
            "paired_gap_ms": spread(paired),
            "took_ms": spread(took[side]),
            "transport_ms": spread(
                [lat - t for lat, t in zip(latency[side], took[side], strict=True)]
            ),
            "response_bytes_p50": int(np.median(sizes[side])),
        }
    return {
        "rounds": rounds,
        "queries": len(queries),
        "order": "rotating per query: " + ", ".join(sides),
        "wall_s": round(wall, 1),
        "load_average_1_5_15_before": [round(x, 2) for x in load_before],
        "load_average_1_5_15_after": [round(x, 2) for x in load_after],
        "in_process_ms": spread(local),
        "in_process_cpu_ms": spread(cpu["in_process"]),
        "http": sides_out,
    }


LEAN = ["doc_id", "score", "title"]


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
    ap.add_argument(
        "--interleaved",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="instead: serial in-process and HTTP calls interleaved, ROUNDS passes over "
        f"the queries, HTTP with all hit fields and with fields={LEAN}, each through "
        "httpx and through http.client",
    )
    ap.add_argument("--max-queries", type=int, default=None)
    ap.add_argument(
        "--baseline-src",
        type=Path,
        help="with --interleaved: also serve from this checkout (e.g. the main branch) and "
        "interleave its /v1/search (all hit fields) as `baseline_all_fields`",
    )
    args = ap.parse_args()

    queries = load_queries(args.dataset, args.split, args.max_queries)
    options = ["--search-threads", str(args.search_threads)]
    if args.reranker:
        options += ["--reranker", args.reranker]
    if args.interleaved:
        if args.reranker:
            raise SystemExit("--interleaved compares pipelines without a reranker")
        with contextlib.ExitStack() as stack:
            base, pid = stack.enter_context(server_process(args.collection, *options))
            variants: dict[str, Variant] = {
                "http_all_fields": (base, pid, None, "httpx"),
                "http_lean_fields": (base, pid, LEAN, "httpx"),
                "http_all_fields_stdlib": (base, pid, None, "stdlib"),
                "http_lean_fields_stdlib": (base, pid, LEAN, "stdlib"),
            }
            if args.baseline_src:
                other = server_process(args.collection, *options, src=args.baseline_src)
                variants["baseline_all_fields"] = (*stack.enter_context(other), None, "httpx")
            result = interleaved(
                args.collection, queries, args.pipeline, args.k, args.interleaved, variants
            )
        report = {
            "benchmark": "HTTP overhead: serial /v1/search against the in-process pipeline",
            "collection": str(args.collection),
            "pipeline": args.pipeline,
            "k": args.k,
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}",
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "baseline_src": str(args.baseline_src) if args.baseline_src else None,
            **result,
        }
        text = json.dumps(report, indent=2)
        print(text)
        if args.out:
            args.out.write_text(text + "\n")
        return 0
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
