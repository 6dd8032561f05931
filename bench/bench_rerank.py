"""Reranker quality vs rerank latency at depth 20, 50, 100, per student, float and int8.

.venv/bin/python bench/bench_rerank.py COLLECTION --dataset BEIR_DIR \
    --model NAME=DIR [--model NAME=DIR ...] [--queries 100] [--depths 20,50,100] [--out F]

For each of the first ``--queries`` judged test queries, the collection's ``hybrid``
pipeline gives the fused candidates once; then every (model; float32, int8 or bfloat16;
depth) reranks
the top ``depth`` of them with the weight stored in the model dir (``alpha``; 1 for a
model without one, e.g. an untrained base used for latency only). Latency: wall time of
``CrossEncoder.score`` for that query's candidates (tokenizing included), p50/p90 in ms,
queries interleaved round-robin over the systems so machine load hits each alike.
Quality: nDCG@10 of the reranked list (and of the fused list, for reference), and where
the dataset has a train split also on the unseen-document test queries
(``twofold.search.unseen``). On a machine shared with other jobs, latencies are upper
bounds; compare ratios in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import provenance

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> None:
    import torch

    from twofold.indexing.collection import Collection
    from twofold.indexing.corpus import BeirDataset
    from twofold.models.reranker import CrossEncoder, RerankerConfig
    from twofold.search.evaluate import score_run
    from twofold.search.jobs import leak_subsets
    from twofold.search.pipeline import build_pipeline, interpolate
    from twofold.search.unseen import SUBSET_NAME, subset_means

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("collection")
    p.add_argument("--dataset", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--model", action="append", required=True, help="NAME=DIR")
    p.add_argument("--queries", type=int, default=100)
    p.add_argument("--depths", default="20,50,100")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    depths = [int(d) for d in args.depths.split(",")]
    collection = Collection(Path(args.collection))
    dataset = BeirDataset(Path(args.dataset))
    qrels = dataset.qrels(args.split)
    queries = dataset.queries(args.split, qrels)[: args.queries]
    hybrid = build_pipeline(collection, "hybrid", depth=max(100, *depths))
    fused = {q.query_id: hybrid.search(q, max(depths)) for q in queries}
    text = {d: collection.docs.get(d).contents for r in fused.values() for d in r.doc_ids()}

    systems: dict[str, tuple[CrossEncoder, int]] = {}
    for spec in args.model:
        name, _, directory = spec.partition("=")
        variants = {"": (False, "fp32"), "+int8": (True, "fp32"), "+bf16": (False, "bf16")}
        for suffix, (int8, precision) in variants.items():
            config = RerankerConfig(directory, quantize=int8, precision=precision)
            ce = CrossEncoder(config)
            for d in depths:
                systems[f"{name}{suffix}@{d}"] = (ce, d)
    times: dict[str, list[float]] = {s: [] for s in systems}
    runs: dict[str, dict[str, list[tuple[str, float]]]] = {s: {} for s in systems}
    for q in queries:  # round-robin: each query through every system
        ranking = fused[q.query_id]
        for s, (ce, d) in systems.items():
            head = ranking.hits[:d]
            texts = [text[h.doc_id] for h in head]
            t0 = time.perf_counter()
            scores = ce.score(q.text, texts)
            times[s].append((time.perf_counter() - t0) * 1000.0)
            alpha = 1.0 if ce.alpha is None else ce.alpha
            final = interpolate(scores, [h.score for h in head], alpha)
            order = sorted(zip([h.doc_id for h in head], final, strict=True), key=lambda p: -p[1])
            runs[s][q.query_id] = order
    base = {q.query_id: [(h.doc_id, h.score) for h in fused[q.query_id].hits] for q in queries}
    sub = {q.query_id: qrels[q.query_id] for q in queries}

    # the unseen-document queries, where the dataset has a train split to compare with
    unseen = leak_subsets(dataset, args.split, sub).get(SUBSET_NAME)

    def quality(run: dict[str, list[tuple[str, float]]]) -> dict[str, float]:
        """nDCG@10 on every query and, with a train split, on the unseen-document ones."""
        per_query = score_run(sub, run)
        out = {"ndcg@10": round(float(np.mean([m["ndcg@10"] for m in per_query.values()])), 4)}
        if unseen is not None and (means := subset_means(per_query, unseen)):
            out["ndcg@10_unseen"] = round(means["ndcg@10"], 4)
        return out

    rows: dict[str, Any] = {"hybrid (no rerank)": quality(base)}
    for s, (ce, d) in systems.items():
        a = np.asarray(times[s])
        rows[s] = {
            "depth": d,
            "alpha": ce.alpha,
            "max_length": ce.max_length,
            **quality(runs[s]),
            "p50_ms": round(float(np.percentile(a, 50)), 1),
            "p90_ms": round(float(np.percentile(a, 90)), 1),
        }
    report = {
        **provenance(),
        "collection": args.collection,
        "queries": len(queries),
        "torch_threads": args.threads,
        "rows": rows,
    }
    for name, row in rows.items():
        print(name, json.dumps(row))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
