"""Tuning the reranker's interpolation weight on held-out training queries.

The pipeline's reranker stage scores ``alpha * mm(reranker) + (1 - alpha) * mm(fused)``
over the reranked candidates (:func:`twofold.search.pipeline.interpolate`; ``mm`` is
min-max per query). After training, each held-out query (with known positives: labels
or a pseudo-query's source) runs through the collection's ``hybrid`` pipeline, the one
``hybrid+rerank`` reranks, to ``rerank_depth`` candidates; the trained student scores
them, as served (:class:`~twofold.models.reranker.CrossEncoder`, what the document
shows without a pseudo-query's hidden sentence); ``alpha`` is the grid value (step 0.05)
with the best mean nDCG@10 over those queries, the smallest on a tie (the one that moves
least from the fused order). ``alpha = 0`` keeps the fused order: a student that does not
help is then switched off rather than trusted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from twofold.core.types import Ranking
from twofold.indexing.collection import Collection
from twofold.models.reranker import CrossEncoder, RerankerConfig
from twofold.search.evaluate import score_run
from twofold.search.pipeline import build_pipeline, interpolate
from twofold.train.queries import TrainQuery, shown_text

log = logging.getLogger(__name__)

GRID = tuple(round(0.05 * i, 2) for i in range(21))


@dataclass(frozen=True)
class HeldOut:
    """One held-out query's reranked candidates: ids, fused scores, texts as shown."""

    query: TrainQuery
    doc_ids: tuple[str, ...]
    fused: tuple[float, ...]
    texts: tuple[str, ...]


def held_out_candidates(
    collection: Collection, queries: Sequence[TrainQuery], rerank_depth: int
) -> list[HeldOut]:
    """The ``hybrid`` pipeline's top ``rerank_depth`` for each query that has positives."""
    pipeline = build_pipeline(collection, "hybrid", depth=max(100, rerank_depth))
    out = []
    for tq in queries:
        if not tq.positives:
            continue
        ranking: Ranking = pipeline.search(tq.query, rerank_depth)
        ids = tuple(h.doc_id for h in ranking.hits)
        texts = tuple(shown_text(collection.docs.get(d), tq.hidden) for d in ids)
        out.append(HeldOut(tq, ids, tuple(h.score for h in ranking.hits), texts))
    return out


def mean_ndcg(held: Sequence[HeldOut], scores: Sequence[Sequence[float]], alpha: float) -> float:
    """Mean nDCG@10 over ``held`` when each query's candidates are ordered by the
    interpolation of its reranker ``scores`` and fused scores with weight ``alpha``."""
    qrels = {h.query.query.query_id: dict(h.query.positives) for h in held}
    run = {}
    for h, s in zip(held, scores, strict=True):
        final = interpolate(s, h.fused, alpha) if h.doc_ids else []
        order = sorted(zip(h.doc_ids, final, strict=True), key=lambda p: (-p[1], p[0]))
        run[h.query.query.query_id] = order
    per_query = score_run(qrels, run)
    return float(np.mean([m["ndcg@10"] for m in per_query.values()])) if per_query else 0.0


def choose_alpha(
    held: Sequence[HeldOut], scores: Sequence[Sequence[float]], grid: Sequence[float] = GRID
) -> tuple[float, dict[float, float]]:
    """(best alpha, nDCG@10 per alpha); the smallest alpha on a tie."""
    table = {a: mean_ndcg(held, scores, a) for a in grid}
    best = max(table.values())
    return min(a for a, v in table.items() if v >= best - 1e-12), table


def alpha_tuner(
    collection: Collection, held_out: Sequence[TrainQuery], rerank_depth: int
) -> Callable[[Path], dict[str, Any]]:
    """``tune(model_dir) -> settings``: loads the staged student as it will be served,
    scores the held-out candidates and returns ``alpha`` with its held-out figures."""
    held = held_out_candidates(collection, held_out, rerank_depth)

    def tune(model_dir: Path) -> dict[str, Any]:
        if not held:
            log.warning("no labelled held-out query: alpha left at 0.5, untuned")
            return {"alpha": 0.5, "alpha_tuned": False}
        reranker = CrossEncoder(RerankerConfig(str(model_dir)))
        scores = [reranker.score(h.query.query.text, h.texts) for h in held]
        alpha, table = choose_alpha(held, scores)
        log.info("alpha %.2f on %d held-out queries: %s", alpha, len(held), table)
        return alpha_settings(alpha, table, len(held), rerank_depth)

    return tune


def alpha_settings(
    alpha: float, table: dict[float, float], queries: int, rerank_depth: int
) -> dict[str, Any]:
    """What a tuned ``alpha`` stores in the model dir: the weight and its held-out figures
    (``table``: nDCG@10 per grid value over ``queries`` held-out queries)."""
    return {
        "alpha": alpha,
        "alpha_tuned": True,
        "normalization": "min_max per query over the reranked candidates",
        "rerank_depth": rerank_depth,
        "heldout_queries": queries,
        "heldout_ndcg@10_fused": round(table[0.0], 4),
        "heldout_ndcg@10_reranker_only": round(table[1.0], 4),
        "heldout_ndcg@10_reranked": round(table[alpha], 4),
        "heldout_table": {str(a): round(v, 4) for a, v in table.items()},
    }
