"""Embedded vs Milvus-backed effectiveness on a BEIR dataset: nDCG@10 and overlap@10.

Copies an embedded collection (e.g. /work/builds/scifact-all; never written to), pushes
the copy's stored vectors into Milvus (no re-encoding), then runs the same pipelines on
both and reports, per pipeline, nDCG@10 of each, their difference, and overlap@10 (mean
over queries of |top10_embedded & top10_milvus| / 10). Start a server first, e.g.
``milvus-lite server --data-dir /tmp/mv --host 127.0.0.1 --port 19530``. milvus-lite is
a Python re-implementation: latencies from it say nothing about Milvus; none is reported.

The Milvus-only pipelines (``milvus-rrf``, ``milvus-weighted``: fused by Milvus's
``hybrid_search``) are compared with Twofold's own fusion of the same three retrievers on
the embedded collection (RRF k=60; convex min-max with the same family weights). Where
the dataset has a train split, each nDCG@10 is also given on the unseen-document queries.

    python bench/bench_milvus.py /work/builds/scifact-all ../shared/datasets/scifact \
        --milvus-uri http://127.0.0.1:19530 --out bench/results/milvus-quality-scifact.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from twofold.indexing.collection import Collection
from twofold.indexing.corpus import BeirDataset
from twofold.indexing.milvus_store import MilvusTarget, push_collection
from twofold.search.evaluate import PipelineResult, evaluate
from twofold.search.fusion import FusionConfig
from twofold.search.jobs import leak_subsets
from twofold.search.milvus_fusion import milvus_retrievers
from twofold.search.pipeline import (
    Pipeline,
    available_pipelines,
    build_pipeline,
    family_fusion,
    make_pipeline,
)
from twofold.search.unseen import SUBSET_NAME, subset_means


def twofold_twin(embedded: Collection, remote: Collection, name: str) -> Pipeline:
    """Twofold's own fusion of the retrievers a Milvus-only pipeline fuses."""
    names = milvus_retrievers(remote)
    fusion = FusionConfig("rrf") if name == "milvus-rrf" else family_fusion(names)
    return make_pipeline(embedded, f"twofold-{name}", names, fusion=fusion)


def compare(a: PipelineResult, b: PipelineResult, unseen: set[str] | None) -> dict[str, float]:
    """nDCG@10 of the embedded (``a``) and Milvus (``b``) runs, their difference and the
    mean overlap of their top 10s; on the unseen-document queries too when given."""
    overlap = [
        len({d for d, _ in a.run[q][:10]} & {d for d, _ in b.run[q][:10]}) / 10 for q in a.run
    ]
    out = {
        "ndcg@10_embedded": round(a.metrics["ndcg@10"], 4),
        "ndcg@10_milvus": round(b.metrics["ndcg@10"], 4),
        "delta": round(b.metrics["ndcg@10"] - a.metrics["ndcg@10"], 4),
        "overlap@10": round(sum(overlap) / max(len(overlap), 1), 4),
        "queries": len(a.run),
    }
    if unseen is not None:
        ua, ub = subset_means(a.per_query, unseen), subset_means(b.per_query, unseen)
        out["unseen_ndcg@10_embedded"] = round(ua["ndcg@10"], 4)
        out["unseen_ndcg@10_milvus"] = round(ub["ndcg@10"], 4)
        out["unseen_queries"] = int(ua["queries"])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("collection", type=Path)
    p.add_argument("dataset", type=Path)
    p.add_argument("--milvus-uri", required=True)
    p.add_argument("--milvus-collection", default="bench_milvus")
    p.add_argument("--split", default="test")
    p.add_argument(
        "--pipelines", default="sparse,splade,dense,hybrid,hybrid-rrf,milvus-rrf,milvus-weighted"
    )
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-milvus-")) / args.collection.name
    shutil.copytree(args.collection, work)
    push_collection(work, MilvusTarget(args.milvus_uri, args.milvus_collection))
    data = BeirDataset(args.dataset)
    qrels = data.qrels(args.split)
    queries = data.queries(args.split, qrels)
    embedded, remote = Collection(args.collection), Collection(work)
    unseen = leak_subsets(data, args.split, qrels).get(SUBSET_NAME)
    names = args.pipelines.split(",")
    report: dict[str, dict[str, float]] = {}
    for name in names:
        if name.startswith("milvus-"):
            if name not in available_pipelines(remote):
                continue
            baseline = twofold_twin(embedded, remote, name)
        elif name in available_pipelines(embedded):
            baseline = build_pipeline(embedded, name)
        else:
            continue
        a = evaluate(name, baseline.search, queries, qrels)
        b = evaluate(name, build_pipeline(remote, name).search, queries, qrels)
        report[name] = compare(a, b, unseen)
        print(name, report[name])
    if args.out:
        result = {
            "command": " ".join(["python", *sys.argv]),
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}",
            "dataset": args.dataset.name,
            "split": args.split,
            "server": "milvus-lite (not the C++ Milvus: effectiveness only)",
            "pipelines": report,
        }
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    shutil.rmtree(work.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
