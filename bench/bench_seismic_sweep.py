"""Seismic's knobs on the synthetic corpora: why it missed the issue's anchor.

The issue's anchor is Seismic 0.59 ms against 6.9 ms for Lucene impact search on a 51k
synthetic corpus. Here, with Twofold's first parameters (4,000 postings a term at every
size, every query term, ``heap_factor`` 0.9), Seismic was slower than Lucene at 100k.
This script asks which settings explain it. Per size, one Seismic index per
``--n-postings`` (Twofold's other build parameters), searched straight through
``pyseismic-lsr`` at k=10 under a grid of ``query_cut`` (query terms kept, heaviest
first; 0 = all) and ``heap_factor``, with and without Twofold's exact re-scoring of 20
candidates, each against exact scoring of the same queries (scipy CSC, also timed, the
baseline of the ratios). One thread, queries in a rotating order.

    .venv/bin/python bench/bench_seismic_sweep.py --docs 100000 --n-postings 4000 1000 500 250 \\
        --out bench/results/seismic-sweep.json

With ``--collection DIR --dataset BEIR_DIR`` it measures quality instead, on a real
collection: a Seismic index rebuilt from the collection's own forward index for each
``--n-postings`` (default: 0, the size rule Twofold builds with, and 4,000), and nDCG@10
of Twofold's seismic engine (candidates re-scored exactly) under the same query grid,
beside the exact native engine's, for ``sparse`` and ``splade``:

    .venv/bin/python bench/bench_seismic_sweep.py --collection build/bench-scifact \\
        --dataset ../shared/datasets/scifact --out bench/results/seismic-quality-scifact.json
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
from twofold.indexing.sparse.seismic import SeismicParams, build_seismic  # noqa: E402

QUERY_CUTS = (0, 10, 5)
HEAP_FACTORS = (0.9, 1.0)


def sweep(
    n: int, n_postings: list[int], n_queries: int, rounds: int, work: Path
) -> list[dict[str, Any]]:
    import seismic

    docs = synthetic.docs(n, seed=0)
    queries = synthetic.queries(docs[: min(n, 10_000)], n_queries, seed=1)
    csc = docs.tocsc()
    out = []
    for postings in n_postings:
        params = SeismicParams(n_postings=postings)
        t0 = time.perf_counter()
        build_seismic(work, [docs], synthetic.VOCAB, params)
        build_seconds = time.perf_counter() - t0
        index = seismic.SeismicIndex.load(str(work / "seismic" / "index.index.seismic"))
        row = search_grid(index, docs, csc, queries, rounds)
        out.append({"docs": n, "build_seconds": round(build_seconds, 1)} | row)
        out[-1]["build_params"] = params.to_json()
        print(n, postings, "built in", out[-1]["build_seconds"], "s", flush=True)
    return out


def search_grid(index: Any, docs: Any, csc: Any, queries: list[Any], rounds: int) -> dict[str, Any]:
    import seismic

    string = seismic.get_seismic_string()

    def exact(i: int) -> list[int]:
        ids, w = queries[i]
        scores = csc[:, ids] @ w.astype(np.float32)
        top = np.argpartition(-scores, 10)[:10]
        return top[np.lexsort((top, -scores[top]))].tolist()

    comps = [np.asarray([str(j) for j in ids.tolist()], dtype=string) for ids, _ in queries]
    weights = [np.asarray(w, dtype=np.float32) for _, w in queries]

    def plain(cut: int, heap: float, rescore: bool) -> Any:
        def run(i: int) -> list[int]:
            k = 20 if rescore else 10
            found = index.search("q", comps[i], weights[i], k, cut or len(comps[i]), heap)
            ordinals = np.asarray([int(d) for _, _, d in found], dtype=np.int64)
            if not rescore or not len(ordinals):
                return ordinals.tolist()
            ids, w = queries[i]
            scores = docs[ordinals][:, ids] @ w.astype(np.float32)
            return ordinals[np.lexsort((ordinals, -scores))][:10].tolist()

        return run

    systems = {"exact (scipy CSC)": exact}
    for cut in QUERY_CUTS:
        for heap in HEAP_FACTORS:
            for rescore in (False, True):
                how = " 20 + exact re-score" if rescore else ""
                name = f"seismic query_cut={cut or 'all'} heap_factor={heap}{how}"
                systems[name] = plain(cut, heap, rescore)
    names = list(systems)
    for i in range(5):
        for name in names:
            systems[name](i)
    times: dict[str, list[float]] = {s: [] for s in names}
    hits: dict[str, list[list[int]]] = {s: [[] for _ in queries] for s in names}
    turn = 0
    for _ in range(rounds):
        for i in range(len(queries)):
            order = names[turn % len(names) :] + names[: turn % len(names)]
            turn += 1
            for name in order:
                t = time.perf_counter()
                hits[name][i] = systems[name](i)
                times[name].append((time.perf_counter() - t) * 1000)
    base = float(np.median(times[names[0]]))
    rows = {}
    for name in names:
        overlap = np.mean(
            [len(set(h) & set(r)) / 10 for h, r in zip(hits[name], hits[names[0]], strict=True)]
        )
        p50 = float(np.median(times[name]))
        q1, q3 = np.percentile(times[name], [25, 75])
        rows[name] = {
            "p50_ms": round(p50, 3),
            "q1_ms": round(float(q1), 3),
            "q3_ms": round(float(q3), 3),
            "ratio_to_exact": round(p50 / base, 3),
            "top10_overlap": round(float(overlap), 4),
        }
        print(name, rows[name], flush=True)
    return {
        "postings": int(docs.nnz),
        "query_terms_mean": round(float(np.mean([len(c) for c in comps])), 1),
        "systems": rows,
    }


def _rebuilt(index: Any, n_postings: int, work: Path) -> Any:
    """A Seismic engine over ``index``'s own forward index, rebuilt with ``n_postings``
    (0: ``auto_n_postings`` for its size) and its other build parameters."""
    from dataclasses import replace

    import scipy.sparse as sp

    from twofold.indexing.sparse.seismic import ForwardIndex, SeismicEngine

    fwd = ForwardIndex(index.path)
    docs = sp.csr_matrix(
        (np.asarray(fwd.weights), np.asarray(fwd.terms), np.asarray(fwd.indptr)),
        shape=(len(index.doc_ids), len(index.vocab)),
    )
    (work / "forward").symlink_to(index.path / "forward")
    params = replace(index.engine("seismic").params, n_postings=n_postings)
    built = build_seismic(work, [docs], len(index.vocab), params)
    return SeismicEngine(work, index.doc_ids, len(index.vocab), SeismicParams.from_json(built))


def quality(
    collection: Path, dataset: Path, split: str, n_postings: list[int]
) -> list[dict[str, Any]]:
    """nDCG@10 and overlap@10 with exact of the seismic engine under each query setting,
    on a Seismic index rebuilt from the collection's forward index per ``n_postings``."""
    from dataclasses import replace

    from twofold.indexing.collection import Collection
    from twofold.indexing.corpus import BeirDataset
    from twofold.indexing.sparse.seismic import SeismicEngine
    from twofold.search.evaluate import score_run
    from twofold.search.sparse import SparseSearcher

    coll = Collection(collection)
    data = BeirDataset(dataset)
    qrels = data.qrels(split)
    queries = data.queries(split, qrels)
    rows = []
    for name in ("sparse", "splade"):
        if not coll.has(name):
            continue
        index = coll.index(name)
        searcher = SparseSearcher(index, "native")
        vectors = [searcher.encode(q.text) for q in queries]
        exact = {
            q.query_id: searcher.search_vector(v, 10) for q, v in zip(queries, vectors, strict=True)
        }

        def ndcg(run: dict[str, list[tuple[str, float]]]) -> float:
            return float(np.mean([m["ndcg@10"] for m in score_run(qrels, run).values()]))

        for postings in n_postings:
            with tempfile.TemporaryDirectory(prefix="seismic-quality-") as work:
                built = _rebuilt(index, postings, Path(work))
                for cut in QUERY_CUTS:
                    for heap in HEAP_FACTORS:
                        params = replace(built.params, query_cut=cut, heap_factor=heap)
                        engine = SeismicEngine(Path(work), index.doc_ids, len(index.vocab), params)
                        run = {
                            q.query_id: engine.search(
                                np.asarray(v.indices), np.asarray(v.values, dtype=np.float32), 10
                            )
                            for q, v in zip(queries, vectors, strict=True)
                        }
                        overlap = np.mean(
                            [
                                len({d for d, _ in run[q]} & {d for d, _ in exact[q]}) / 10
                                for q in exact
                            ]
                        )
                        rows.append(
                            {
                                "retriever": name,
                                "n_postings": built.params.n_postings,
                                "query_cut": cut,
                                "heap_factor": heap,
                                "ndcg@10": round(ndcg(run), 4),
                                "exact_ndcg@10": round(ndcg(exact), 4),
                                "overlap@10": round(float(overlap), 4),
                            }
                        )
                        print(rows[-1], flush=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--docs", type=int, nargs="+", default=[100_000])
    ap.add_argument(
        "--n-postings",
        type=int,
        nargs="+",
        default=None,
        help="Seismic builds to compare (0: by corpus size; default 4000 1000 500 250, "
        "with --collection 0 4000)",
    )
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--collection", type=Path, help="measure quality on this collection")
    ap.add_argument("--dataset", type=Path, help="BEIR dir for --collection")
    ap.add_argument("--split", default="test")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    results = []
    if args.n_postings is None:
        args.n_postings = [0, 4000] if args.collection else [4000, 1000, 500, 250]
    if args.collection:
        if not args.dataset:
            ap.error("--collection needs --dataset")
        results = quality(args.collection, args.dataset, args.split, args.n_postings)
    for n in [] if args.collection else args.docs:
        with tempfile.TemporaryDirectory(prefix="seismic-sweep-") as work:
            results += sweep(n, args.n_postings, args.queries, args.rounds, Path(work))
    report = {
        "benchmark": "seismic-sweep",
        **provenance(),
        "corpus": str(args.collection)
        if args.collection
        else "bench/synthetic.py seed 0 (topical Zipfian, ~250 terms/doc, ~20/query)",
        "dataset": args.dataset.name if args.dataset else None,
        "load_average_end": os.getloadavg(),
        "results": results,
    }
    write_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
