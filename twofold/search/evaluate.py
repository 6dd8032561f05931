"""BEIR evaluation: run a pipeline over a split's queries and score it with pytrec_eval.

Metrics (as BEIR reports them): nDCG@10 with linear gains, recall@100 and MRR@10.
Before scoring, hits whose doc id equals the query id and repeated doc ids are dropped,
and counted. A judged query left with no hits is averaged in one of two ways
(``no_hits``): ``zero`` (the default) scores it 0 and averages over every judged
query; ``skip`` leaves it out of the means, as BEIR does (pytrec_eval scores only the
queries present in the run, and BEIR averages what it returns). The report says which
convention was used and how many judged queries had no hits.

A pipeline that ran degraded on some queries (a retriever or the reranker failed and
the rest of the pipeline answered) is marked so in the report, with its reasons, and a
metric whose cutoff is deeper than the hits asked for (recall@100 at ``--k 10``) is
reported with a warning.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from twofold.core.errors import InputError
from twofold.core.types import Qrels, Query, Ranking

METRICS = ("ndcg@10", "recall@100", "mrr@10")
NO_HITS = ("zero", "skip")  # a judged query with no hits: scored 0, or left out (BEIR)
NO_HITS_RULE = {
    "zero": "scored 0, means over every judged query",
    "skip": "left out of the means (BEIR's convention)",
}


def cutoff_warnings(k: int) -> list[str]:
    """What a run of ``k`` hits per query cannot measure fully."""
    out = []
    for metric in METRICS:
        cutoff = int(metric.split("@")[1])
        if k < cutoff:
            out.append(
                f"--k {k} is below {metric}'s cutoff {cutoff}: {metric} counts only the top "
                f"{k} hits of each query (use --k {cutoff} or more to measure it)"
            )
    return out


@dataclass
class PipelineResult:
    name: str
    metrics: dict[str, float]
    per_query: dict[str, dict[str, float]]
    latency_ms: list[float]
    run: dict[str, list[tuple[str, float]]]
    dropped_self: int = 0
    dropped_duplicates: int = 0
    degraded: dict[str, int] = field(default_factory=dict)  # reason -> queries
    degraded_queries: int = 0
    no_hits: str = "zero"  # how judged queries with no hits were averaged (``NO_HITS``)
    no_hit_queries: int = 0  # judged queries with no hits (after dropping self-hits)

    def summary(self) -> dict[str, Any]:
        lat = np.asarray(self.latency_ms or [0.0])
        return {
            **{m: round(self.metrics[m], 6) for m in METRICS},
            "queries": len(self.per_query),
            "latency_ms": {
                "p50": round(float(np.percentile(lat, 50)), 3),
                "p99": round(float(np.percentile(lat, 99)), 3),
            },
            "dropped": {"self_hits": self.dropped_self, "duplicates": self.dropped_duplicates},
            "degraded": {"queries": self.degraded_queries, "reasons": dict(self.degraded)},
            "no_hits": {"convention": self.no_hits, "queries": self.no_hit_queries},
        }


def clean_run(query_id: str, ranking: Ranking) -> tuple[list[tuple[str, float]], int, int]:
    """Drop the query's own id and repeated doc ids; returns (hits, n_self, n_duplicates)."""
    seen: set[str] = set()
    hits: list[tuple[str, float]] = []
    n_self = n_dup = 0
    for hit in ranking.hits:
        if hit.doc_id == query_id:
            n_self += 1
        elif hit.doc_id in seen:
            n_dup += 1
        else:
            seen.add(hit.doc_id)
            hits.append((hit.doc_id, hit.score))
    return hits, n_self, n_dup


def score_run(
    qrels: Qrels, run: Mapping[str, Sequence[tuple[str, float]]]
) -> dict[str, dict[str, float]]:
    """Per-query nDCG@10, recall@100, MRR@10 for every judged query (0 when no hits).

    Rank order is the list order: scores are replaced by strictly decreasing values
    so pytrec_eval's tie-breaking by doc id cannot reorder a ranking.
    """
    import pytrec_eval

    def ordered(hits: Sequence[tuple[str, float]], k: int) -> dict[str, float]:
        return {d: float(len(hits) - i) for i, (d, _) in enumerate(hits[:k])}

    full = {q: ordered(run.get(q, []), 1000) for q in qrels}
    top10 = {q: ordered(run.get(q, []), 10) for q in qrels}
    main = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100"}).evaluate(
        {q: h for q, h in full.items() if h}
    )
    # MRR counts only grades >= 1 as relevant: pytrec_eval's default relevance_level.
    mrr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(
        {q: h for q, h in top10.items() if h}
    )
    out: dict[str, dict[str, float]] = {}
    for q in qrels:
        m = main.get(q, {})
        out[q] = {
            "ndcg@10": float(m.get("ndcg_cut_10", 0.0)),
            "recall@100": float(m.get("recall_100", 0.0)),
            "mrr@10": float(mrr.get(q, {}).get("recip_rank", 0.0)),
        }
    return out


