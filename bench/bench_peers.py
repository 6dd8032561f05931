"""Twofold beside its peers: one run, the same collection, the same queries (issue 12).

Three comparisons, each timed per query in an order that rotates from query to query (so
that the machine's load falls on every system alike), after a warm-up:

- ``bm25``: Twofold's BM25 searcher and its ``bm25`` pipeline, against Pyserini's own
  ``LuceneSearcher`` on the same Lucene index (BM25 k1=0.9, b=0.4, both) and against
  ``bm25s`` (``method="lucene"``, the same k1 and b, English stopwords and Snowball
  stemming), built here from the title + text of the collection's own doc store. Query
  text in, ranked ids out.
- ``sparse`` / ``splade``: each query encoded once by the sub-index's own query encoder,
  then searched by every engine on the same vector: Twofold's ``native`` (exact),
  ``seismic`` and ``lucene`` engines, Pyserini's ``LuceneImpactSearcher`` on the same
  impact index (the same quantized weights), and plain Seismic, the same saved index
  searched through ``pyseismic-lsr`` with the same parameters and no exact re-scoring.
- ``dense``: each query encoded once, then Twofold's dense index against plain FAISS
  (``IndexFlatIP`` over the same vectors, loaded into RAM).

Every system reports nDCG@10 on the split, its top-10 overlap with the comparison's
baseline (the first system), and its latency: p50 with q1-q3 and p10-p90. The ratio is
the system's p50 over the baseline's p50, both measured in this run.

    OPENBLAS_CORETYPE=SkylakeX .venv/bin/python bench/bench_peers.py build/scifact \\
        --dataset ../shared/datasets/scifact --rounds 2 --out bench/results/peers-scifact.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import collection_args, provenance, spread, write_report  # noqa: E402
from twofold.core.types import Query  # noqa: E402
from twofold.indexing.collection import Collection  # noqa: E402
from twofold.indexing.corpus import BeirDataset  # noqa: E402
from twofold.indexing.lucene.jvm import start_jvm  # noqa: E402
from twofold.indexing.sparse.index import quantize  # noqa: E402
from twofold.search.evaluate import score_run  # noqa: E402
from twofold.search.pipeline import build_pipeline  # noqa: E402
from twofold.search.sparse import SparseSearcher  # noqa: E402

Hits = list[tuple[str, float]]
System = Callable[[int], Hits]  # query index -> ranked (doc id, score)
K1, B = 0.9, 0.4


def compare(
    systems: dict[str, System], queries: list[Query], qrels: Any, k: int, rounds: int
) -> dict[str, Any]:
    """Time ``systems`` over ``queries`` (rotating order), then score and compare them."""
    names = list(systems)
    for i in range(min(20, len(queries))):  # warm-up: JIT, memory maps, caches
        for name in names:
            systems[name](i)
    times: dict[str, list[float]] = {n: [] for n in names}
    runs: dict[str, dict[str, Hits]] = {n: {} for n in names}
    turn = 0
    for _ in range(rounds):
        for i, query in enumerate(queries):
            order = names[turn % len(names) :] + names[: turn % len(names)]
            turn += 1
            for name in order:
                t0 = time.perf_counter()
                hits = systems[name](i)
                times[name].append((time.perf_counter() - t0) * 1000)
                runs[name][query.query_id] = hits[:k]
    base = names[0]
    base_p50 = float(np.median(times[base]))
    out: dict[str, Any] = {"baseline": base, "systems": {}}
    for name in names:
        per_query = score_run(qrels, runs[name])
        ndcg = float(np.mean([m["ndcg@10"] for m in per_query.values()]))
        overlap = np.mean(
            [
                len({d for d, _ in runs[name][q][:10]} & {d for d, _ in runs[base][q][:10]})
                / max(1, min(10, len(runs[base][q])))
                for q in runs[base]
            ]
        )
        p50 = float(np.median(times[name]))
        out["systems"][name] = {
            "ndcg@10": round(ndcg, 4),
            "overlap@10": round(float(overlap), 4),
            "latency_ms": spread(times[name], digits=4),
            "ratio_p50": round(p50 / base_p50, 3),
        }
    return out


def bm25_systems(coll: Collection, queries: list[Query], k: int) -> Any:
    import bm25s
    import Stemmer
    from pyserini.search.lucene import LuceneSearcher

    ours = coll.index("bm25")
    pipeline = build_pipeline(coll, "bm25")
    peer = LuceneSearcher(str(coll.path / "bm25" / "lucene"))
    peer.set_bm25(K1, B)
    stemmer = Stemmer.Stemmer("english")
    docs = list(coll.docs)  # the collection's own documents, in ordinal order
    t0 = time.perf_counter()
    tokens = bm25s.tokenize(
        [f"{d.title} {d.text}" for d in docs], stopwords="en", stemmer=stemmer, show_progress=False
    )
    retriever = bm25s.BM25(method="lucene", k1=K1, b=B)
    retriever.index(tokens, show_progress=False)
    bm25s_build = time.perf_counter() - t0
    ids = np.asarray([d.doc_id for d in docs])

    def with_bm25s(i: int) -> Hits:
        q = bm25s.tokenize(queries[i].text, stopwords="en", stemmer=stemmer, show_progress=False)
        found, scores = retriever.retrieve(q, k=k, show_progress=False, n_threads=1)
        return [(str(d), float(s)) for d, s in zip(ids[found[0]], scores[0], strict=True)]

    systems: dict[str, System] = {
        "twofold bm25 searcher": lambda i: ours.search(queries[i].text, k),
        "twofold bm25 pipeline": lambda i: [
            (h.doc_id, h.score) for h in pipeline.search(queries[i], k)
        ],
        "pyserini LuceneSearcher": lambda i: [
            (h.docid, h.score) for h in peer.search(queries[i].text, k)
        ],
        "bm25s": with_bm25s,
    }
    return systems, {"bm25s_build_seconds": round(bm25s_build, 2)}


class _Given:
    """A Pyserini query encoder that hands back the query's precomputed impacts."""

    def __init__(self, impacts: list[dict[str, int]]) -> None:
        self.impacts = impacts

    def encode(self, i: str) -> dict[str, int]:
        return self.impacts[int(i)]


