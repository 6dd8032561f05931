"""Sparse engines on synthetic splade-tiny-like corpora (``bench/synthetic.py``, seed 0).

For each N: the corpus is written as shards, then each build stage runs in its own
child process (so its peak RSS is its own): ``postings`` (streaming merge, the native
engine), ``seismic``, ``lucene`` (impact export + Anserini). Then every engine answers
the same queries in this process: p50/p99 latency (one thread, after 5 warm-up
queries) and top-10 overlap with the exact (native) engine.

    python bench/bench_sparse_synthetic.py --docs 10000 100000 \
        --out bench/results/sparse-synthetic.json                      # make bench
    python bench/bench_sparse_synthetic.py --docs 1000000 \
        --out bench/results/sparse-synthetic-1m.json                   # make bench-1m

``--smoke`` runs 1,000 documents and 10 queries (what ``make bench-smoke`` does).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import synthetic  # noqa: E402

SHARD = 20_000


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def stage(name: str, out: Path, n_shards: int, n_docs: int) -> dict[str, Any]:
    """One build stage, run in a child process (``--stage``)."""
    from twofold.indexing.sparse.index import iter_shards, write_lucene, write_postings
    from twofold.indexing.sparse.seismic import SeismicParams, build_seismic

    t0 = time.perf_counter()
    if name == "postings":
        write_postings(out, n_shards, synthetic.VOCAB)
        size = _dir_bytes(out / "postings") + _dir_bytes(out / "forward")
    elif name == "seismic":
        build_seismic(out, iter_shards(out, n_shards), synthetic.VOCAB, SeismicParams())
        size = _dir_bytes(out / "seismic")
    else:
        ids = [f"d{i}" for i in range(n_docs)]
        write_lucene(out, n_shards, ids, [f"t{j}" for j in range(synthetic.VOCAB)], 100.0)
        size = _dir_bytes(out / "lucene")
    seconds = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"build_seconds": round(seconds, 2), "peak_rss_bytes": rss, "disk_bytes": size}


def run_size(n: int, n_queries: int, engines: list[str], work: Path) -> dict[str, Any]:
    from twofold.indexing.sparse.index import (
        FORMAT_VERSION,
        SparseIndex,
        shard_path,
        write_doc_ids,
        write_shard,
        write_vocab,
    )

    out = work / f"n{n}"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    sample = None
    n_shards = 0
    for i, chunk in enumerate(synthetic.iter_docs(n, seed=0, chunk=SHARD)):
        write_shard(shard_path(out, i), chunk)
        n_shards = i + 1
        if sample is None:
            sample = chunk
    assert sample is not None
    gen_seconds = time.perf_counter() - t0
    write_doc_ids(out, [f"d{i}" for i in range(n)])
    write_vocab(out, [f"t{j}" for j in range(synthetic.VOCAB)])
    builds: dict[str, Any] = {}
    stages = ["postings"] + [e for e in ("seismic", "lucene") if e in engines]
    for name in stages:
        cmd = [sys.executable, __file__, "--stage", name, "--dir", str(out)]
        cmd += ["--shards", str(n_shards), "--docs", str(n)]
        done = subprocess.run(cmd, check=True, capture_output=True, text=True)
        builds[name] = json.loads(done.stdout.strip().splitlines()[-1])
    entry = {"format_version": FORMAT_VERSION, "kind": "splade"}
    index = SparseIndex(out, entry)
    queries = synthetic.queries(sample, n_queries, seed=1)  # sources among the first docs
    exact = [index.engine("native").search(q, w, 10) for q, w in queries]
    result: dict[str, Any] = {
        "docs": n,
        "postings": int(np.load(out / "postings" / "indptr.npy")[-1]),
    }
    result["generate_seconds"] = round(gen_seconds, 2)
    for name in ["native", *[e for e in ("seismic", "lucene") if e in engines]]:
        engine = index.engine(name)
        for q, w in queries[:5]:
            engine.search(q, w, 10)
        times, overlaps = [], []
        for (q, w), ref in zip(queries, exact, strict=True):
            t = time.perf_counter()
            hits = engine.search(q, w, 10)
            times.append((time.perf_counter() - t) * 1000)
            overlaps.append(len({d for d, _ in hits} & {d for d, _ in ref}) / max(len(ref), 1))
        build = builds["postings" if name == "native" else name]
        result[name] = {
            **build,
            "p50_ms": round(float(np.median(times)), 3),
            "p99_ms": round(float(np.percentile(times, 99)), 3),
            "iqr_ms": round(float(np.subtract(*np.percentile(times, [75, 25]))), 3),
            "top10_overlap": round(float(np.mean(overlaps)), 4),
        }
        print(n, name, result[name], flush=True)
    shutil.rmtree(out, ignore_errors=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--engines", default="seismic,lucene")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--work", type=Path, default=None, help="scratch directory")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--stage")
    ap.add_argument("--dir", type=Path)
    ap.add_argument("--shards", type=int)
    args = ap.parse_args()
    if args.stage:
        print(json.dumps(stage(args.stage, args.dir, args.shards, args.docs[0])))
        return
    if args.smoke:
        args.docs, args.queries = [1000], 10
    engines = [e for e in args.engines.split(",") if e]
    work = args.work or Path(tempfile.mkdtemp(prefix="twofold-bench-"))
    results = [run_size(n, args.queries, engines, work) for n in args.docs]
    report = {
        "benchmark": "sparse-synthetic",
        "command": "python " + " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, "
        f"{len(__import__('os').sched_getaffinity(0))} cores",
        "corpus": "bench/synthetic.py seed 0 (topical Zipfian, ~250 terms/doc, ~20/query)",
        "results": results,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
