"""Fusion of several rankings into one (pure functions).

Rule for a document missing from a list: it contributes nothing from that list
(RRF term 0; normalized score 0 for score-based fusion), which is the rule of
Pyserini's fusion and of OpenSearch's hybrid query.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from twofold.core.types import Hit, Ranking


@dataclass(frozen=True)
class RRF:
    """Reciprocal rank fusion (Cormack et al. 2009): ``sum_r w_r / (k + rank_r(d))``,
    ranks starting at 1. ``weights`` default to 1 per list."""

    k: int = 60
    weights: Mapping[str, float] = field(default_factory=dict)

    def fuse(self, query_id: str, rankings: Mapping[str, Ranking], depth: int) -> Ranking:
        scores: dict[str, float] = {}
        sources: dict[str, dict[str, tuple[int, float]]] = {}
        for name, ranking in rankings.items():
            weight = self.weights.get(name, 1.0)
            for rank, hit in enumerate(ranking.hits, start=1):
                scores[hit.doc_id] = scores.get(hit.doc_id, 0.0) + weight / (self.k + rank)
                sources.setdefault(hit.doc_id, {})[name] = (rank, hit.score)
        ordered = sorted(scores.items(), key=lambda p: (-p[1], p[0]))[:depth]
        return Ranking(query_id, tuple(Hit(d, s, sources[d]) for d, s in ordered))
