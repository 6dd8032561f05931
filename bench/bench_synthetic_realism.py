"""Are the synthetic corpora's queries as dear as real ones? (issue 12's 1M goal)

For each sparse retriever of a real collection, against a synthetic corpus of the same
size (``bench/synthetic.py``, seed 0, its queries seed 1), per query (medians):
terms; postings touched per document (``sum of df(t) / N`` over the query's terms: the
work of exact scoring, and of Lucene, per document); the score of the best document
over the 10th (how clear the top is, which is what pruning relies on); the share of the
query's weight on the 1% most frequent terms.

    python bench/bench_synthetic_realism.py build/scifact --dataset ../shared/datasets/scifact \\
        --out bench/results/synthetic-realism-scifact.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import synthetic
from bench.bench_pruning import doc_matrix, query_matrix
from bench.common import provenance, write_report
from twofold.indexing.collection import Collection
from twofold.indexing.corpus import BeirDataset
from twofold.search.sparse import SPARSE_RETRIEVERS, SparseSearcher


def shape(docs: sp.csr_matrix, queries: sp.csr_matrix) -> dict[str, float]:
    """Medians over the queries (rows of ``queries``) against ``docs`` (N, V)."""
    n = docs.shape[0]
    df = np.bincount(docs.indices, minlength=docs.shape[1])
    frequent = np.zeros(docs.shape[1], dtype=bool)
    frequent[np.argsort(-df)[: max(1, docs.shape[1] // 100)]] = True
    scores = (queries @ docs.T).toarray()
    terms, touched, clear, share = [], [], [], []
    for i in range(queries.shape[0]):
        row = queries[i]
        if not row.nnz:
            continue
        terms.append(row.nnz)
        touched.append(df[row.indices].sum() / n)
        top = np.sort(scores[i])[::-1]
        if top[9] > 0:
            clear.append(top[0] / top[9])
        share.append(row.data[frequent[row.indices]].sum() / row.data.sum())
    return {
        "queries": len(terms),
        "terms_per_query": float(np.median(terms)),
        "postings_per_doc_touched": round(float(np.median(touched)), 3),
        "top1_over_top10": round(float(np.median(clear)), 3),
        "weight_on_top1pct_terms": round(float(np.median(share)), 3),
    }


def synthetic_matrix(n: int, count: int) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    docs = synthetic.docs(n, seed=0)
    rows = synthetic.queries(docs, count, seed=1)
    indptr = np.cumsum([0] + [len(ids) for ids, _ in rows])
    ids = np.concatenate([ids for ids, _ in rows])
    weights = np.concatenate([w for _, w in rows])
    return docs, sp.csr_matrix((weights, ids, indptr), shape=(count, docs.shape[1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("collection", type=Path)
    ap.add_argument("--dataset", type=Path, required=True, help="BEIR dir for the queries")
    ap.add_argument("--split", default="test")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    collection = Collection(args.collection)
    queries = BeirDataset(args.dataset).queries(args.split)
    report: dict[str, Any] = {**provenance(), "collection": str(args.collection), "real": {}}
    n = 0
    for name in (r for r in SPARSE_RETRIEVERS if collection.has(r)):
        index = collection.index(name)
        docs = doc_matrix(index)
        q = query_matrix(SparseSearcher(index, "native"), queries, docs.shape[1])
        report["real"][name] = shape(docs, q.astype(np.float32))
        n = docs.shape[0]
    docs, q = synthetic_matrix(n, len(queries))
    report["synthetic"] = {"docs": n, **shape(docs, q)}
    write_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
