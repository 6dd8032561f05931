"""HNSW (and optionally IVF-PQ) against exact flat search: recall@10 and query throughput.

Two sources of vectors:

- ``--collection DIR --dataset BEIR_DIR``: the stored document vectors of a built
  collection's ``dense`` sub-index and the split's queries encoded by its encoder; the
  nDCG@10 of both indexes is reported too.
- ``--synthetic N``: ``N`` clustered unit vectors (``--dim``, ``--clusters``, ``--seed``):
  cluster centres uniform on the sphere, each point = centre + ``--spread`` times a
  Gaussian of unit expected norm, normalized; queries drawn the same way.

The approximate index is built by ``dense.index.build_faiss`` with the parameters the
build would use (``index_params``), so what is measured is what ``twofold index build
--dense-index hnsw`` stores. Throughput is measured one query at a time (the service's
path) and as one batch. recall@10 = |top-10 approx ∩ top-10 flat| / 10, averaged, with
k=100 asked of both (the pipeline's retrieval depth).

    OPENBLAS_CORETYPE=SkylakeX .venv/bin/python bench/bench_dense_hnsw.py --synthetic 200000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from twofold.indexing.buildctx import DenseOptions
from twofold.indexing.dense.index import build_faiss, index_params


def synthetic(
    n: int, dim: int, clusters: int, spread: float, seed: int, stream: int = 0
) -> np.ndarray:
    """``n`` points around the ``clusters`` centres fixed by ``seed``; ``stream`` picks an
    independent sample (0: documents, 1: queries)."""
    centres = np.random.default_rng(seed).standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    rng = np.random.default_rng([seed, stream])
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 50_000):
        m = min(50_000, n - start)
        noise = rng.standard_normal((m, dim)).astype(np.float32) * (spread / np.sqrt(dim))
        x = centres[rng.integers(0, clusters, size=m)] + noise
        out[start : start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def timed_search(index: Any, queries: np.ndarray, k: int, threads: int) -> dict[str, Any]:
    """Queries/s one at a time on one thread (OpenMP threads only spin on one query on a
    busy machine), then as one batch on ``threads`` threads."""
    faiss.omp_set_num_threads(1)
    t0 = time.perf_counter()
    for q in queries:
        index.search(q[None], k)
    single = len(queries) / (time.perf_counter() - t0)
    faiss.omp_set_num_threads(threads)
    t0 = time.perf_counter()
    _, ids = index.search(queries, k)
    batch = len(queries) / (time.perf_counter() - t0)
    return {"qps_single": single, "qps_batch": batch, "ids": ids}


def recall_at(approx: np.ndarray, exact: np.ndarray, k: int) -> float:
    hits = [len(set(a[:k]) & set(e[:k])) for a, e in zip(approx, exact, strict=True)]
    return float(np.mean(hits)) / k


def beir_vectors(collection: Path, dataset: Path, split: str) -> tuple[Any, ...]:
    from twofold.indexing.collection import Collection
    from twofold.indexing.corpus import BeirDataset

    col = Collection(collection)
    index = col.index("dense")
    data = BeirDataset(dataset)
    qrels = data.qrels(split)
    queries = data.queries(split, qrels)
    qvecs = index.encode_queries([q.text for q in queries])
    return np.asarray(index.vectors), qvecs, col.docs.ids, queries, qrels


def ndcg10(ids: np.ndarray, doc_ids: list[str], queries: list[Any], qrels: Any) -> float:
    from twofold.search.evaluate import score_run

    run = {
        q.query_id: [(doc_ids[o], 0.0) for o in row if o >= 0 and doc_ids[o] != q.query_id]
        for q, row in zip(queries, ids, strict=True)
    }
    per_query = score_run(qrels, run)
    return float(np.mean([m["ndcg@10"] for m in per_query.values()]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--collection", type=Path)
    p.add_argument("--dataset", type=Path)
    p.add_argument("--split", default="test")
    p.add_argument("--synthetic", type=int)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--clusters", type=int, default=1000)
    p.add_argument("--spread", type=float, default=1.0)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kinds", default="hnsw", help="comma list of hnsw,ivfpq")
    p.add_argument("--ef-search", type=int, default=None)
    p.add_argument("--threads", type=int, default=1, help="FAISS threads for build and batch")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    faiss.omp_set_num_threads(args.threads)
    dense = (
        DenseOptions() if args.ef_search is None else DenseOptions(hnsw_ef_search=args.ef_search)
    )
    beir: tuple[Any, ...] | None = None
    if args.synthetic:
        x = synthetic(args.synthetic, args.dim, args.clusters, args.spread, args.seed)
        q = synthetic(args.queries, args.dim, args.clusters, args.spread, args.seed, stream=1)
        source = {
            "synthetic": args.synthetic,
            "dim": args.dim,
            "clusters": args.clusters,
            "spread": args.spread,
            "seed": args.seed,
        }
    else:
        beir = beir_vectors(args.collection, args.dataset, args.split)
        x, q = beir[0], beir[1]
        source = {"collection": str(args.collection), "dataset": str(args.dataset)}
    result: dict[str, Any] = {
        "source": source,
        "docs": len(x),
        "queries": len(q),
        "threads": args.threads,
    }
    flat = build_faiss(x, "flat", {}, gpu=False)
    exact = timed_search(flat, q, 100, args.threads)
    result["flat"] = {k: round(v, 1) for k, v in exact.items() if k != "ids"}
    if beir is not None:
        result["flat"]["ndcg@10"] = round(ndcg10(exact["ids"], beir[2], beir[3], beir[4]), 4)
    print(f"flat: {result['flat']}", file=sys.stderr, flush=True)
    for kind in args.kinds.split(","):
        params = index_params(kind, len(x), x.shape[1], dense)
        t0 = time.perf_counter()
        index = build_faiss(x, kind, params, gpu=False)
        build_s = time.perf_counter() - t0
        print(f"{kind}: built in {build_s:.1f} s", file=sys.stderr, flush=True)
        approx = timed_search(index, q, 100, args.threads)
        entry: dict[str, Any] = {
            "params": params,
            "build_s": round(build_s, 1),
            "recall@10_vs_flat": round(recall_at(approx["ids"], exact["ids"], 10), 4),
            "qps_single": round(approx["qps_single"], 1),
            "qps_batch": round(approx["qps_batch"], 1),
            "speedup_single": round(approx["qps_single"] / exact["qps_single"], 2),
            "speedup_batch": round(approx["qps_batch"] / exact["qps_batch"], 2),
        }
        if beir is not None:
            entry["ndcg@10"] = round(ndcg10(approx["ids"], beir[2], beir[3], beir[4]), 4)
        result[kind] = entry
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
