"""Latency of POST /v1/recommend vs a plain dense POST /v1/search at the same N, through a
real uvicorn on 127.0.0.1 (one process, sequential requests, after a warm-up).

    .venv/bin/python bench/bench_interests_latency.py COLLECTION --dataset BEIR_DIR \
        [--n 20] [--requests 200] [--out latency.json]

Histories are simulated users (seed 0) of ``twofold.search.interests_eval``; queries are
the dataset's judged test queries. Client-side wall time per request, in ms.
"""

from __future__ import annotations

import argparse
import json
import socket
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import uvicorn

from twofold.app.main import create_app
from twofold.app.settings import Settings
from twofold.indexing.collection import Collection
from twofold.indexing.corpus import BeirDataset
from twofold.search.interests_eval import merged_qrels, relevant_sets, simulate_users


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentiles(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {
        "p50": round(float(np.percentile(a, 50)), 3),
        "p90": round(float(np.percentile(a, 90)), 3),
        "p99": round(float(np.percentile(a, 99)), 3),
        "mean": round(float(a.mean()), 3),
        "requests": len(ms),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("collection")
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--out")
    args = ap.parse_args()

    path = Path(args.collection)
    dataset = BeirDataset(Path(args.dataset))
    docs = Collection(path).docs
    users = simulate_users(
        relevant_sets(merged_qrels(dataset, ["test"]), lambda d: d in docs), args.requests, seed=0
    )
    queries = [q.text for q in dataset.queries("test")]

    settings = Settings(collections=[path], default_pipeline="dense", warmup=True)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=base, timeout=60) as client:
        until = time.monotonic() + 120
        while time.monotonic() < until:
            try:
                if client.get("/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        # warm-up: the encoder, FAISS and both routes
        for i in range(10):
            client.post("/v1/search", json={"query": queries[i], "k": args.n, "pipeline": "dense"})
            client.post("/v1/recommend", json={"history": list(users[i].history), "k": args.n})
        timings: dict[str, list[float]] = {"recommend": [], "search_dense": []}
        for i in range(args.requests):
            t0 = time.perf_counter()
            r = client.post("/v1/recommend", json={"history": list(users[i].history), "k": args.n})
            timings["recommend"].append((time.perf_counter() - t0) * 1000)
            r.raise_for_status()
            t0 = time.perf_counter()
            r = client.post(
                "/v1/search",
                json={"query": queries[i % len(queries)], "k": args.n, "pipeline": "dense"},
            )
            timings["search_dense"].append((time.perf_counter() - t0) * 1000)
            r.raise_for_status()
    server.should_exit = True
    thread.join(timeout=10)
    result = {
        "collection": path.name,
        "n": args.n,
        "history_len_mean": round(float(np.mean([len(u.history) for u in users])), 2),
        **{k: percentiles(v) for k, v in timings.items()},
    }
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
