"""The teacher every trainer distills from: the collection's own retrievers, each
normalized per query and fused (a stronger teacher than any one of them), with known
positives anchored above every negative, and hard negatives from that fused list.

Per training query (:class:`~twofold.train.queries.TrainQuery`):

1. the fused ranking of the teacher retrievers (depth ``depth``), with the collection's
   tuned fusion when it has one, else :func:`default_fusion`;
2. its scores min-max normalized over the list, so the best candidate has 1 and the
   last 0;
3. known positives (labels, or a pseudo-query's source document) get ``1 + anchor``
   whatever the retrievers said: their score comes from the anchor, so a retriever that
   matched the words copied out of a pseudo-query's source cannot set it;
4. negatives: the fused candidates that are not known positives, best first.

Without a tuned fusion the teacher fuses like the untuned ``hybrid``: one vote per model
family (:func:`twofold.search.pipeline.family_fusion`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from twofold.core.errors import InputError
from twofold.core.types import Ranking
from twofold.indexing.collection import Collection
from twofold.search.fusion import FusionConfig
from twofold.search.pipeline import (
    Pipeline,
    collection_retrievers,
    family_fusion,
    make_pipeline,
    tuned_fusion,
)
from twofold.train.queries import TrainQuery

default_fusion = family_fusion  # the teacher's fusion when the collection has no tuned one


@dataclass(frozen=True)
class TeacherConfig:
    """``depth``: fused candidates per query; ``anchor``: how far (in min-max units) a known
    positive sits above the best candidate; ``retrievers``: the teachers (None: all the
    collection has)."""

    depth: int = 100
    anchor: float = 0.1
    retrievers: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.depth < 2 or self.anchor < 0:
            raise InputError("teacher depth >= 2 and anchor >= 0")


@dataclass(frozen=True)
class Judged:
    """The teacher's view of one query: ``scores`` for every candidate (positives
    anchored), ``positives`` best first, ``negatives`` best first."""

    query: TrainQuery
    scores: Mapping[str, float]
    positives: tuple[str, ...]
    negatives: tuple[str, ...]


class Teacher:
    """Fused, anchored teacher over ``collection``'s retrievers."""

    def __init__(
        self,
        collection: Collection,
        config: TeacherConfig | None = None,
        fusion: FusionConfig | None = None,
    ) -> None:
        self.config = config or TeacherConfig()
        names = list(self.config.retrievers or collection_retrievers(collection))
        if not names:
            raise InputError(f"collection {collection.name!r} has no retriever to teach with")
        self.fusion = fusion or tuned_fusion(collection) or default_fusion(names)
        self.pipeline: Pipeline = make_pipeline(collection, "teacher", names, fusion=self.fusion)

    def rank(self, tq: TrainQuery) -> Ranking:
        return self.pipeline.search(tq.query, self.config.depth)

    def judge(self, tq: TrainQuery, ranking: Ranking | None = None) -> Judged:
        ranking = ranking if ranking is not None else self.rank(tq)
        values = [h.score for h in ranking.hits]
        lo, hi = (min(values), max(values)) if values else (0.0, 0.0)
        spread = hi - lo
        scores = {
            h.doc_id: (h.score - lo) / spread if spread > 0 else 1.0
            for h in ranking.hits
            if h.doc_id not in tq.positives
        }
        top = 1.0 + self.config.anchor
        positives = sorted(tq.positives, key=lambda d: (-tq.positives[d], d))
        for d in positives:
            # a higher grade keeps its lead: grade g gets top + anchor * (g - 1)
            scores[d] = top + self.config.anchor * (tq.positives[d] - 1)
        negatives = tuple(h.doc_id for h in ranking.hits if h.doc_id not in tq.positives)
        return Judged(tq, scores, tuple(positives), negatives)