def sparse_systems(coll: Collection, name: str, queries: list[Query], k: int) -> Any:
    import seismic
    from pyserini.search.lucene import LuceneImpactSearcher

    index = coll.index(name)
    encoder = SparseSearcher(index, "native")
    vectors = [encoder.encode(q.text) for q in queries]
    arrays = [
        (np.asarray(v.indices, dtype=np.int64), np.asarray(v.values, dtype=np.float32))
        for v in vectors
    ]
    systems: dict[str, System] = {}
    for engine in ("native", "seismic", "lucene"):
        opened = index.engine(engine)
        systems[f"twofold {engine}"] = lambda i, e=opened: e.search(*arrays[i], k)

    impacts = [
        {
            index.vocab[j]: int(w)
            for j, w in zip(ids.tolist(), quantize(q, index.scale).tolist(), strict=True)
        }
        for ids, q in arrays
    ]
    impacts = [{t: w for t, w in imp.items() if w > 0} for imp in impacts]
    peer = LuceneImpactSearcher(str(index.path / "lucene"), _Given(impacts))
    denom = index.scale * index.scale
    systems["pyserini LuceneImpactSearcher"] = lambda i: [
        (h.docid, h.score / denom) for h in peer.search(str(i), k)
    ]

    params = index.engine("seismic").params
    plain = seismic.SeismicIndex.load(str(next((index.path / "seismic").glob("*.index.seismic"))))
    string = seismic.get_seismic_string()
    comps = [np.asarray([str(j) for j in ids.tolist()], dtype=string) for ids, _ in arrays]

    def with_seismic(i: int) -> Hits:
        found = plain.search(
            "q", comps[i], arrays[i][1], k, params.query_cut or len(comps[i]), params.heap_factor
        )
        return [(index.doc_ids[int(d)], float(s)) for _, s, d in found]

    systems["seismic (plain)"] = with_seismic
    return systems, {
        "query_terms_mean": round(float(np.mean([len(v.indices) for v in vectors])), 1),
        "seismic_params": params.to_json(),
    }


def dense_systems(coll: Collection, queries: list[Query], k: int) -> Any:
    import faiss

    index = coll.index("dense")
    ids = coll.docs.ids
    vectors = index.encode_queries([q.text for q in queries])
    plain = faiss.IndexFlatIP(index.dim)
    plain.add(np.ascontiguousarray(np.load(index.path / "vectors.npy")))

    def ours(i: int) -> Hits:
        hits = index.search_vectors(vectors[i : i + 1], k)
        return [
            (ids[o], float(s))
            for o, s in zip(hits.ordinals[0], hits.scores[0], strict=True)
            if o >= 0
        ]

    def with_faiss(i: int) -> Hits:
        scores, ordinals = plain.search(vectors[i : i + 1], k)
        return [(ids[o], float(s)) for o, s in zip(ordinals[0], scores[0], strict=True) if o >= 0]

    systems: dict[str, System] = {"twofold dense index": ours, "faiss IndexFlatIP": with_faiss}
    return systems, {"index_type": index.index_type, "dim": index.dim}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    collection_args(ap)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)  # one thread per query, as every peer here searches
    start_jvm()
    coll = Collection(args.collection)
    dataset = BeirDataset(args.dataset)
    qrels = dataset.qrels(args.split)
    queries = dataset.queries(args.split, qrels)[: args.max_queries]
    qrels = {q.query_id: qrels[q.query_id] for q in queries}
    load_before = os.getloadavg()
    comparisons: dict[str, Any] = {}
    makers: dict[str, Callable[[], Any]] = {
        "bm25": lambda: bm25_systems(coll, queries, args.k),
        "sparse": lambda: sparse_systems(coll, "sparse", queries, args.k),
        "splade": lambda: sparse_systems(coll, "splade", queries, args.k),
        "dense": lambda: dense_systems(coll, queries, args.k),
    }
    for name, make in makers.items():
        if not coll.has(name):
            continue
        systems, extra = make()
        comparisons[name] = compare(systems, queries, qrels, args.k, args.rounds) | extra
        print(
            f"{name}: "
            + ", ".join(
                f"{s} {r['ndcg@10']:.4f} / {r['latency_ms']['p50']:.3f} ms"
                for s, r in comparisons[name]["systems"].items()
            ),
            file=sys.stderr,
        )
    report: dict[str, Any] = {
        "benchmark": "peers",
        **provenance(),
        "collection": str(args.collection),
        "dataset": args.dataset.name,
        "split": args.split,
        "queries": len(queries),
        "rounds": args.rounds,
        "k": args.k,
        "comparisons": comparisons,
        "load_average": {"before": load_before, "after": os.getloadavg()},
    }
    write_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
