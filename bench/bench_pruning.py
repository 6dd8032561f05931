"""Document-side pruning of the learned sparse indexes: nDCG@10 against postings per document
(the data for the plot "nDCG@10 against postings per document for sparse pruning levels").

For each learned-sparse sub-index of a collection (``sparse``, the inference-free one, and
``splade`` when present) the stored document vectors are read from the CSR forward index
(``forward/``) and, for each level ``t``, every document keeps its ``t`` largest weights
(``twofold.models.sparse.prune``, the build's own ``--prune-top-k`` rule: ties to the lower
term id). Every judged query of ``--split``, encoded by the index's own query encoder, is
then scored exactly against all documents (``Q @ D^T``, float64, scipy sparse) and its
top 10 taken by score, then by doc ordinal (the doc store's order, as the native engine
breaks ties), after dropping a hit whose doc id is the query's own (``twofold eval``'s
rule). Per level: postings per document actually kept (mean, and max), total postings,
nDCG@10 on all judged queries and, where the dataset has a ``train`` split, on the
unseen-document queries (``twofold.search.unseen``).

As a check of the scorer, the unpruned level is also run through the native engine
(``SparseSearcher(index, "native").search``): both nDCG@10 figures are reported, with
their difference, the top-10 overlap and the largest score difference (float32 vs float64).

    OPENBLAS_CORETYPE=SkylakeX .venv/bin/python bench/bench_pruning.py ../builds/scifact \\
        --dataset ../shared/datasets/scifact --out bench/results/pruning-scifact.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import provenance, write_report  # noqa: E402
from twofold.core.types import Qrels, Query  # noqa: E402
from twofold.indexing.collection import Collection  # noqa: E402
from twofold.indexing.corpus import BeirDataset  # noqa: E402
from twofold.indexing.sparse.index import SparseIndex  # noqa: E402
from twofold.indexing.sparse.seismic import ForwardIndex  # noqa: E402
from twofold.models.sparse import Pruning, prune  # noqa: E402
from twofold.search.evaluate import score_run  # noqa: E402
from twofold.search.jobs import leak_subsets  # noqa: E402
from twofold.search.sparse import SPARSE_RETRIEVERS, SparseSearcher  # noqa: E402
from twofold.search.unseen import SUBSET_NAME, subset_means  # noqa: E402

Run = dict[str, list[tuple[str, float]]]


def doc_matrix(index: SparseIndex) -> sp.csr_matrix:
    """(N, V) float32 CSR of the stored document vectors, from the forward index."""
    fwd = ForwardIndex(index.path)
    vocab_size = len(index.native.indptr) - 1
    return sp.csr_matrix(
        (np.asarray(fwd.weights), np.asarray(fwd.terms), np.asarray(fwd.indptr)),
        shape=(index.doc_count, vocab_size),
    )


def query_matrix(searcher: SparseSearcher, queries: list[Query], vocab_size: int) -> sp.csr_matrix:
    """(n, V) float64 CSR: each query's vector from the index's own query encoder."""
    rows, cols, vals = [], [], []
    for i, q in enumerate(queries):
        if q.text.strip():  # a blank query has no vector (the searcher returns no hits)
            vec = searcher.encode(q.text)
            rows += [i] * len(vec.indices)
            cols += vec.indices
            vals += vec.values
    return sp.csr_matrix((vals, (rows, cols)), shape=(len(queries), vocab_size), dtype=np.float64)


def exact_run(
    q: sp.csr_matrix, d: sp.csr_matrix, queries: list[Query], doc_ids: list[str], k: int
) -> tuple[Run, np.ndarray]:
    """Top ``k`` of ``q @ d.T`` per query (score > 0; ties by ordinal; no self-hit), and the
    (n, N) float64 score matrix."""
    scores = np.asarray((q @ d.T.astype(np.float64)).todense())
    ordinal = {doc_id: i for i, doc_id in enumerate(doc_ids)}
    run: Run = {}
    for i, query in enumerate(queries):
        row = scores[i].copy()
        if query.query_id in ordinal:
            row[ordinal[query.query_id]] = 0.0
        hit = np.flatnonzero(row > 0)
        top = hit[np.lexsort((hit, -row[hit]))][:k]
        run[query.query_id] = [(doc_ids[j], float(row[j])) for j in top]
    return run, scores


def native_run(searcher: SparseSearcher, queries: list[Query], k: int) -> Run:
    """The native engine's top ``k`` (one more fetched, so a dropped self-hit costs none)."""
    return {
        q.query_id: [(d, s) for d, s in searcher.search(q.text, k + 1) if d != q.query_id][:k]
        for q in queries
    }


