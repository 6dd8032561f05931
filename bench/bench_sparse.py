"""Learned sparse benchmarks: engines (quality, agreement, latency) and encoding throughput.

# engines: nDCG@10 native vs Lucene, top-10 agreement, latency vs BM25 (one run,
# queries interleaved round-robin so machine load hits every system alike); each
# --query-min-idf X adds sparse systems whose query drops tokens with idf < X
.venv/bin/python bench/bench_sparse.py engines COLLECTION --dataset BEIR_DIR \
    [--retrievers sparse,splade] [--query-min-idf X ...] [--repeat R] [--out F]
# client-side (HTTP) latency, sparse vs bm25 through one real server (the paper's measure)
.venv/bin/python bench/bench_sparse.py client COLLECTION --dataset BEIR_DIR \
    [--engine lucene] [--k 10] [--repeat R] [--out F]
# encoding throughput of splade-tiny vs the fp32 matmul rate measured in the same run
.venv/bin/python bench/bench_sparse.py encode --dataset BEIR_DIR [--docs 512] [--out F]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _pct(values: list[float]) -> dict[str, float]:
    a = np.asarray(values)
    return {
        "p50": round(float(np.percentile(a, 50)), 3),
        "p99": round(float(np.percentile(a, 99)), 3),
        "mean": round(float(a.mean()), 3),
    }


def engines(args: argparse.Namespace) -> dict[str, Any]:
    from twofold.indexing.collection import Collection
    from twofold.indexing.corpus import BeirDataset
    from twofold.search.evaluate import score_run
    from twofold.search.sparse import SparseSearcher

    coll = Collection(Path(args.collection))
    data = BeirDataset(Path(args.dataset))
    qrels = data.qrels(args.split)
    queries = data.queries(args.split, qrels)
    bm25 = coll.index("bm25")
    systems: dict[str, Any] = {"bm25": lambda text, k: bm25.search(text, k)}
    for name in args.retrievers.split(","):
        if coll.has(name):
            for engine in ("native", "lucene"):
                searcher = SparseSearcher(coll.index(name), engine)
                systems[f"{name}/{engine}"] = searcher.search
    for min_idf in args.query_min_idf if coll.has("sparse") else []:
        for engine in ("native", "lucene"):  # query-side pruning of the inference-free side
            searcher = SparseSearcher(coll.index("sparse"), engine, query_min_idf=min_idf)
            systems[f"sparse/{engine}/min_idf={min_idf:g}"] = searcher.search
    for search in systems.values():  # warm-up: JVM and its JIT, models, page cache
        for q in queries[: args.warmup]:
            search(q.text, args.k)
    runs: dict[str, dict[str, list[tuple[str, float]]]] = {s: {} for s in systems}
    latency: dict[str, list[float]] = {s: [] for s in systems}
    names = list(systems)
    for _ in range(args.repeat):  # latencies pooled over the repeats
        for i, q in enumerate(queries):  # round-robin: each query hits every system back
            for name in names[i % len(names) :] + names[: i % len(names)]:  # to back, in
                t0 = time.perf_counter()  # a rotating order (no system always first)
                hits = systems[name](q.text, args.k)
                latency[name].append((time.perf_counter() - t0) * 1000.0)
                runs[name][q.query_id] = [(d, s) for d, s in hits if d != q.query_id]
    out: dict[str, Any] = {
        "collection": args.collection,
        "queries": len(queries),
        "k": args.k,
        "loadavg_1m_5m_15m_end": [round(x, 2) for x in os.getloadavg()],
    }
    for name in systems:
        per_q = score_run(qrels, runs[name])
        out[name] = {
            "ndcg@10": round(float(np.mean([v["ndcg@10"] for v in per_q.values()])), 4),
            "recall@100": round(float(np.mean([v["recall@100"] for v in per_q.values()])), 4),
            "latency_ms": _pct(latency[name]),
        }
    base = out["bm25"]["latency_ms"]
    for name in systems:
        lat = out[name]["latency_ms"]
        out[name]["ratio_vs_bm25"] = {
            "p50": round(lat["p50"] / base["p50"], 3),
            "p99": round(lat["p99"] / base["p99"], 3),
        }
    for name in ("sparse", "splade"):
        if f"{name}/native" not in runs:
            continue
        nat, luc = runs[f"{name}/native"], runs[f"{name}/lucene"]
        overlap = [
            len({d for d, _ in nat[q][:10]} & {d for d, _ in luc[q][:10]})
            / max(1, min(10, len(nat[q])))
            for q in nat
        ]
        out[name] = {
            "top10_agreement": round(float(np.mean(overlap)), 4),
            "ndcg_exact_minus_quantized": round(
                out[f"{name}/native"]["ndcg@10"] - out[f"{name}/lucene"]["ndcg@10"], 4
            ),
        }
    return out


def client(args: argparse.Namespace) -> dict[str, Any]:
    """Client-side latency (the paper's measure): one real ``twofold serve``, one keep-alive
    HTTP client, ``POST /v1/search`` with pipeline ``bm25`` and ``sparse`` for the same
    queries, back to back in a rotating order, one request in flight at a time."""
    import httpx
    from bench_load import load_queries, serving

    queries = load_queries(Path(args.dataset), args.split, None)
    names = args.pipelines.split(",")
    latency: dict[str, list[float]] = {n: [] for n in names}
    options = ["--sparse-engine", args.engine, "--search-threads", "1"]
    with serving(Path(args.collection), *options) as base, httpx.Client(base_url=base) as http:

        def one(name: str, text: str) -> float:
            body = {"query": text, "k": args.k, "pipeline": name}
            t0 = time.perf_counter()
            resp = http.post("/v1/search", json=body)
            elapsed = (time.perf_counter() - t0) * 1000.0
            resp.raise_for_status()
            return elapsed

        for i in range(args.warmup):  # JIT, page cache, connection
            for name in names:
                one(name, queries[i % len(queries)])
        for _ in range(args.repeat):
            for i, text in enumerate(queries):
                for name in names[i % len(names) :] + names[: i % len(names)]:
                    latency[name].append(one(name, text))
    out: dict[str, Any] = {
        "collection": args.collection,
        "engine": args.engine,
        "k": args.k,
        "requests_per_pipeline": len(latency[names[0]]),
        "loadavg_1m_5m_15m_end": [round(x, 2) for x in os.getloadavg()],
    }
    base_lat = _pct(latency[names[0]])
    for name in names:
        lat = _pct(latency[name])
        out[name] = {
            "latency_ms": lat,
            f"ratio_vs_{names[0]}": {
                "p50": round(lat["p50"] / base_lat["p50"], 3),
                "p99": round(lat["p99"] / base_lat["p99"], 3),
            },
        }
    return out


def matmul_gflops(threads: int, n: int = 2048, reps: int = 5) -> float:
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    t0 = time.perf_counter()
    for _ in range(reps):
        torch.mm(a, b)
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def encode(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from twofold.indexing.corpus import read_corpus
    from twofold.indexing.sparse.build import doc_text
    from twofold.models.sparse import MLMSparseEncoder, mlm_flops_per_token

    threads = len(os.sched_getaffinity(0))
    docs = []
    for doc in read_corpus(Path(args.dataset) / "corpus.jsonl"):
        docs.append(doc_text(doc))
        if len(docs) >= args.docs:
            break
    enc = MLMSparseEncoder(args.model, max_length=args.max_length, token_budget=args.budget)
    torch.set_num_threads(threads)
    ids = enc.tokenize(docs, args.max_length)
    tokens = sum(len(x) for x in ids)
    enc.encode_ids(ids[:64], args.batch_size)  # warm-up
    rates, speeds = [], []
    for _ in range(args.rounds):  # alternate: the same load affects both measurements
        rates.append(matmul_gflops(threads))
        t0 = time.perf_counter()
        enc.encode_ids(ids, args.batch_size)
        speeds.append(time.perf_counter() - t0)
    rates.append(matmul_gflops(threads))
    seconds = float(np.median(speeds))
    flops = mlm_flops_per_token(enc) * tokens
    achieved = flops / seconds / 1e9
    peak = float(np.median(rates))
    return {
        "model": args.model,
        "docs": len(docs),
        "tokens": tokens,
        "threads": threads,
        "max_length": args.max_length,
        "batch_size": args.batch_size,
        "docs_per_s": round(len(docs) / seconds, 2),
        "tokens_per_s": round(tokens / seconds, 1),
        "gflop_per_doc": round(flops / len(docs) / 1e9, 4),
        "achieved_gflops": round(achieved, 1),
        "matmul_gflops_median": round(peak, 1),
        "matmul_gflops_all": [round(r, 1) for r in rates],
        "fraction_of_matmul": round(achieved / peak, 3),
        "matmul_bound_docs_per_s": round(peak * 1e9 * len(docs) / flops, 1),
        "loadavg_1m": os.getloadavg()[0],
    }


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("engines")
    e.add_argument("collection")
    e.add_argument("--dataset", required=True)
    e.add_argument("--split", default="test")
    e.add_argument("--k", type=int, default=100)
    e.add_argument(
        "--query-min-idf",
        type=float,
        action="append",
        default=[],
        help="also run sparse with query tokens of idf below this dropped (repeatable)",
    )
    e.add_argument(
        "--retrievers",
        default="sparse,splade",
        help="sparse sub-indexes to time beside bm25 (splade's MLM query encoder keeps "
        "torch threads busy between queries: leave it out for a clean sparse-vs-bm25 ratio)",
    )
    e.add_argument("--repeat", type=int, default=1, help="passes over the queries")
    e.add_argument(
        "--warmup", type=int, default=1000, help="untimed queries per system first (JIT)"
    )
    e.add_argument("--out")
    h = sub.add_parser("client", help="HTTP latency of pipelines through a real server")
    h.add_argument("collection")
    h.add_argument("--dataset", required=True)
    h.add_argument("--split", default="test")
    h.add_argument("--k", type=int, default=10)
    h.add_argument("--engine", default="lucene", choices=["native", "lucene"])
    h.add_argument("--pipelines", default="bm25,sparse", help="first one is the baseline")
    h.add_argument("--repeat", type=int, default=3)
    h.add_argument("--warmup", type=int, default=1000)
    h.add_argument("--out")
    c = sub.add_parser("encode")
    c.add_argument("--dataset", required=True)
    c.add_argument("--model", default="splade-tiny")
    c.add_argument("--docs", type=int, default=512)
    c.add_argument("--max-length", type=int, default=256)
    c.add_argument("--batch-size", type=int, default=32)
    c.add_argument("--budget", type=int, default=512)
    c.add_argument("--rounds", type=int, default=3)
    c.add_argument("--out")
    args = p.parse_args()
    commands = {"engines": engines, "client": client, "encode": encode}
    result = commands[args.cmd](args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
