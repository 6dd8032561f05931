"""bfloat16 against float32 for the query-path encoders (minilm-l6 for ``dense``,
splade-tiny for ``splade``) and for dense documents, in one run, on the collection's own
documents and the dataset's test queries.

1. Document encoding: docs/s of ``encode_docs`` on the first ``--docs`` documents
   (256 tokens, batch 32, every core), float32 and bfloat16 interleaved round by round,
   for minilm-l6 and for splade-tiny (whose builds stay float32: the speed only).
2. Query encoding: p50 of one ``encode_queries`` call of the dense encoder and of one
   ``encode_query`` of the splade one (traced, one torch thread, as
   ``bench_hybrid_parallel`` runs them), the two precisions interleaved query by query.
3. Agreement: cosine between the float32 and bfloat16 vectors of the same texts.
4. Quality and pipeline latency: ``twofold eval`` of ``dense``, ``splade`` and
   ``hybrid`` with
   float32 documents and float32 queries (``TWOFOLD_PRECISION=fp32``), float32 documents
   and bfloat16 queries, and bfloat16 documents and queries. The collection serves the
   rows of its own document precision; the others come from a hard-linked copy of it
   whose dense sub-index is rebuilt in the other precision (in ``--work``, kept between
   runs). The rebuild drops a dense query adapter, so the collection must have none
   (refused otherwise).

bfloat16 pays only where the CPU multiplies bfloat16 matrices natively (AMX or
AVX512-BF16); the report records whether this one has AMX (``amx``) and its machine line
names either. Where either is there, the splade float32 side runs its prefiltered head
(``models/sparse_head.py``).

    python bench/bench_precision.py build/scifact --dataset ../shared/datasets/scifact \\
        --work build/precision --out bench/results/precision-scifact.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import eval_summary, provenance, spread, twofold, write_report
from twofold.indexing.collection import Collection
from twofold.indexing.dense.adapter import FOLDER as ADAPTER_FOLDER
from twofold.indexing.rebuild import publish_rebuild, stage_rebuild
from twofold.models.dense import DenseEncoder
from twofold.models.device import cpu_has_amx, cpu_has_bf16_dot
from twofold.models.sparse import MLMSparseEncoder

PRECISIONS = ("fp32", "bf16")
PIPELINES = ("dense", "splade", "hybrid")


def doc_throughput(encoders: dict[str, Any], docs: list[str], rounds: int) -> dict[str, Any]:
    """docs/s of ``encode_docs``, the two encoders (first: the baseline) interleaved round
    by round; the ratio is the second's rate to the first's."""
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    names = list(encoders)
    rates: dict[str, list[float]] = {p: [] for p in encoders}
    for enc in encoders.values():  # warm-up
        enc.encode_docs(docs[:32])
    for r in range(rounds):
        for p in names[r % 2 :] + names[: r % 2]:
            t0 = time.perf_counter()
            encoders[p].encode_docs(docs)
            rates[p].append(len(docs) / (time.perf_counter() - t0))
    base, other = names
    return {
        "docs": len(docs),
        "torch_threads": torch.get_num_threads(),
        "docs_per_s": {p: spread(v, 1) for p, v in rates.items()},
        f"ratio_{other}_to_{base}": round(
            float(np.median(rates[other]) / np.median(rates[base])), 2
        ),
    }


def query_latency(
    encoders: dict[str, Any], queries: list[str], encode: Callable[[Any, str], Any]
) -> dict[str, Any]:
    """``encode(encoder, query)`` timed, the two encoders (first: the baseline)
    interleaved query by query."""
    import torch

    torch.set_num_threads(1)
    for enc in encoders.values():  # past the eager calls: the traces serve from here on
        for q in queries[:5]:
            encode(enc, q)
    names = list(encoders)
    ms: dict[str, list[float]] = {p: [] for p in encoders}
    for i, q in enumerate(queries):
        for p in names[i % 2 :] + names[: i % 2]:
            t0 = time.perf_counter()
            encode(encoders[p], q)
            ms[p].append((time.perf_counter() - t0) * 1000.0)
    base, other = names
    return {
        "queries": len(queries),
        "torch_threads": 1,
        "traced": {p: bool(e._forward.active) for p, e in encoders.items()},
        "latency_ms": {p: spread(v) for p, v in ms.items()},
        f"ratio_{other}_to_{base}_p50": round(float(np.median(ms[other]) / np.median(ms[base])), 3),
    }


def agreement(encoders: dict[str, DenseEncoder], texts: list[str], side: str) -> dict[str, float]:
    encode = f"encode_{side}"
    a, b = (getattr(encoders[p], encode)(texts) for p in PRECISIONS)
    cos = np.sum(a * b, axis=1)
    return {"min": round(float(cos.min()), 6), "median": round(float(np.median(cos)), 6)}


def doc_precision(collection: Path) -> str:
    """The precision ``collection``'s dense documents were encoded in (fp32 before the
    manifest recorded it)."""
    return str(Collection(collection).manifest.sub_indexes["dense"].get("precision", "fp32"))


def with_precision(collection: Path, work: Path, precision: str) -> Path:
    """``collection`` if its dense documents are in ``precision``, else a hard-linked copy
    of it (kept in ``work``) with its dense sub-index rebuilt in that precision."""
    if doc_precision(collection) == precision:
        return collection
    copy = work / f"collection-{precision}"
    if not (copy / "manifest.json").is_file():
        shutil.rmtree(copy, ignore_errors=True)
        work.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-al", str(collection.resolve()), str(copy)], check=True)
        stage_rebuild(copy, "dense", {"precision": precision}, False)
        publish_rebuild(copy)
    return copy


def evaluate(
    collection: Path, dataset: Path, queries: str, out: Path, limit: int | None = None
) -> dict[str, Any]:
    """``twofold eval`` with the query side in ``queries`` precision (the first ``limit``
    test queries; None: all)."""
    argv = ["eval", str(collection), "--dataset", str(dataset)]
    argv += [] if limit is None else ["--max-queries", str(limit)]
    argv += ["--pipeline", ",".join(PIPELINES), "--out", str(out)]
    twofold(*argv, env={**os.environ, "TWOFOLD_PRECISION": queries})
    return eval_summary(out, PIPELINES)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("collection", type=Path, help="a collection with a dense sub-index")
    ap.add_argument("--dataset", type=Path, required=True, help="its BEIR dataset (test split)")
    ap.add_argument("--work", type=Path, required=True, help="where the bfloat16 copy is kept")
    ap.add_argument("--docs", type=int, default=256, help="documents to time (default 256)")
    ap.add_argument("--queries", type=int, default=150, help="queries to time (default 150)")
    ap.add_argument("--rounds", type=int, default=4, help="document rounds (default 4)")
    ap.add_argument("--no-eval", action="store_true", help="timings and agreement only")
    ap.add_argument("--eval-queries", type=int, help="evaluate the first N test queries (all)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    col = Collection(args.collection)
    entry = col.manifest.sub_indexes["dense"]
    if (args.collection / ADAPTER_FOLDER).exists():
        raise SystemExit(f"{args.collection} has a dense query adapter: its rebuild drops it")
    model = str(args.collection / "dense" / "model")
    settings = {k: entry[k] for k in ("max_length", "pooling", "query_prefix", "doc_prefix")}
    encoders = {p: DenseEncoder(model, precision=p, **settings) for p in PRECISIONS}
    docs = [d.contents for d in itertools.islice(col.docs, args.docs)]
    queries = [
        json.loads(line)["text"]
        for line in (args.dataset / "queries.jsonl").read_text().splitlines()[: args.queries]
    ]
    report: dict[str, Any] = {
        "benchmark": "dense encoder precision: bfloat16 against float32",
        **provenance(),
        "amx": cpu_has_amx(),
        "model": str(entry["model"]),
        "collection": str(args.collection),
        "doc_encoding": doc_throughput(encoders, docs, args.rounds),
        "query_encoding": query_latency(encoders, queries, lambda e, q: e.encode_queries([q])),
        "cosine": {"docs": agreement(encoders, docs, "docs")}
        | {"queries": agreement(encoders, queries, "queries")},
    }
    if "splade" in col.manifest.sub_indexes:
        splade = str(args.collection / "splade" / "model")
        sparse = {p: MLMSparseEncoder(splade, precision=p) for p in PRECISIONS}
        report["splade_query_encoding"] = query_latency(
            sparse, queries, lambda e, q: e.encode_query(q)
        )
        # documents too, though builds encode them in float32 (not measured for quality)
        report["splade_doc_encoding"] = doc_throughput(sparse, docs, args.rounds)
        if cpu_has_bf16_dot():  # the float32 head: plain against behind its bfloat16 bound
            heads = {
                "plain": MLMSparseEncoder(splade, precision="fp32", prefilter=False),
                "prefiltered": sparse["fp32"],
            }
            report["splade_head"] = {
                "queries": query_latency(heads, queries, lambda e, q: e.encode_query(q)),
                "docs": doc_throughput(heads, docs, args.rounds),
            }
    if not args.no_eval:
        fp32, bf16 = (with_precision(args.collection, args.work, p) for p in PRECISIONS)
        settings = {  # documents, queries -> (collection, query precision)
            "fp32 docs, fp32 queries": (fp32, "fp32"),
            "fp32 docs, bf16 queries": (fp32, "bf16"),
            "bf16 docs, bf16 queries": (bf16, "bf16"),
        }
        report["quality"] = {
            name: evaluate(
                where, args.dataset, queries, args.work / f"eval-{i}.json", args.eval_queries
            )
            for i, (name, (where, queries)) in enumerate(settings.items())
        }
    write_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