def ndcg(qrels: Qrels, run: Run, unseen: set[str] | None) -> tuple[float, float | None]:
    """Mean nDCG@10 over every judged query, and over the unseen-document queries."""
    per_query = score_run(qrels, run)
    mean = float(np.mean([v["ndcg@10"] for v in per_query.values()]))
    sub = subset_means(per_query, unseen) if unseen else {}
    return round(mean, 6), (round(sub["ndcg@10"], 6) if sub else None)


def bench_retriever(
    index: SparseIndex, queries: list[Query], qrels: Qrels, unseen: set[str] | None, args: Any
) -> dict[str, Any]:
    t0 = time.perf_counter()
    docs = doc_matrix(index)
    searcher = SparseSearcher(index, "native")
    q = query_matrix(searcher, queries, docs.shape[1])
    levels: list[dict[str, Any]] = []
    for top_k in [*args.levels, None]:  # unpruned last: its run and scores are checked below
        pruned = prune(docs, Pruning(top_k=top_k))
        per_doc = np.diff(pruned.indptr)
        run, scores = exact_run(q, pruned, queries, index.doc_ids, args.k)
        all_q, unseen_q = ndcg(qrels, run, unseen)
        levels.append(
            {
                "top_k": top_k if top_k is not None else "unpruned",
                "postings_per_doc": round(float(per_doc.mean()), 3),
                "max_postings_per_doc": int(per_doc.max(initial=0)),
                "postings": int(pruned.nnz),
                "ndcg@10": all_q,
                "unseen_ndcg@10": unseen_q,
            }
        )
    native = native_run(searcher, queries, args.k)
    native_all, native_unseen = ndcg(qrels, native, unseen)
    overlap, score_diff = [], 0.0
    ordinal = {doc_id: i for i, doc_id in enumerate(index.doc_ids)}
    for i, query in enumerate(queries):
        mine, theirs = {d for d, _ in run[query.query_id]}, native[query.query_id]
        overlap.append(len(mine & {d for d, _ in theirs}) / max(1, len(mine), len(theirs)))
        for d, s in theirs:
            score_diff = max(score_diff, abs(s - scores[i, ordinal[d]]))
    return {
        "kind": index.kind,
        "docs": index.doc_count,
        "stored_postings": int(docs.nnz),
        "stored_postings_per_doc": round(docs.nnz / max(1, index.doc_count), 3),
        "levels": levels,
        "native_check": {
            "exact_ndcg@10": levels[-1]["ndcg@10"],
            "native_ndcg@10": native_all,
            "difference": round(levels[-1]["ndcg@10"] - native_all, 6),
            "exact_unseen_ndcg@10": levels[-1]["unseen_ndcg@10"],
            "native_unseen_ndcg@10": native_unseen,
            "top10_overlap": round(float(np.mean(overlap)), 6),
            "max_abs_score_difference": float(score_diff),
        },
        "seconds": round(time.perf_counter() - t0, 2),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("collection", type=Path)
    ap.add_argument("--dataset", type=Path, required=True, help="BEIR dir: queries and qrels")
    ap.add_argument("--split", default="test")
    ap.add_argument(
        "--levels",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[8, 16, 32, 64, 128, 256],
        help="comma-separated top-t terms kept per document (unpruned is always added)",
    )
    ap.add_argument("--retrievers", default=",".join(SPARSE_RETRIEVERS))
    ap.add_argument("--k", type=int, default=10, help="hits per query (nDCG@10 needs 10)")
    ap.add_argument("--max-queries", type=int, default=None, help="first N judged queries")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    collection = Collection(args.collection)
    data = BeirDataset(args.dataset)
    qrels = data.qrels(args.split)
    queries = data.queries(args.split, qrels)[: args.max_queries]
    qrels = {q.query_id: qrels[q.query_id] for q in queries}
    unseen = leak_subsets(data, args.split, qrels).get(SUBSET_NAME)
    names = [n for n in args.retrievers.split(",") if collection.has(n)]
    report: dict[str, Any] = {
        **provenance(),
        "collection": str(args.collection),
        "dataset": args.dataset.name,
        "split": args.split,
        "queries": len(queries),
        "unseen_queries": len(unseen) if unseen is not None else None,
        "k": args.k,
        "scoring": "exact q.D^T in float64 over the forward index, top 10 by score then doc "
        "ordinal, self-hits dropped; pruning: each document's top-t weights (prune())",
        "retrievers": {},
        "levels": [],
    }
    for name in names:
        result = bench_retriever(collection.index(name), queries, qrels, unseen, args)
        report["retrievers"][name] = {k: v for k, v in result.items() if k != "levels"}
        report["levels"] += [{"retriever": name, **level} for level in result["levels"]]
    write_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
