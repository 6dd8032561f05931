"""``twofold train adapter``: a low-rank residual map over the collection's frozen dense
embeddings (Adapted Dense Retrieval, arXiv 2310.05380), trained in seconds because the
document vectors are already stored and queries are encoded once.

Model (:mod:`twofold.indexing.dense.adapter`): ``f(e) = normalize(e + B (A e))``, rank ``r``;
``query`` variant maps queries only, ``both`` also gives documents their own map.

Loss per (query, positive) pair: InfoNCE (van den Oord et al. 2018) with temperature
``tau`` over the positive, ``negatives`` hard negatives from the fused teacher
(:class:`~twofold.train.teacher.Teacher`, the hybrid of the collection's retrievers) and
the other positives of the batch, plus ``l2 * ||B A||_F^2``, which pulls the map towards
the identity.

The guard against memorizing documents (a SciFact adapter trained on train judgments
learns which documents were relevant, not how to match): the training queries are split
(:func:`~twofold.train.queries.holdout_split`) so that no held-out query shares a
positive with a training query; after every epoch the held-out nDCG@10 of ``dense`` with
the adapter is measured, the best epoch is kept (early stopping with ``patience``), and
the adapter is written only if it beats the plain embeddings (epoch 0) there.

Label-free queries: a pseudo-query's positive vector is re-encoded from its document
*without* the sentence that made the query (``reencode_hidden``), so the adapter cannot
learn to match copied words; unlabelled file queries take the teacher's top document as
their positive.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from twofold.core.errors import InputError
from twofold.indexing.collection import Collection
from twofold.indexing.dense.adapter import VARIANTS, residual, write_adapter
from twofold.search.dense import DenseRetriever
from twofold.search.evaluate import score_run
from twofold.train.publish import record_files
from twofold.train.queries import TrainQuery, holdout_split, shown_text
from twofold.train.teacher import Teacher, TeacherConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdapterConfig:
    """``variant``: query | both; ``rank``: r; ``epochs``: at most this many passes;
    ``patience``: epochs without a held-out gain before stopping; ``tau``: InfoNCE
    temperature; ``negatives``: teacher hard negatives per pair; ``l2``: weight of
    ``||BA||_F^2``; ``holdout``: fraction of queries held out; ``reencode_hidden``:
    re-encode a pseudo-query's source without its sentence."""

    variant: str = "query"
    rank: int = 16
    epochs: int = 40
    patience: int = 6
    lr: float = 2e-3
    batch_size: int = 64
    tau: float = 0.05
    negatives: int = 30
    l2: float = 0.1
    holdout: float = 0.2
    seed: int = 0
    reencode_hidden: bool = True

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise InputError(f"--variant must be one of {', '.join(VARIANTS)}")
        if self.rank < 1 or self.epochs < 1 or self.batch_size < 2 or self.negatives < 1:
            raise InputError("rank >= 1, epochs >= 1, batch_size >= 2, negatives >= 1")
        if self.tau <= 0 or self.lr <= 0 or self.l2 < 0 or self.patience < 1:
            raise InputError("tau > 0, lr > 0, l2 >= 0 and patience >= 1")


@dataclass
class AdapterResult:
    """``baseline``: held-out nDCG@10 of plain embeddings; ``best``: with the kept epoch's
    adapter; ``history``: (epoch, train loss, held-out nDCG@10) per epoch."""

    baseline: float
    best: float
    best_epoch: int
    kept: bool
    train_queries: int
    heldout_queries: int
    seconds: float
    history: list[tuple[int, float, float]] = field(default_factory=list)


@dataclass(frozen=True)
class _Pairs:
    queries: np.ndarray  # (P, dim) query embeddings
    positives: np.ndarray  # (P, dim) positive doc vectors
    positive_ids: np.ndarray  # (P,) doc ordinals (-1 for a re-encoded positive)
    negatives: np.ndarray  # (P, K) doc ordinals


def _labelled(queries: Sequence[TrainQuery], teacher: Teacher) -> list[TrainQuery]:
    """Unlabelled queries get the teacher's top document as their positive."""
    out = []
    for tq in queries:
        if tq.positives:
            out.append(tq)
            continue
        ranking = teacher.rank(tq)
        if ranking.hits:
            out.append(replace(tq, positives={ranking.hits[0].doc_id: 1}))
    return out


