"""``twofold tune-fusion``: pick the ``hybrid`` fusion on labelled queries.

Each retriever runs once per training query (depth 100); then every candidate fusion
is applied to those cached lists and scored by mean nDCG@10:

- RRF (k=60) with weights on a simplex grid (step ``step``), and
- the convex combination of min-max normalized scores with weights on the same grid.

Unweighted RRF is the first candidate, and a candidate must beat the best so far
strictly to replace it, so ties keep the simpler fusion. The grid step is coarsened
when the number of retrievers would make the grid larger than ``MAX_GRID`` points.
The winner goes into the manifest's ``pipelines.hybrid`` (an atomic rewrite of
``manifest.json``), with the training score, the unweighted-RRF score and provenance.
A tune that writes holds the collection's build lock (``build.build_lock``) from start to
end: it is refused while a build, rebuild or ``optimize`` of the collection runs, whose
publish would replace the collection it tunes (or lose its manifest write), and they are
refused while it runs. ``--dry-run`` takes no lock.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from twofold.core.errors import InputError
from twofold.core.types import Qrels, Query, Ranking
from twofold.indexing.build import build_lock
from twofold.indexing.collection import Collection
from twofold.indexing.corpus import BeirDataset
from twofold.indexing.manifest import read_manifest, write_manifest
from twofold.search.evaluate import clean_run, score_run
from twofold.search.fusion import FusionConfig
from twofold.search.pipeline import TUNED_KEY, collection_retrievers
from twofold.search.retrievers import RETRIEVERS

log = logging.getLogger(__name__)
MAX_GRID = 70  # weight vectors per fusion method
DEPTH = 100


@dataclass(frozen=True)
class TuneJob:
    collection: Path
    dataset: Path
    split: str = "train"
    max_queries: int | None = None
    step: float = 0.1
    write: bool = True


def simplex_grid(n: int, step: float) -> list[tuple[float, ...]]:
    """Weight vectors with entries in multiples of ``step`` summing to 1 (n >= 1)."""
    units = round(1 / step)
    if units < 1 or not math.isclose(units * step, 1.0, abs_tol=1e-9):
        raise InputError(f"--step must divide 1 (e.g. 0.1, 0.2, 0.25), not {step}")
    grid = []
    for combo in itertools.product(range(units + 1), repeat=n - 1):
        if sum(combo) <= units:
            grid.append(tuple(c / units for c in (*combo, units - sum(combo))))
    return grid


def grid_step(n: int, step: float) -> float:
    """``step``, coarsened (to 0.125, 0.2, 0.25, 0.5) until the grid has <= MAX_GRID points."""
    for candidate in (step, 0.125, 0.2, 0.25, 0.5):
        if candidate >= step and math.comb(round(1 / candidate) + n - 1, n - 1) <= MAX_GRID:
            return candidate
    return 0.5


def _mean_ndcg(
    qrels: Qrels,
    queries: Sequence[Query],
    lists: dict[str, dict[str, Ranking]],
    fusion: FusionConfig,
) -> float:
    run = {
        q.query_id: clean_run(q.query_id, fusion.fuse(q.query_id, lists[q.query_id], DEPTH))[0]
        for q in queries
    }
    per_query = score_run(qrels, run)
    return float(np.mean([m["ndcg@10"] for m in per_query.values()])) if per_query else 0.0


def fusion_lists(
    collection: Collection, names: Sequence[str], queries: Sequence[Query]
) -> dict[str, dict[str, Ranking]]:
    """Each retriever's top ``DEPTH`` for each query (run once, fused many times)."""
    retrievers = {n: RETRIEVERS.get(n)(collection) for n in names}
    log.info("retrieving %d queries with %s", len(queries), ", ".join(names))
    return {q.query_id: {n: r.retrieve(q, DEPTH) for n, r in retrievers.items()} for q in queries}