def evaluate(
    name: str,
    search: Callable[[Query], Ranking],
    queries: Sequence[Query],
    qrels: Qrels,
    progress: bool = False,
    no_hits: str = "zero",
) -> PipelineResult:
    """Run ``search`` over ``queries`` one at a time (timed) and score against ``qrels``.

    ``no_hits``: ``zero`` scores a judged query with no hits 0 and keeps it in the
    means and ``per_query``; ``skip`` leaves it out of both (BEIR)."""
    if no_hits not in NO_HITS:
        raise InputError(f"--no-hits must be one of {', '.join(NO_HITS)}, not {no_hits!r}")
    run: dict[str, list[tuple[str, float]]] = {}
    latency: list[float] = []
    n_self = n_dup = 0
    items: Any = queries
    if progress:
        from tqdm import tqdm

        items = tqdm(queries, desc=f"eval {name}", unit="q", dynamic_ncols=True)
    for query in items:
        t0 = time.perf_counter()
        ranking = search(query)
        latency.append((time.perf_counter() - t0) * 1000.0)
        hits, s, d = clean_run(query.query_id, ranking)
        run[query.query_id] = hits
        n_self, n_dup = n_self + s, n_dup + d
    judged = {q.query_id for q in queries}
    per_query = score_run({q: r for q, r in qrels.items() if q in judged}, run)
    empty = {q for q in per_query if not run.get(q)}
    if no_hits == "skip":
        per_query = {q: v for q, v in per_query.items() if q not in empty}
    metrics = {
        m: float(np.mean([v[m] for v in per_query.values()])) if per_query else 0.0 for m in METRICS
    }
    return PipelineResult(
        name,
        metrics,
        per_query,
        latency,
        run,
        n_self,
        n_dup,
        no_hits=no_hits,
        no_hit_queries=len(empty),
    )


@dataclass
class EvalReport:
    """``subsets``: named query subsets (e.g. the unseen-document queries) whose means are
    reported beside each pipeline's figures on all queries."""

    dataset: str
    split: str
    results: list[PipelineResult] = field(default_factory=list)
    subsets: dict[str, set[str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    no_hits: str = "zero"

    def subset_summary(self, result: PipelineResult) -> dict[str, dict[str, float]]:
        from twofold.search.unseen import subset_means

        return {
            name: {m: round(v, 6) for m, v in subset_means(result.per_query, ids).items()}
            for name, ids in self.subsets.items()
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "split": self.split,
            "no_hits": {"convention": self.no_hits, "rule": NO_HITS_RULE[self.no_hits]},
            "pipelines": {r.name: {**r.summary(), **self.subset_summary(r)} for r in self.results},
            "subsets": {name: sorted(ids) for name, ids in self.subsets.items()},
            "warnings": list(self.warnings),
            "per_query": {r.name: r.per_query for r in self.results},
        }

    def table(self) -> str:
        head = (
            f"{'pipeline':<16}{'nDCG@10':>9}{'R@100':>8}{'MRR@10':>8}{'queries':>9}"
            f"{'p50 ms':>9}{'p99 ms':>9}"
        )
        lines = [
            f"{self.dataset} ({self.split}); judged queries with no hits: "
            f"{NO_HITS_RULE[self.no_hits]} (--no-hits {self.no_hits})",
            head,
            "-" * len(head),
        ]
        for r in self.results:
            s = r.summary()
            lines.append(
                f"{r.name:<16}{s['ndcg@10']:>9.4f}{s['recall@100']:>8.4f}"
                f"{s['mrr@10']:>8.4f}{s['queries']:>9}{s['latency_ms']['p50']:>9.1f}"
                f"{s['latency_ms']['p99']:>9.1f}"
            )
            for subset, means in self.subset_summary(r).items():
                if means:
                    lines.append(
                        f"  {subset:<14}{means['ndcg@10']:>9.4f}{means['recall@100']:>8.4f}"
                        f"{means['mrr@10']:>8.4f}{int(means['queries']):>9}"
                    )
            if r.degraded_queries:
                reasons = "; ".join(f"{why} ({n})" for why, n in r.degraded.items())
                lines.append(
                    f"  DEGRADED on {r.degraded_queries} of {s['queries']} queries: {reasons}"
                )
            if r.no_hit_queries:
                what = "scored 0" if r.no_hits == "zero" else "left out of the means"
                lines.append(f"  {r.no_hit_queries} judged queries had no hits: {what}")
            if r.dropped_self or r.dropped_duplicates:
                lines.append(
                    f"  dropped {r.dropped_self} self-hits and "
                    f"{r.dropped_duplicates} duplicate hits"
                )
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def write_trec_run(path: Path, name: str, run: Mapping[str, Sequence[tuple[str, float]]]) -> None:
    """TREC run lines whose score column is rank-consistent: ``n + 1 - rank`` for a query
    with ``n`` hits (integers).

    trec_eval, pytrec_eval and Anserini's trec_eval re-sort a run by its scores and break
    ties by doc id, each reading the scores at its own precision (Anserini's in single
    precision: ``0.4`` and ``0.39999999999999997`` are one value there). Scores that are
    distinct integers keep the ranking at any precision a reader uses, so every reader
    reproduces the metrics ``twofold eval`` reports. The pipeline's own scores are in
    the ranking (``twofold search --json``), not in the run file."""
    with path.open("w", encoding="utf-8") as fh:
        for query_id, hits in run.items():
            n = len(hits)
            for rank, (doc_id, _) in enumerate(hits, start=1):
                fh.write(f"{query_id} Q0 {doc_id} {rank} {n + 1 - rank} twofold-{name}\n")
