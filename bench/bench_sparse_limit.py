"""The limit of exact sparse search: postings scored per second by the native engine,
against the machine's memory bandwidth measured in the same run (issue 12, "the limit").

The native engine scores term-at-a-time over the query terms' posting lists: for each
posting it reads a doc ordinal (int32) and a weight (float32), 8 bytes, and updates one
float32 accumulator at a scattered address. So its ceiling is set by memory traffic.
Measured here, one thread, interleaved round by round:

- ``read``: numpy summing a float32 array far larger than the caches (GB/s streamed);
- ``gather-add``: ``acc[idx] += w * v`` over sorted random ``idx`` into a 1M-entry
  accumulator: numpy's update of one posting list, which the engine ran until it moved
  to one gathered scipy CSC product (postings/s, no index files in the way);
- ``native``: the engine on synthetic corpora (``bench/synthetic.py``, seed 0), postings
  touched per query (the query terms' posting list lengths) over its time.

Reported: postings/s and the bytes they move (8 a posting) as a share of ``read``.

    .venv/bin/python bench/bench_sparse_limit.py --docs 100000 --out bench/results/sparse-limit.json
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
    rng = np.random.default_rng(0)
    big = rng.random(READ_BYTES // 4, dtype=np.float32)
    n_acc, n_post = 1_000_000, 300_000
    acc = np.zeros(n_acc, dtype=np.float32)
    idx = np.unique(rng.integers(0, n_acc, n_post)).astype(np.int32)  # sorted, as a list
    n_post = len(idx)
    val = rng.random(n_post, dtype=np.float32)
    read = _median_rate(lambda: big.sum(dtype=np.float32), READ_BYTES, repeats)

    def gather_add() -> None:
        acc[idx] += np.float32(0.5) * val

    gather = _median_rate(gather_add, n_post, 5 * repeats)
    return {"read_bytes_per_s": read, "gather_add_postings_per_s": gather}


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
    for q, w in queries[:5]:
        engine.search(q, w, 10)
    rates, times = [], []
    for q, w in queries:
        touched = int(lengths[q].sum())
        t = time.perf_counter()
        engine.search(q, w, 10)
        dt = time.perf_counter() - t
        times.append(dt * 1000)
        rates.append(touched / dt)
    touched_mean = float(np.mean([lengths[q].sum() for q, _ in queries]))
    return {
        "docs": n,
        "postings_touched_per_query": round(touched_mean),
        "p50_ms": round(float(np.median(times)), 3),
        "postings_per_s": float(np.median(rates)),
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
    gather = float(
        np.median([before["gather_add_postings_per_s"], after["gather_add_postings_per_s"]])
    )
    for row in rows:
        row["bytes_share_of_read_bandwidth"] = round(
            row["postings_per_s"] * BYTES_PER_POSTING / read, 3
        )
        row["share_of_gather_add_rate"] = round(row["postings_per_s"] / gather, 3)
    report = {
        "benchmark": "sparse-limit",
        **provenance(),
        "machine_rates": {"before": before, "after": after},
        "read_bytes_per_s": read,
        "gather_add_postings_per_s": gather,
        "results": rows,
        "load_average_end": os.getloadavg(),
    }
    write_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
