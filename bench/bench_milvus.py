"""Embedded vs Milvus-backed effectiveness on a BEIR dataset: nDCG@10 and overlap@10.

Copies an embedded collection (e.g. /work/builds/scifact-all; never written to), pushes
the copy's stored vectors into Milvus (no re-encoding), then runs the same pipelines on
both and reports, per pipeline, nDCG@10 of each, their difference, and overlap@10 (mean
over queries of |top10_embedded & top10_milvus| / 10). Start a server first, e.g.
``milvus-lite server --data-dir /tmp/mv --host 127.0.0.1 --port 19530``. milvus-lite is
a Python re-implementation: latencies from it say nothing about Milvus; none is reported.

    python bench/bench_milvus.py /work/builds/scifact-all ../shared/datasets/scifact \
        --milvus-uri http://127.0.0.1:19530 --out bench/results/milvus-scifact.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from twofold.indexing.collection import Collection
from twofold.indexing.corpus import BeirDataset
from twofold.indexing.milvus_store import MilvusTarget, push_collection
from twofold.search.evaluate import evaluate
from twofold.search.pipeline import available_pipelines, build_pipeline


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("collection", type=Path)
    p.add_argument("dataset", type=Path)
    p.add_argument("--milvus-uri", required=True)
    p.add_argument("--milvus-collection", default="bench_milvus")
    p.add_argument("--split", default="test")
    p.add_argument("--pipelines", default="sparse,splade,dense,hybrid")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-milvus-")) / args.collection.name
    shutil.copytree(args.collection, work)
    push_collection(work, MilvusTarget(args.milvus_uri, args.milvus_collection))
    data = BeirDataset(args.dataset)
    qrels = data.qrels(args.split)
    queries = data.queries(args.split, qrels)
    embedded, remote = Collection(args.collection), Collection(work)
    wanted = [n for n in args.pipelines.split(",") if n in available_pipelines(embedded)]
    report: dict[str, dict[str, float]] = {}
    for name in wanted:
        a = evaluate(name, build_pipeline(embedded, name).search, queries, qrels)
        b = evaluate(name, build_pipeline(remote, name).search, queries, qrels)
        overlap = [
            len({d for d, _ in a.run[q][:10]} & {d for d, _ in b.run[q][:10]}) / 10 for q in a.run
        ]
        report[name] = {
            "ndcg@10_embedded": round(a.metrics["ndcg@10"], 4),
            "ndcg@10_milvus": round(b.metrics["ndcg@10"], 4),
            "delta": round(b.metrics["ndcg@10"] - a.metrics["ndcg@10"], 4),
            "overlap@10": round(sum(overlap) / max(len(overlap), 1), 4),
            "queries": len(queries),
        }
        print(name, report[name])
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    shutil.rmtree(work.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
