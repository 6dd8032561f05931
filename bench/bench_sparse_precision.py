"""bfloat16 against float32 for the learned-sparse document encoder (splade-tiny): the
``sparse`` and ``splade`` sub-indexes built both ways from one dataset, build time and
nDCG@10 of both pipelines, in one run.

Each precision gets its own ``twofold index build DATASET --retrievers sparse,splade
--precision P`` (in ``--work``, rebuilt every run, the two builds one after another).
Each collection is then evaluated with float32 queries and with bfloat16 queries
(``TWOFOLD_PRECISION``), so the document side and the query side show apart.

    python bench/bench_sparse_precision.py ../shared/datasets/scifact \\
        --work build/sparse-precision --out bench/results/sparse-precision-scifact.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import eval_summary, provenance, twofold, write_report

PRECISIONS = ("fp32", "bf16")
PIPELINES = ("sparse", "splade")


def build(dataset: Path, out: Path, precision: str, max_docs: int | None) -> float:
    """Seconds of one build of the two learned-sparse sub-indexes."""
    shutil.rmtree(out, ignore_errors=True)
    argv = ["index", "build", str(dataset), "--out", str(out), "--retrievers", "sparse,splade"]
    argv += ["--precision", precision] + ([] if max_docs is None else ["--max-docs", str(max_docs)])
    t0 = time.perf_counter()
    twofold(*argv)
    return round(time.perf_counter() - t0, 1)


def evaluate(collection: Path, dataset: Path, queries: str, out: Path) -> dict[str, Any]:
    """``twofold eval`` of both pipelines with the query side in ``queries`` precision."""
    argv = ["eval", str(collection), "--dataset", str(dataset), "--out", str(out)]
    twofold(
        *argv, "--pipeline", ",".join(PIPELINES), env={**os.environ, "TWOFOLD_PRECISION": queries}
    )
    return eval_summary(out, PIPELINES)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", type=Path, help="a BEIR dataset (its test split is evaluated)")
    ap.add_argument("--work", type=Path, required=True, help="where the two builds go")
    ap.add_argument("--max-docs", type=int, help="index only the first N documents (all)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    from twofold.models.device import cpu_has_amx

    report: dict[str, Any] = {
        "benchmark": "learned-sparse document precision: bfloat16 against float32",
        **provenance(),
        "amx": cpu_has_amx(),
        "dataset": args.dataset.name,
        "builds": {},
    }
    for docs in PRECISIONS:
        collection = args.work / f"collection-{docs}"
        seconds = build(args.dataset, collection, docs, args.max_docs)
        manifest = json.loads((collection / "manifest.json").read_text())
        recorded = {n: manifest["sub_indexes"][n].get("precision") for n in PIPELINES}
        report["builds"][docs] = {
            "build_seconds": seconds,
            "recorded": recorded,
            "queries": {
                q: evaluate(collection, args.dataset, q, args.work / f"eval-{docs}-{q}.json")
                for q in PRECISIONS
            },
        }
    write_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