def _pairs(
    collection: Collection,
    dense: DenseRetriever,
    queries: Sequence[TrainQuery],
    teacher: Teacher,
    config: AdapterConfig,
) -> _Pairs:
    ordinal = {d: i for i, d in enumerate(collection.docs.ids)}
    q_vecs = dense.index.encode_queries([tq.query.text for tq in queries])
    stored = dense.index.vectors
    rows_q: list[np.ndarray] = []
    rows_p: list[np.ndarray] = []
    pos_ids: list[int] = []
    negs: list[list[int]] = []
    hidden_texts: list[str] = []
    hidden_rows: list[int] = []
    for i, tq in enumerate(queries):
        judged = teacher.judge(tq)
        neg = [ordinal[d] for d in judged.negatives[: config.negatives] if d in ordinal]
        if not neg:
            continue
        neg += [neg[-1]] * (config.negatives - len(neg))  # pad short lists
        for d in judged.positives:
            if d not in ordinal:
                continue
            if config.reencode_hidden and d in tq.hidden:
                hidden_rows.append(len(rows_p))
                hidden_texts.append(shown_text(collection.docs.get(d), tq.hidden))
                pos_ids.append(-1)
            else:
                pos_ids.append(ordinal[d])
            rows_q.append(q_vecs[i])
            rows_p.append(np.asarray(stored[ordinal[d]]))
            negs.append(neg)
    if not rows_q:
        raise InputError("no training pair: no query has a positive and a hard negative")
    positives = np.stack(rows_p).astype(np.float32)
    if hidden_texts:
        log.info("re-encoding %d pseudo-query sources without their sentence", len(hidden_texts))
        positives[hidden_rows] = dense.index.encode_docs(hidden_texts)
    return _Pairs(
        np.stack(rows_q).astype(np.float32),
        positives,
        np.asarray(pos_ids, dtype=np.int64),
        np.asarray(negs, dtype=np.int64),
    )


def heldout_ndcg(
    queries: Sequence[TrainQuery], q_vecs: np.ndarray, doc_vecs: np.ndarray, ids: Sequence[str]
) -> float:
    """Mean nDCG@10 (against each query's positives) of exact inner-product search of
    ``q_vecs`` (one row per query) over ``doc_vecs`` (row i = doc ``ids[i]``)."""
    if not queries:
        return 0.0
    sims = q_vecs @ doc_vecs.T
    k = min(100, sims.shape[1])
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    run = {}
    for row, tq in enumerate(queries):
        order = top[row][np.argsort(-sims[row, top[row]], kind="stable")]
        run[tq.query.query_id] = [(ids[o], float(sims[row, o])) for o in order]
    qrels = {tq.query.query_id: dict(tq.positives) for tq in queries}
    per_query = score_run(qrels, run)
    return float(np.mean([m["ndcg@10"] for m in per_query.values()]))