def search_fusion(
    names: Sequence[str],
    queries: Sequence[Query],
    qrels: Qrels,
    lists: dict[str, dict[str, Ranking]],
    step: float = 0.1,
    first: FusionConfig | None = None,
) -> tuple[FusionConfig, float, dict[str, Any]]:
    """The best fusion on ``queries`` by mean nDCG@10: ``first`` (default unweighted RRF),
    then RRF and convex on the weight grid; a candidate must beat the best so far strictly.
    Returns (best, its score, details)."""
    step = grid_step(len(names), step)
    grid = simplex_grid(len(names), step)
    baseline = first or FusionConfig("rrf")
    candidates = [baseline]
    for weights in grid:
        # every weight explicit: a retriever left out of the dict would count as 1.0
        w = dict(zip(names, weights, strict=True))
        candidates.append(FusionConfig("rrf", weights=w))
        candidates.append(FusionConfig("convex", weights=w))
    best, best_score, baseline_score = baseline, -1.0, 0.0
    per_method: dict[str, float] = {}
    queries = list(queries)
    for i, config in enumerate(candidates):
        score = _mean_ndcg(qrels, queries, lists, config)
        if i == 0:
            baseline_score = score
        per_method[config.method] = max(per_method.get(config.method, -1.0), score)
        if score > best_score:
            best, best_score = config, score
    details = {
        "first": baseline.describe(),
        "first_score": round(baseline_score, 6),
        "best_per_method": {m: round(s, 6) for m, s in per_method.items()},
        "candidates": len(candidates),
        "grid_step": step,
    }
    return best, best_score, details


def write_tuned_fusion(
    path: Path, names: Sequence[str], fusion: FusionConfig, tuned: dict[str, Any]
) -> None:
    """Put ``fusion`` into the manifest's ``pipelines.hybrid`` (an atomic rewrite)."""
    manifest = read_manifest(path)
    pipelines = dict(manifest.pipelines)
    pipelines[TUNED_KEY] = {"retrievers": list(names), "fusion": fusion.to_dict(), "tuned": tuned}
    write_manifest(path, replace(manifest, pipelines=pipelines))
    log.info("wrote %s into %s", fusion.describe(), path / "manifest.json")


def tune_fusion(job: TuneJob) -> dict[str, Any]:
    collection = Collection(job.collection)  # not a collection: refused before any lock file
    hint = "wait for it to finish, then run tune-fusion again"
    with build_lock(job.collection, hint) if job.write else nullcontext():
        return _tune_fusion(job, collection)


def _tune_fusion(job: TuneJob, collection: Collection) -> dict[str, Any]:
    names = collection_retrievers(collection)
    if len(names) < 2:
        raise InputError(
            f"collection {collection.name!r} has one retriever ({', '.join(names)}); fusion "
            "needs two or more: rebuild with e.g. --retrievers bm25,sparse,dense"
        )
    dataset = BeirDataset(job.dataset)
    qrels = dataset.qrels(job.split)
    queries = dataset.queries(job.split, qrels)[: job.max_queries]
    if not queries:
        raise InputError(f"no judged queries in {job.dataset} split {job.split!r}")
    qrels = {q.query_id: qrels[q.query_id] for q in queries}
    lists = fusion_lists(collection, names, queries)
    best, best_score, details = search_fusion(names, queries, qrels, lists, job.step)
    tuned = {
        "dataset": job.dataset.name,
        "split": job.split,
        "queries": len(queries),
        "metric": "ndcg@10",
        "score": round(best_score, 6),
        "unweighted_rrf": details["first_score"],
        "best_per_method": details["best_per_method"],
        "candidates": details["candidates"],
        "grid_step": details["grid_step"],
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    report: dict[str, Any] = {
        "retrievers": names,
        "fusion": best.to_dict(),
        "describe": best.describe(),
        "tuned": tuned,
    }
    if job.write:
        write_tuned_fusion(job.collection, names, best, tuned)
    report["written"] = job.write
    return report
