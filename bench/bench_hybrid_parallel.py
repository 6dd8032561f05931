"""Hybrid latency against its slowest single retriever (issue 12: "hybrid p50 <= 1.3x the
slowest single retriever's p50, because retrievers run in parallel").

In one process, on one collection, per query and in an order that rotates from query to
query (so that the machine's load falls on every system alike):

- each single-retriever pipeline (``bm25``, ``sparse``, ``splade``, ``dense``: what a user
  calls, at ``k``);
- ``hybrid`` as served: its retrievers in at most one lane per core, dearest first
  (``twofold.search.lanes``), each fetching the fusion depth;
- ``hybrid-serial``: the same pipeline with its retrievers run one after another (one
  lane, the pool swapped for a one-thread pool), the baseline that parallel retrieval
  must beat;
- ``hybrid-lane-each``: the same pipeline with a lane per retriever, every one on a
  thread of its own at once (dearest first, the first on the calling thread); before
  session 13 every retriever had a pool thread of its own, in the pipeline's order;
- the same single pipelines and ``hybrid`` with the encoders' TorchScript traces turned
  off (``-eager``: ``twofold.models.traced``), the query path as it was before them.

Reports medians with p10/q1/q3/p90, the ratio of hybrid's p50 to the slowest single
pipeline's p50 and to hybrid-serial's, each retriever's own time inside hybrid, and the
load average before and after. ``paired``: what two cores give two tasks at once, the
limit of running retrievers side by side: the two query encoders (``dense``, ``splade``)
each alone and both started together on two threads, and as a control a float32 matmul
of fixed size, one alone against two at once; each as the p50 of one call, so a ratio
of 1.0 means the second core came for free. Each task has one torch thread there,
whatever ``--torch-threads`` says, and the encoders run as served (traced):

    OPENBLAS_CORETYPE=SkylakeX .venv/bin/python bench/bench_hybrid_parallel.py build/scifact \\
        --dataset ../shared/datasets/scifact --rounds 2 \\
        --out bench/results/hybrid-parallel-scifact.json

``--fusion rrf`` fuses with unweighted RRF instead of the collection's tuned fusion, so
that every retriever runs (a tuned fusion may weigh one 0, and then it is not run).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `twofold` does at query time


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import collection_args, provenance, spread, write_report  # noqa: E402
from twofold.core.types import Query  # noqa: E402
from twofold.indexing.collection import Collection  # noqa: E402
from twofold.indexing.corpus import BeirDataset  # noqa: E402
from twofold.models.threads import set_torch_threads  # noqa: E402
from twofold.models.traced import TracedForward  # noqa: E402
from twofold.search import pipeline as pipeline_module  # noqa: E402
from twofold.search.fusion import FusionConfig  # noqa: E402
from twofold.search.pipeline import build_pipeline, collection_retrievers  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    collection_args(ap)
    ap.add_argument(
        "--torch-threads",
        type=int,
        default=None,
        help="torch intra-op threads, set once as the service's --torch-threads does "
        "(default: torch's, the number of cores)",
    )
    ap.add_argument(
        "--fusion",
        choices=("collection", "rrf"),
        default="collection",
        help="hybrid's fusion: the collection's own (tuned where it was; a retriever it "
        "weighs 0 is not run), or unweighted RRF, so that every retriever runs",
    )
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    threads = set_torch_threads(args.torch_threads)

    collection = Collection(args.collection)
    singles = collection_retrievers(collection)
    ds = BeirDataset(args.dataset)
    queries: list[Query] = ds.queries(args.split)[: args.max_queries]
    hybrid = build_pipeline(collection, "hybrid")
    if args.fusion == "rrf":
        hybrid.fuser = FusionConfig("rrf")
    lanes = hybrid.lanes.width  # the cores: retrievers run in this many lanes at most
    pipelines = {name: build_pipeline(collection, name) for name in singles}
    parallel_pool = pipeline_module._retrieve_pool()
    serial_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="twofold-serial")
    eager = [f"{s}-eager" for s in singles]
    systems = [*singles, "hybrid", "hybrid-serial", "hybrid-lane-each", *eager, "hybrid-eager"]
    traces: list[TracedForward] = []

    def run(system: str, query: Query) -> tuple[float, dict[str, float]]:
        for forward in traces:  # the encoders' traces on, or off for an -eager system
            forward.enabled = not system.endswith("-eager")
        system = system.removesuffix("-eager")
        if system.startswith("hybrid"):
            serial = system == "hybrid-serial"
            pool = serial_pool if serial else parallel_pool
            pipeline_module._retrieve_pool = lambda: pool  # type: ignore[assignment]
            # one lane: one after another; a lane each: every retriever on its own thread
            width = {"hybrid-serial": 1, "hybrid-lane-each": len(singles)}
            hybrid.lanes.width = width.get(system, lanes)
            t0 = time.perf_counter()
            outcome = hybrid.run(query, args.k)
            ms = (time.perf_counter() - t0) * 1000
            hybrid.lanes.width = lanes
            inner = {n: v for n, v in outcome.timings_ms.items() if n.startswith("retrieve.")}
            return ms, inner
        t0 = time.perf_counter()
        pipelines[system].search(query, args.k)
        return (time.perf_counter() - t0) * 1000, {}

    for q in queries[:20]:  # warm-up: JVM JIT, encoders (their traces), memory maps
        for s in systems:
            run(s, q)
    traces = [o for o in gc.get_objects() if isinstance(o, TracedForward) and o.active]
    load_before = os.getloadavg()
    times: dict[str, list[float]] = {s: [] for s in systems}
    inner: dict[str, list[float]] = {}
    i = 0
    for _ in range(args.rounds):
        for q in queries:
            order = systems[i % len(systems) :] + systems[: i % len(systems)]
            i += 1
            for s in order:
                ms, parts = run(s, q)
                times[s].append(ms)
                if s == "hybrid":  # (not hybrid-eager)
                    for n, v in parts.items():
                        inner.setdefault(n, []).append(v)
    load_after = os.getloadavg()
    pipeline_module._retrieve_pool = lambda: parallel_pool  # type: ignore[assignment]

    stats = {s: spread(v) for s, v in times.items()}
    slowest = max(singles, key=lambda s: stats[s]["p50"])
    slowest_eager = max(eager, key=lambda s: stats[s]["p50"])
    report: dict[str, Any] = {
        **provenance(),
        "collection": str(args.collection),
        "queries": len(queries),
        "rounds": args.rounds,
        "k": args.k,
        "torch_threads": threads,
        "lanes": lanes,
        "retrievers": singles,
        "hybrid_fusion": hybrid.fuser.describe() if isinstance(hybrid.fuser, FusionConfig) else "",
        "latency_ms": stats,
        "hybrid_inner_retrieve_ms": {n: spread(v) for n, v in inner.items()},
        "slowest_single": slowest,
        "ratio_hybrid_to_slowest_single_p50": round(
            stats["hybrid"]["p50"] / stats[slowest]["p50"], 3
        ),
        "traced_encoders": len(traces),
        "slowest_single_eager": slowest_eager,
        "ratio_hybrid_eager_to_slowest_single_eager_p50": round(
            stats["hybrid-eager"]["p50"] / stats[slowest_eager]["p50"], 3
        ),
        "ratio_hybrid_to_lane_each_p50": round(
            stats["hybrid"]["p50"] / stats["hybrid-lane-each"]["p50"], 3
        ),
        "ratio_hybrid_to_serial_p50": round(
            stats["hybrid"]["p50"] / stats["hybrid-serial"]["p50"], 3
        ),
        "load_average": {"before": load_before, "after": load_after},
    }
    if "dense" in singles and "splade" in singles:
        for forward in traces:  # as served: the last system run may have left them off
            forward.enabled = True
        report["paired"] = paired(collection, queries, args.rounds, traced=len(traces))
    write_report(report, args.out)
    return 0


def paired(
    collection: Collection, queries: list[Query], rounds: int, traced: int
) -> dict[str, Any]:
    """p50 ms of each query encoder alone and with the other running on a second thread,
    and of a fixed float32 matmul alone and beside a copy of itself (see the docstring).
    Each task gets one torch thread, whatever ``--torch-threads`` says, so that two of
    them ask for the two cores and no more; ``traced``: encoders served by their traces."""
    import torch

    threads = torch.get_num_threads()
    set_torch_threads(1)
    try:
        return _paired(collection, queries, rounds) | {"torch_threads": 1, "traced": traced}
    finally:
        set_torch_threads(threads)


def _paired(collection: Collection, queries: list[Query], rounds: int) -> dict[str, Any]:
    import threading

    import torch

    from twofold.search.dense import DenseRetriever
    from twofold.search.sparse import SpladeRetriever

    dense, splade = DenseRetriever(collection), SpladeRetriever(collection)
    a, b = torch.randn(64, 1024), torch.randn(1024, 1024)
    tasks: dict[str, Callable[[Query], object]] = {
        "dense": lambda q: dense.encode([q.text]),
        "splade": lambda q: splade.encode_query(q),
        "matmul": lambda q: [a @ b for _ in range(8)],
    }

    def timed(name: str, q: Query, start: threading.Barrier | None) -> float:
        if start is not None:
            start.wait()
        t0 = time.perf_counter()
        tasks[name](q)
        return (time.perf_counter() - t0) * 1000

    pairs = {"dense": ("dense", "splade"), "matmul": ("matmul", "matmul")}
    times: dict[str, list[float]] = {}
    for q in queries[:10]:  # warm-up
        for name in tasks:
            timed(name, q, None)
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="twofold-pair") as pool:
        for _ in range(rounds):
            for i, q in enumerate(queries):
                for name in (
                    ("dense", "splade", "matmul") if i % 2 else ("matmul", "splade", "dense")
                ):
                    times.setdefault(f"{name} alone", []).append(timed(name, q, None))
                for first, second in pairs.values():
                    barrier = threading.Barrier(2)
                    one = pool.submit(timed, first, q, barrier)
                    two = pool.submit(timed, second, q, barrier)
                    label = "matmul" if first == "matmul" else "encoders"
                    times.setdefault(f"{first} paired ({label})", []).append(one.result())
                    if first != second:
                        times.setdefault(f"{second} paired ({label})", []).append(two.result())
                    else:
                        times[f"{first} paired ({label})"].append(two.result())
    stats = {k: spread(v) for k, v in times.items()}
    ratio = {
        name: round(stats[f"{name} paired ({label})"]["p50"] / stats[f"{name} alone"]["p50"], 3)
        for name, label in (("dense", "encoders"), ("splade", "encoders"), ("matmul", "matmul"))
    }
    return {"latency_ms": stats, "ratio_paired_to_alone_p50": ratio}


if __name__ == "__main__":
    sys.exit(main())