def train_adapter(
    collection: Collection,
    queries: Sequence[TrainQuery],
    config: AdapterConfig,
    teacher: Teacher | None = None,
    write: bool = True,
    record: dict[str, Any] | None = None,
) -> AdapterResult:
    """Train the adapter, keep its best held-out epoch, and write it into the collection
    if it beats the plain embeddings on the held-out queries (and ``write``)."""
    import torch

    started = time.monotonic()
    teacher = teacher or Teacher(collection, TeacherConfig(depth=max(50, config.negatives + 5)))
    dense = DenseRetriever(collection, use_adapter=False)
    labelled = _labelled(queries, teacher)
    train_q, held_q = holdout_split(labelled, config.holdout, config.seed)
    if not train_q or not held_q:
        raise InputError(f"too few training queries ({len(labelled)}) to hold some out")
    pairs = _pairs(collection, dense, train_q, teacher, config)
    docs_np = np.array(dense.index.vectors, dtype=np.float32)  # a writable copy for torch
    held_vecs = dense.index.encode_queries([tq.query.text for tq in held_q])
    ids = collection.docs.ids

    torch.manual_seed(config.seed)
    dim, r = docs_np.shape[1], config.rank
    params = {
        "query_a": torch.nn.Parameter(torch.randn(r, dim) / dim**0.5),
        "query_b": torch.nn.Parameter(torch.zeros(dim, r)),
    }
    if config.variant == "both":
        params["doc_a"] = torch.nn.Parameter(torch.randn(r, dim) / dim**0.5)
        params["doc_b"] = torch.nn.Parameter(torch.zeros(dim, r))
    optimizer = torch.optim.Adam(list(params.values()), lr=config.lr)
    docs_t = torch.from_numpy(docs_np)
    q_t, p_t = torch.from_numpy(pairs.queries), torch.from_numpy(pairs.positives)
    n_t = torch.from_numpy(pairs.negatives)

    def apply(x: Any, a: Any, b: Any) -> Any:
        return torch.nn.functional.normalize(x + (x @ a.T) @ b.T, dim=-1)

    def snapshot() -> dict[str, np.ndarray]:
        return {k: v.detach().numpy().copy() for k, v in params.items()}

    def evaluate(weights: dict[str, np.ndarray]) -> float:
        qv = residual(held_vecs, weights["query_a"], weights["query_b"])
        dv = docs_np
        if config.variant == "both":
            dv = residual(docs_np, weights["doc_a"], weights["doc_b"])
        return heldout_ndcg(held_q, qv, dv, ids)

    best_weights = snapshot()
    baseline = best = evaluate(best_weights)
    best_epoch, stale = 0, 0
    result = AdapterResult(baseline, best, 0, False, len(train_q), len(held_q), 0.0)
    rng = np.random.default_rng(config.seed)
    for epoch in range(1, config.epochs + 1):
        losses = []
        order = rng.permutation(len(q_t))
        for start in range(0, len(order), config.batch_size):
            batch = torch.from_numpy(order[start : start + config.batch_size])
            if len(batch) < 2:
                continue
            q = apply(q_t[batch], params["query_a"], params["query_b"])
            pos, neg = p_t[batch], docs_t[n_t[batch]]  # (B, dim), (B, K, dim)
            if config.variant == "both":
                pos = apply(pos, params["doc_a"], params["doc_b"])
                neg = apply(neg, params["doc_a"], params["doc_b"])
            in_batch = q @ pos.T  # (B, B): column j is positive j; the diagonal is the target
            hard = torch.einsum("bd,bkd->bk", q, neg)  # (B, K)
            logits = torch.cat([in_batch, hard], dim=1) / config.tau
            target = torch.arange(len(batch))
            loss = torch.nn.functional.cross_entropy(logits, target)
            for side in ("query", "doc") if config.variant == "both" else ("query",):
                a, b = params[f"{side}_a"], params[f"{side}_b"]
                loss = loss + config.l2 * ((b.T @ b) * (a @ a.T)).sum()  # ||B A||_F^2
            optimizer.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            losses.append(float(loss.detach()))
        weights = snapshot()
        score = evaluate(weights)
        result.history.append((epoch, float(np.mean(losses)), score))
        if score > best:
            best, best_weights, best_epoch, stale = score, weights, epoch, 0
        else:
            stale += 1
            if stale >= config.patience:
                break
    result.best, result.best_epoch = best, best_epoch
    result.kept = best > baseline
    result.seconds = time.monotonic() - started
    log.info(
        "adapter %s r=%d: held-out nDCG@10 %.4f -> %.4f (epoch %d of %d)",
        config.variant,
        r,
        baseline,
        best,
        best_epoch,
        len(result.history),
    )
    if write and result.kept:
        info = {
            "rank": r,
            "dim": dim,
            "encoder_sha256": dense.index.entry.get("encoder", {}).get("sha256"),
            "config": asdict(config),
            "heldout_ndcg@10": {"plain": round(baseline, 6), "adapted": round(best, 6)},
            "best_epoch": best_epoch,
            "train_queries": len(train_q),
            "heldout_queries": len(held_q),
        }
        card = {
            "trainer": "twofold train adapter",
            "title": f"Dense query adapter ({config.variant}, rank {r})",
            "description": "Low-rank residual map e + B(A e) over frozen embeddings "
            "(Adapted Dense Retrieval, arXiv 2310.05380); used by `dense` automatically.",
            "queries": len(labelled),
            "steps": best_epoch,
            "seed": config.seed,
            "seconds": round(result.seconds, 1),
            "metrics": {
                "heldout_ndcg@10_plain": round(baseline, 4),
                "heldout_ndcg@10_adapted": round(best, 4),
            },
            **(record or {}),
            **info,
        }
        write_adapter(
            collection.path,
            config.variant,
            best_weights,
            info,
            doc_vectors=dense.index.vectors if config.variant == "both" else None,
            extra_files=record_files(card),
        )
    return result
