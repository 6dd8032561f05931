"""Cross-fitted interpolation weight: ``alpha`` tuned on every labelled query, not on one
small held-out slice.

With one held-out split (``holdout`` 0.15) ``alpha`` is chosen on about 120 SciFact
queries. That grid is noisy: on one seed ``alpha`` 0.05 scored 0.738 on held-out and 0.25
scored 0.752, and two of three seeds settled on 0.05, where the reranker barely moves the
fused order (BENCHMARKS.md, "the LCE reranker over 3 seeds"). Cross-fitting (``folds`` K):

1. the labelled queries are cut into K folds that share no positive document
   (:func:`fold_split`; queries linked by a shared positive stay in one fold), so each
   fold measures matching, as the unseen-document test queries do;
2. for each fold a student is trained on the other folds' examples and scores the fold's
   ``hybrid`` candidates, as served: out-of-fold scores for every labelled query;
3. ``alpha`` is chosen on all of them at once (:func:`~twofold.train.interpolation.choose_alpha`);
4. the student that is kept is trained on every query and stored with that ``alpha``.

The folds' students are trained on (K-1)/K of the data, so they are a little weaker than
the final one: the chosen ``alpha`` errs towards the fused order. Cost: K + 1 trainings
of which K on a (K-1)/K share, i.e. about K times one training.
"""

from __future__ import annotations

import logging
import random
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from twofold.core.errors import InputError
from twofold.indexing.collection import Collection
from twofold.models.reranker import CrossEncoder, RerankerConfig
from twofold.train.interpolation import (
    HeldOut,
    alpha_settings,
    choose_alpha,
    held_out_candidates,
)
from twofold.train.queries import TrainQuery
from twofold.train.reranker import RerankerTrainConfig, TrainResult, train_reranker

log = logging.getLogger(__name__)


def fold_split(queries: Sequence[TrainQuery], folds: int, seed: int) -> list[list[int]]:
    """Indexes of ``queries`` in ``folds`` folds of about equal size, such that no two
    folds share a positive document. Only real labelled queries are folded (in a mix with
    pseudo-queries, those stay in training for every fold); unlabelled ones are left out.
    """
    if folds < 2:
        raise InputError("--alpha-folds must be >= 2 to cross-fit")
    labelled = [i for i, tq in enumerate(queries) if tq.positives and not tq.hidden]
    if not labelled:
        labelled = [i for i, tq in enumerate(queries) if tq.positives]
    # Union-find over shared positives: a component goes to one fold whole.
    parent = {i: i for i in labelled}

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[str, int] = {}
    for i in labelled:
        for doc in queries[i].positives:
            if doc in owner:
                parent[root(i)] = root(owner[doc])
            else:
                owner[doc] = i
    components: dict[int, list[int]] = {}
    for i in labelled:
        components.setdefault(root(i), []).append(i)
    groups = sorted(components.values(), key=lambda g: g[0])
    random.Random(seed).shuffle(groups)
    if len(groups) < folds:
        raise InputError(
            f"--alpha-folds {folds}: only {len(groups)} groups of labelled queries that "
            "share no positive; lower --alpha-folds"
        )
    out: list[list[int]] = [[] for _ in range(folds)]
    for group in sorted(groups, key=len, reverse=True):  # largest first, to the smallest fold
        min(out, key=len).extend(group)
    return [sorted(f) for f in out]


def cross_fit(
    collection: Collection,
    queries: Sequence[TrainQuery],
    examples_of: Sequence[Sequence[Any]],
    out: Path,
    train: RerankerTrainConfig,
    folds: int,
    rerank_depth: int,
    extra_args: Mapping[str, Any],
    on_step: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train the reranker on all ``queries`` with ``alpha`` cross-fitted over ``folds``;
    ``examples_of[i]``: the training examples of ``queries[i]``."""
    split = fold_split(queries, folds, train.seed)
    held: list[HeldOut] = []
    scores: list[list[float]] = []
    with tempfile.TemporaryDirectory(prefix=".crossfit-", dir=out.parent) as tmp:
        for k, fold in enumerate(split):
            inside = set(fold)
            examples = [e for i, ex in enumerate(examples_of) if i not in inside for e in ex]
            if not examples:
                raise InputError(f"fold {k + 1} of {folds}: no training examples outside it")
            log.info(
                "fold %d/%d: %d held-out queries, %d examples",
                k + 1,
                folds,
                len(fold),
                len(examples),
            )
            model_dir = Path(tmp) / f"fold-{k}"
            train_reranker(examples, model_dir, train, on_step=on_step)
            fold_held = held_out_candidates(collection, [queries[i] for i in fold], rerank_depth)
            reranker = CrossEncoder(RerankerConfig(str(model_dir)))
            held += fold_held
            scores += [reranker.score(h.query.query.text, h.texts) for h in fold_held]
    alpha, table = choose_alpha(held, scores)
    log.info("cross-fitted alpha %.2f on %d out-of-fold queries: %s", alpha, len(held), table)
    settings = {**alpha_settings(alpha, table, len(held), rerank_depth), "alpha_folds": folds}
    everything = [e for ex in examples_of for e in ex]
    return train_reranker(
        everything,
        out,
        train,
        extra_args={**extra_args, "alpha_folds": folds, "fold_sizes": [len(f) for f in split]},
        on_step=on_step,
        tune=lambda _dir: settings,
    )
