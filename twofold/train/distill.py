"""Training data for the distilled reranker: Margin-MSE examples from a collection, a
BEIR split and a teacher ensemble of the collection's retrievers.

Per training query (Hofstaetter et al. 2020, arXiv 2010.02666, with the heterogeneous
ensemble teacher of DESIGN.md):

1. every teacher retriever returns its top ``depth`` hits;
2. each teacher's scores are min-max normalized over its own list (its best hit 1,
   its worst 0; a list whose scores are all equal gives 1 to each); a document a
   teacher did not return gets 0 from it;
3. the teacher score ``t`` of a document is the mean over teachers, times ``scale``;
   the candidates are all returned documents in decreasing ``t`` (a CombSUM fusion);
4. positives are the judged relevant documents (grade >= 1) that at least one teacher
   returned (a positive no teacher found would get ``t = 0``, a margin that says it
   is worse than every negative); negatives are the top ``negatives`` candidates that
   are not judged relevant. Each positive is paired with each negative.

``scale`` defaults to 10: normalized margins lie in [-1, 1] and a one-label MS MARCO
cross-encoder's logits span roughly +-10, so the student learns margins in that range.
(DESIGN.md's 30 is for the KL loss of the sparse encoder, where it acts as an inverse
softmax temperature.)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twofold.core.errors import InputError
from twofold.core.types import Query, Ranking
from twofold.indexing.collection import Collection
from twofold.indexing.corpus import BeirDataset
from twofold.search.retrievers import RETRIEVERS, Retriever
from twofold.train.reranker import (
    MarginExample,
    RerankerTrainConfig,
    TrainResult,
    train_reranker,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistillConfig:
    """``teachers``: retriever names of the ensemble; ``depth``: hits per teacher;
    ``negatives``: per positive; ``scale``: multiplier of the averaged normalized score."""

    teachers: tuple[str, ...] = ("bm25", "dense", "splade")
    depth: int = 100
    negatives: int = 4
    max_queries: int | None = None
    scale: float = 10.0

    def __post_init__(self) -> None:
        if not self.teachers:
            raise InputError("at least one teacher retriever")
        if self.depth < 1 or self.negatives < 1 or self.scale <= 0:
            raise InputError("depth >= 1, negatives >= 1 and scale > 0")
        if self.max_queries is not None and self.max_queries < 1:
            raise InputError("max_queries >= 1")


def min_max(ranking: Ranking) -> dict[str, float]:
    """Each hit's score mapped to [0, 1] over this list (all 1 when the scores are equal)."""
    if not ranking.hits:
        return {}
    values = [h.score for h in ranking.hits]
    lo, hi = min(values), max(values)
    if hi == lo:
        return {h.doc_id: 1.0 for h in ranking.hits}
    return {h.doc_id: (h.score - lo) / (hi - lo) for h in ranking.hits}


def teacher_scores(rankings: Mapping[str, Ranking], scale: float) -> dict[str, float]:
    """``scale * mean_teacher(minmax score)`` for every returned doc, best first."""
    normalized = [min_max(r) for r in rankings.values()]
    docs = {d for n in normalized for d in n}
    scores = {d: scale * sum(n.get(d, 0.0) for n in normalized) / len(normalized) for d in docs}
    return dict(sorted(scores.items(), key=lambda kv: (-kv[1], kv[0])))


def query_examples(
    query: Query,
    judged: Mapping[str, int],
    rankings: Mapping[str, Ranking],
    texts: Callable[[str], str],
    config: DistillConfig,
) -> list[MarginExample]:
    """The examples of one query; ``texts(doc_id) -> str`` gives a document's text."""
    t = teacher_scores(rankings, config.scale)
    positives = [d for d, g in judged.items() if g >= 1 and d in t]
    negatives = [d for d in t if judged.get(d, 0) < 1][: config.negatives]
    return [
        MarginExample(query.text, texts(p), texts(n), t[p], t[n])
        for p in sorted(positives)
        for n in negatives
    ]


def open_teachers(collection: Collection, names: Sequence[str]) -> dict[str, Retriever]:
    """The teacher retrievers, opened; says which the collection lacks."""
    missing = [t for t in names if not collection.has(t)]
    if missing:
        raise InputError(
            f"collection {collection.name!r} has no {', '.join(missing)} index (it has: "
            f"{', '.join(collection.retrievers)}); pick --teachers among those"
        )
    return {t: RETRIEVERS.get(t)(collection) for t in names}


def teacher_rankings(
    teachers: Mapping[str, Retriever], query: Query, depth: int
) -> dict[str, Ranking]:
    return {name: r.retrieve(query, depth) for name, r in teachers.items()}


def build_examples(
    collection: Collection, dataset: BeirDataset, split: str, config: DistillConfig
) -> list[MarginExample]:
    """Margin-MSE examples of the first ``max_queries`` judged queries of ``split``."""
    teachers = open_teachers(collection, config.teachers)
    qrels = dataset.qrels(split)
    queries = dataset.queries(split, qrels)[: config.max_queries]

    def text(doc_id: str) -> str:
        return collection.docs.get(doc_id).contents

    examples: list[MarginExample] = []
    skipped = 0
    for query in queries:
        rankings = teacher_rankings(teachers, query, config.depth)
        found = query_examples(query, qrels[query.query_id], rankings, text, config)
        skipped += not found
        examples.extend(found)
    log.info(
        "%d examples from %d queries (%d gave none: no positive retrieved)",
        len(examples),
        len(queries),
        skipped,
    )
    return examples


def distill_reranker(
    collection: Collection,
    dataset: BeirDataset,
    split: str,
    out: Path,
    distill: DistillConfig,
    train: RerankerTrainConfig,
) -> TrainResult:
    """Build the examples, train the student, save it to ``out``."""
    examples = build_examples(collection, dataset, split, distill)
    if not examples:
        raise InputError(f"no training examples from split {split!r}: no positive was retrieved")
    extra: dict[str, Any] = {
        "collection": str(collection.path),
        "dataset": str(dataset.root),
        "split": split,
        "teachers": list(distill.teachers),
        "depth": distill.depth,
        "negatives": distill.negatives,
        "max_queries": distill.max_queries,
        "teacher_scale": distill.scale,
    }
    return train_reranker(examples, out, train, extra_args=extra)
