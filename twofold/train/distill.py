"""Training data for the distilled reranker: Margin-MSE examples (Hofstaetter et al.
2020, arXiv 2010.02666) from the collection's fused, anchored :class:`Teacher`.

Per training query (:class:`~twofold.train.queries.TrainQuery`, from ``--queries``):

1. the teacher's fused candidates (depth ``depth``), min-max normalized, with the known
   positives anchored at ``1 + anchor`` above every candidate (:mod:`twofold.train.teacher`);
2. with known positives (a label, or a pseudo-query's source document): each positive is
   paired with ``negatives`` negatives: the ``hard`` best-ranked non-positives, and the
   rest drawn (seeded) from the remaining candidates, so the student also sees the easy
   end of the list it will rerank;
3. with none (a file of user queries): the teacher's own order; the top ``top_positives``
   candidates each act as the better side of a pair with negatives chosen the same way
   among the candidates ranked below them;
4. the targets are ``scale`` times the teacher's scores, so the margins the student
   learns are ``scale * (t+ - t-)``; a document's text is what :func:`shown_text` shows
   (a pseudo-query's sentence is hidden from its source).

``scale`` defaults to 10: normalized margins lie in about [0, 1.1] and a one-label MS MARCO
cross-encoder's logits span roughly +-10.

The per-retriever CombSUM helpers (:func:`min_max`, :func:`teacher_scores`,
:func:`open_teachers`, :func:`teacher_rankings`) remain for the sparse trainer.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twofold.core.errors import InputError
from twofold.core.types import Query, Ranking
from twofold.indexing.collection import Collection
from twofold.search.retrievers import RETRIEVERS, Retriever
from twofold.train.crossfit import cross_fit
from twofold.train.interpolation import alpha_tuner
from twofold.train.publish import check_output
from twofold.train.queries import TrainQuery, holdout_split, shown_text
from twofold.train.reranker import (
    GroupExample,
    MarginExample,
    RerankerTrainConfig,
    TrainResult,
    train_reranker,
)
from twofold.train.teacher import Judged, Teacher, TeacherConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistillConfig:
    """``teachers``: the teacher's retrievers (None: all the collection has); ``depth``:
    fused candidates per query; ``negatives`` per positive, the ``hard`` best-ranked of
    them; ``scale``: multiplier of the teacher's scores; ``anchor``: of the positives;
    ``top_positives``: unlabelled queries' better sides; ``holdout``: fraction of the
    queries held out to tune ``alpha`` (given: fixed, not tuned); ``alpha_folds``: with
    K >= 2, ``alpha`` is cross-fitted over K folds of every labelled query instead
    (:mod:`twofold.train.crossfit`) and the student trains on all; ``rerank_depth``:
    candidates reranked while tuning; ``seed``: held-out split and negative sampling;
    ``prior_negatives``: LCE groups also hold this many known positives of *other*
    training queries as negatives (those in the query's candidates first, then drawn), so
    that having been a training positive is no sign of relevance: a student otherwise
    learns which documents were relevant in train, not how to match (issue 10's trap)."""

    teachers: tuple[str, ...] | None = None
    depth: int = 100
    negatives: int = 6
    hard: int = 3
    max_queries: int | None = None
    scale: float = 10.0
    anchor: float = 0.1
    top_positives: int = 2
    holdout: float = 0.15
    alpha_folds: int = 1
    alpha: float | None = None
    rerank_depth: int = 50
    seed: int = 0
    prior_negatives: int = 0

    def __post_init__(self) -> None:
        if self.teachers is not None and not self.teachers:
            raise InputError("at least one teacher retriever")
        if self.depth < 2 or self.negatives < 1 or self.scale <= 0 or self.top_positives < 1:
            raise InputError("depth >= 2, negatives >= 1, top_positives >= 1 and scale > 0")
        if not 0 <= self.hard <= self.negatives:
            raise InputError("0 <= hard <= negatives")
        if self.max_queries is not None and self.max_queries < 1:
            raise InputError("max_queries >= 1")
        if not 0 <= self.holdout < 1:
            raise InputError("holdout must be in [0, 1)")
        if self.alpha is not None and not 0 <= self.alpha <= 1:
            raise InputError("alpha must be in [0, 1]")
        if self.alpha_folds < 1:
            raise InputError("alpha_folds must be >= 1 (1: one held-out split)")
        if self.alpha is None and self.holdout == 0 and self.alpha_folds == 1:
            raise InputError("with --holdout 0 give --alpha (nothing to tune it on)")
        if self.rerank_depth < 1:
            raise InputError("rerank_depth >= 1")
        if self.prior_negatives < 0:
            raise InputError("--prior-negatives must be >= 0")


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


def pick_negatives(ranked: Sequence[str], config: DistillConfig, rng: random.Random) -> list[str]:
    """The ``hard`` first of ``ranked`` plus the rest of ``negatives`` drawn from after them."""
    hard = list(ranked[: config.hard])
    rest = list(ranked[config.hard :])
    drawn = rng.sample(rest, min(len(rest), config.negatives - len(hard)))
    return hard + sorted(drawn, key=rest.index)


def judged_examples(
    judged: Judged, text: Mapping[str, str], config: DistillConfig, rng: random.Random
) -> list[MarginExample]:
    """The Margin-MSE examples of one query; ``text[doc_id]``: the doc as shown."""
    q, t, k = judged.query.query.text, judged.scores, config.scale
    pairs: list[tuple[str, str]] = []
    if judged.positives:
        for p in judged.positives:
            pairs += [(p, n) for n in pick_negatives(judged.negatives, config, rng)]
    else:  # unlabelled: the teacher's own order
        ranked = list(judged.negatives)
        for i, p in enumerate(ranked[: config.top_positives]):
            below = [n for n in ranked[i + 1 :] if t[n] < t[p]]
            pairs += [(p, n) for n in pick_negatives(below, config, rng)]
    return [MarginExample(q, text[p], text[n], k * t[p], k * t[n]) for p, n in pairs]


def pick_prior(
    judged: Judged, taken: Sequence[str], pool: Sequence[str], n: int, rng: random.Random
) -> list[str]:
    """``n`` known positives of other queries (``pool``) that are not this query's
    positives nor already ``taken``: those among its candidates first, best first, then
    drawn from the rest of ``pool``."""
    if n <= 0:
        return []
    skip = {*judged.query.positives, *taken}
    members = set(pool)
    near = [d for d in judged.negatives if d in members and d not in skip][:n]
    skip.update(near)
    rest = [d for d in pool if d not in skip]
    return near + rng.sample(rest, min(len(rest), n - len(near)))


def group_ids(
    judged: Judged, config: DistillConfig, rng: random.Random, pool: Sequence[str] = ()
) -> list[list[str]]:
    """The document ids of one query's LCE groups: each known positive first, then
    ``negatives`` negatives chosen as for Margin-MSE, then ``prior_negatives`` other
    queries' positives from ``pool``; none for a query without a known positive."""
    groups = []
    for p in judged.positives:
        negatives = pick_negatives(judged.negatives, config, rng)
        prior = pick_prior(judged, negatives, pool, config.prior_negatives, rng)
        if len(negatives) < config.negatives or len(prior) < config.prior_negatives:
            continue  # a short candidate list: every group has the same width
        groups.append([p, *negatives, *prior])
    return groups


def judged_groups(
    judged: Judged, text: Mapping[str, str], config: DistillConfig, ids: Sequence[list[str]]
) -> list[GroupExample]:
    """The LCE groups of ``ids`` (:func:`group_ids`); ``text[doc_id]``: the doc as shown.
    A document the teacher did not return (a prior negative) has teacher score 0, the
    bottom of its min-max scale."""
    q, t, k = judged.query.query.text, judged.scores, config.scale
    return [
        GroupExample(q, tuple(text[d] for d in g), tuple(k * t.get(d, 0.0) for d in g)) for g in ids
    ]


def examples_by_query(
    collection: Collection,
    queries: Sequence[TrainQuery],
    config: DistillConfig,
    grouped: bool = False,
) -> list[list[Any]]:
    """Per query of ``queries`` (at most ``max_queries``): its Margin-MSE examples
    (``grouped``: LCE groups) from the fused teacher, an empty list when it gives none."""
    teacher = Teacher(
        collection,
        TeacherConfig(depth=config.depth, anchor=config.anchor, retrievers=config.teachers),
    )
    rng = random.Random(config.seed)
    chosen = list(queries)[: config.max_queries]
    pool = sorted({d for tq in chosen for d in tq.positives}) if config.prior_negatives else []
    out: list[list[Any]] = []
    for tq in chosen:
        judged = teacher.judge(tq)
        groups = group_ids(judged, config, rng, pool) if grouped else []
        ids = {*judged.positives, *judged.negatives, *(d for g in groups for d in g)}
        text = {d: shown_text(collection.docs.get(d), tq.hidden) for d in ids}
        found: Sequence[Any] = (
            judged_groups(judged, text, config, groups)
            if grouped
            else judged_examples(judged, text, config, rng)
        )
        out.append(list(found))
    skipped = sum(not e for e in out)
    log.info("%d examples from %d queries (%d gave none)", sum(map(len, out)), len(out), skipped)
    return out


def build_examples(
    collection: Collection,
    queries: Sequence[TrainQuery],
    config: DistillConfig,
    grouped: bool = False,
) -> list[MarginExample] | list[GroupExample]:
    """Margin-MSE examples (``grouped``: LCE groups) of ``queries`` (at most
    ``max_queries``) from the fused teacher."""
    return [e for found in examples_by_query(collection, queries, config, grouped) for e in found]


def distill_reranker(
    collection: Collection,
    queries: Sequence[TrainQuery],
    out: Path,
    distill: DistillConfig,
    train: RerankerTrainConfig,
    describe: Mapping[str, Any] | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Hold out part of ``queries``, build the examples of the rest, train the student,
    tune ``alpha`` on the held-out part, save it all to ``out`` (``alpha_folds`` >= 2:
    cross-fit ``alpha`` instead, :func:`~twofold.train.crossfit.cross_fit`). ``describe``:
    where the queries came from, for the record."""
    grouped = train.loss == "lce"
    if distill.prior_negatives and not grouped:
        raise InputError("--prior-negatives needs --loss lce (Margin-MSE pairs have no group)")
    if distill.prior_negatives and distill.alpha is None and distill.alpha_folds > 1:
        # one pool over every fold would show each fold's positives to the students
        # that are then scored on that fold
        raise InputError("--prior-negatives does not combine with --alpha-folds; use --holdout")
    if distill.alpha is None and distill.alpha_folds > 1:
        queries = list(queries)[: distill.max_queries]
        per_query = examples_by_query(collection, queries, distill, grouped)
        if not any(per_query):
            raise InputError(_no_examples(distill, grouped))
        check_output(out)
        record = _record(collection, distill, describe, len(queries), len(queries), 0)
        return cross_fit(
            collection,
            queries,
            per_query,
            out,
            train,
            distill.alpha_folds,
            distill.rerank_depth,
            record,
            on_step,
        )
    if distill.holdout > 0:
        train_q, held = holdout_split(queries, distill.holdout, distill.seed)
    else:
        train_q, held = list(queries), []
    examples = build_examples(collection, train_q, distill, grouped)
    if not examples:
        raise InputError(_no_examples(distill, grouped))
    tune = None
    if distill.alpha is None:
        tune = alpha_tuner(collection, held, distill.rerank_depth)
    else:
        fixed = distill.alpha
        tune = lambda _dir: {"alpha": fixed, "alpha_tuned": False}  # noqa: E731
    queries_train = min(len(train_q), distill.max_queries or len(train_q))
    extra = _record(collection, distill, describe, len(queries), queries_train, len(held))
    return train_reranker(examples, out, train, extra_args=extra, on_step=on_step, tune=tune)


def _no_examples(distill: DistillConfig, grouped: bool) -> str:
    need = "a known positive and enough negatives" if grouped else "a positive and a negative"
    return f"no training examples: no query gave {need}" + (
        f" (--loss lce needs labels or pseudo-queries, and {distill.negatives} "
        "negatives per group: lower --negatives, or use --loss margin-mse)"
        if grouped
        else ""
    )


def _record(
    collection: Collection,
    distill: DistillConfig,
    describe: Mapping[str, Any] | None,
    total: int,
    trained: int,
    held: int,
) -> dict[str, Any]:
    """How the examples were made, for ``training_args.json``."""
    return {
        "collection": str(collection.path),
        **(describe or {}),
        "queries_total": total,
        "queries_train": trained,
        "queries_heldout": held,
        "teacher": "fused, anchored (twofold.train.teacher)",
        "teachers": list(distill.teachers) if distill.teachers else None,
        "depth": distill.depth,
        "negatives": distill.negatives,
        "hard_negatives": distill.hard,
        "teacher_scale": distill.scale,
        "anchor": distill.anchor,
        "prior_negatives": distill.prior_negatives,
        "holdout": distill.holdout if distill.alpha_folds == 1 else None,
        "distill_seed": distill.seed,
    }
