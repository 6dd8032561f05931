"""The limit of exact sparse search: postings scored per second by the native engine,
against the machine's memory bandwidth measured in the same run (issue 12, "the limit").

The native engine scores term-at-a-time over the query terms' posting lists: for each
posting it reads a doc ordinal (int32) and a weight (float32), 8 bytes, and updates one
float32 accumulator at a scattered address. If reading the postings were the bound, it
would run at the machine's read bandwidth. Measured here, one thread:

- ``read``: numpy summing a float32 array far larger than the caches (GB/s streamed);
- ``native``: the engine's ``scores`` (every document's exact score, no top-k) on
  synthetic corpora (``bench/synthetic.py``, seed 0): postings touched per query (the
  query terms' posting list lengths) over its time; beside it, interleaved query by
  query, the numpy loop it replaced (``numpy_loop``) and the whole ``search`` (top 10).

Reported: postings/s and the bytes they move (8 a posting) as a share of ``read``, and
the speedup of ``scores`` over the numpy loop, all from the same run.

    .venv/bin/python bench/bench_sparse_limit.py --docs 100000 1000000 \\
        --out bench/results/sparse-limit.json
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import synthetic  # noqa: E402
from bench.common import provenance, write_report  # noqa: E402
from twofold.indexing.sparse.index import (  # noqa: E402
    NativeEngine,
    shard_path,
    write_postings,
    write_shard,
)

BYTES_PER_POSTING = 8  # int32 doc ordinal + float32 weight
READ_BYTES = 1 << 30  # 1 GiB: far past the last-level cache


def _median_rate(fn: Any, amount: float, repeats: int) -> float:
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        rates.append(amount / (time.perf_counter() - t))
    return float(np.median(rates))


def machine_rates(repeats: int) -> dict[str, float]:
    big = np.random.default_rng(0).random(READ_BYTES // 4, dtype=np.float32)
    return {
        "read_bytes_per_s": _median_rate(lambda: big.sum(dtype=np.float32), READ_BYTES, repeats)
    }


def native_rate(n: int, n_queries: int, work: Path) -> dict[str, Any]:
    shards = 0
    sample = None
    for i, chunk in enumerate(synthetic.iter_docs(n, seed=0, chunk=20_000)):
        write_shard(shard_path(work, i), chunk)
        shards = i + 1
        sample = chunk if sample is None else sample
    assert sample is not None
    write_postings(work, shards, synthetic.VOCAB)
    engine = NativeEngine(work, [str(i) for i in range(n)])
    queries = synthetic.queries(sample, n_queries, seed=1)
    lengths = np.diff(np.asarray(engine.indptr))

    def numpy_loop(ids: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """The engine's scoring until this session: one numpy update a posting list."""
        acc = np.zeros(n, dtype=np.float32)
        for j, w in zip(ids.tolist(), weights.tolist(), strict=True):
            s, e = int(engine.indptr[j]), int(engine.indptr[j + 1])
            acc[engine.docs[s:e]] += np.float32(w) * engine.weights[s:e]
        return acc

    systems = {
        "scores": engine.scores,
        "numpy_loop": numpy_loop,
        "search": lambda q, w: engine.search(q, w, 10),
    }
    for q, w in queries[:5]:
        for f in systems.values():
            f(q, w)
    times: dict[str, list[float]] = {name: [] for name in systems}
    names = list(systems)
    for i, (q, w) in enumerate(queries):  # interleaved, in a rotating order
        for name in names[i % 3 :] + names[: i % 3]:
            t = time.perf_counter()
            systems[name](q, w)
            times[name].append(time.perf_counter() - t)
    touched = np.asarray([lengths[q].sum() for q, _ in queries], dtype=np.float64)
    p50 = {name: float(np.median(t)) for name, t in times.items()}
    return {
        "docs": n,
        "postings_touched_per_query": round(float(touched.mean())),
        "p50_ms": {name: round(v * 1000, 3) for name, v in p50.items()},
        "postings_per_s": float(np.median(touched / np.asarray(times["scores"]))),
        "numpy_loop_postings_per_s": float(np.median(touched / np.asarray(times["numpy_loop"]))),
        "scores_speedup_over_numpy_loop": round(p50["numpy_loop"] / p50["scores"], 2),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--docs", type=int, nargs="+", default=[100_000])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    before = machine_rates(args.repeats)
    rows = []
    for n in args.docs:
        with tempfile.TemporaryDirectory(prefix="sparse-limit-") as work:
            rows.append(native_rate(n, args.queries, Path(work)))
    after = machine_rates(args.repeats)
    read = float(np.median([before["read_bytes_per_s"], after["read_bytes_per_s"]]))
    for row in rows:
        row["bytes_share_of_read_bandwidth"] = round(
            row["postings_per_s"] * BYTES_PER_POSTING / read, 3
        )
    report = {
        "benchmark": "sparse-limit",
        **provenance(),
        "machine_rates": {"before": before, "after": after},
        "read_bytes_per_s": read,
        "results": rows,
        "load_average_end": os.getloadavg(),
    }
    write_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
