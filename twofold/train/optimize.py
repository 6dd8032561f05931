"""``twofold optimize``: run the training steps that pay on a collection, keeping each
only if it improves nDCG@10 on held-out training queries, and write what was kept into the
collection so that ``eval``, ``search`` and ``serve`` use it with no extra flags.

Queries: a labelled training split, or pseudo-queries (no labels; see
:mod:`twofold.train.queries`). They are split once (:func:`holdout_split`): no held-out
query shares a positive with a tuning query, so a step that memorizes documents does not
pass the check. Steps, in order, each measured on the held-out queries against the
collection as the previous steps left it:

1. ``dense``: the collection's bi-encoder fine-tuned on the tuning queries
   (:func:`twofold.train.dense.train_dense`), and a staged copy of the collection with
   the corpus vectors the trainer made for its own held-out check (``ReuseVectors``: the
   corpus is encoded once, not twice), published only if it passes the check
   (:mod:`twofold.indexing.rebuild`). First, because fusion weights and the adapter are
   tuned over the dense vectors.
2. ``fusion``: the ``hybrid`` weights, searched on the tuning queries over RRF and convex
   candidates (:func:`twofold.search.tune.search_fusion`), starting from one vote per model
   family. Not with pseudo-queries: the index holds each pseudo-query's words, so lexical
   retrievers find its source by copying, and the held-out pseudo-queries share that bias,
   so they cannot catch it (measured on Cranfield: weights tuned on pseudo-queries went to
   bm25 0.7 / dense 0.3 and *lowered* test nDCG@10 from 0.4138 to 0.3927, while the
   held-out pseudo-queries rose from 0.896 to 0.959). The family prior is kept instead.
3. ``adapter``: a query adapter over the dense embeddings (:mod:`twofold.train.adapter`).
4. ``reranker``: a cross-encoder distilled from the fused teacher
   (:func:`train_collection_reranker`), stored as
   ``COLLECTION/reranker`` and used by ``hybrid+rerank``.

A step is kept only if it raises the held-out score beyond chance: the mean nDCG@10 rises
and a paired randomization test over the held-out queries gives p < ``significance``
(0.05). Otherwise it is undone and reported as not kept. A bare "any gain" rule kept
steps that lowered test nDCG@10 (label-free Cranfield, session 5: held-out gains of
+0.001 to +0.002 on pseudo-queries near 0.97 came with test changes of -0.005 to +0.002).
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from twofold.core.errors import InputError
from twofold.core.types import Qrels
from twofold.indexing.build import build_lock
from twofold.indexing.bundle import bundled_model
from twofold.indexing.collection import Collection
from twofold.indexing.dense.adapter import FOLDER as ADAPTER_FOLDER
from twofold.indexing.dense.shards import ReuseVectors
from twofold.indexing.encoding import LocalExecutor
from twofold.indexing.manifest import read_manifest, write_manifest
from twofold.indexing.rebuild import discard_rebuild, publish_rebuild, stage_rebuild
from twofold.models.device import resolve_device
from twofold.search.evaluate import clean_run, score_run
from twofold.search.fusion import FusionConfig
from twofold.search.pipeline import (
    RERANKER_FOLDER,
    build_pipeline,
    collection_retrievers,
    family_fusion,
    open_collection_reranker,
    tuned_fusion,
)
from twofold.search.tune import fusion_lists, search_fusion, write_tuned_fusion
from twofold.train.adapter import AdapterConfig, train_adapter
from twofold.train.queries import (
    PseudoConfig,
    TrainQuery,
    holdout_split,
    load_queries,
)

log = logging.getLogger(__name__)
STEPS = ("dense", "fusion", "adapter", "reranker")
PSEUDO_FUSION = (
    "not tuned on pseudo-queries (lexical retrievers win by copying their words); "
    "one vote per model family kept"
)
RERANKER_BASE = "splade-tiny"  # BERT-tiny: the student that reranks 50 candidates in time
RERANKER_LR = 1e-4


@dataclass(frozen=True)
class OptimizeJob:
    """``source``: split | pseudo; ``steps``: which of ``STEPS`` to try; ``holdout``: the
    fraction of queries kept for the checks; ``significance``: a step is kept only when
    its held-out gain has a paired randomization p-value below it (1 keeps any gain);
    ``progress``: bars for the long parts (the dense step's corpus encoding)."""

    collection: Path
    source: str = "split"
    dataset: Path | None = None
    split: str = "train"
    steps: tuple[str, ...] = STEPS
    holdout: float = 0.25
    seed: int = 0
    pseudo_count: int = 800
    reranker_epochs: int = 1
    reranker_base: str = RERANKER_BASE
    dense_epochs: int = 2
    significance: float = 0.05
    progress: bool = False

    def __post_init__(self) -> None:
        unknown = [s for s in self.steps if s not in STEPS]
        if unknown:
            raise InputError(f"unknown step {unknown[0]!r}; steps are {', '.join(STEPS)}")
        if self.dense_epochs < 1:
            raise InputError("--dense-epochs must be >= 1")
        if self.source not in ("split", "pseudo"):
            raise InputError(
                "optimize needs queries it can check: --dataset DIR --split train, or "
                "--queries pseudo (a file of unlabelled queries has nothing to hold out)"
            )


@dataclass
class StepReport:
    step: str
    before: float
    after: float
    kept: bool
    detail: str = ""
    seconds: float = 0.0
    p_value: float | None = None


@dataclass
class OptimizeReport:
    queries: int
    tuning: int
    heldout: int
    source: str
    steps: list[StepReport] = field(default_factory=list)

    def table(self) -> str:
        head = f"{'step':<10}{'held-out before':>16}{'after':>9}{'kept':>6}{'s':>7}  detail"
        lines = [
            f"optimize ({self.source}: {self.tuning} tuning, {self.heldout} held-out queries; "
            "nDCG@10 on the held-out ones)",
            head,
            "-" * len(head),
        ]
        for s in self.steps:
            lines.append(
                f"{s.step:<10}{s.before:>16.4f}{s.after:>9.4f}{'yes' if s.kept else 'no':>6}"
                f"{s.seconds:>7.0f}  {s.detail}"
            )
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "queries": self.queries,
            "tuning": self.tuning,
            "heldout": self.heldout,
            "source": self.source,
            "steps": [s.__dict__ for s in self.steps],
        }


def qrels_of(queries: Sequence[TrainQuery]) -> Qrels:
    return {tq.query.query_id: dict(tq.positives) for tq in queries}


def paired_p_value(before: Sequence[float], after: Sequence[float], seed: int = 0) -> float:
    """One-sided p-value that ``after`` beats ``before`` on the same queries: a paired
    randomization (sign-flip) test of the mean per-query difference. Exact for up to 16
    queries with a non-zero difference, else 10,000 seeded random flips, ``(k + 1) /
    (n + 1)``. 1.0 when nothing changed."""
    diffs = np.asarray(after, dtype=float) - np.asarray(before, dtype=float)
    diffs = diffs[np.abs(diffs) > 1e-12]
    if diffs.size == 0:
        return 1.0
    observed = diffs.sum()
    if diffs.size <= 16:
        signs = np.array(np.meshgrid(*[[1.0, -1.0]] * diffs.size)).reshape(diffs.size, -1).T
        return float(np.mean(signs @ diffs >= observed - 1e-12))
    rng = np.random.default_rng(seed)
    signs = rng.choice([1.0, -1.0], size=(10_000, diffs.size))
    return float((np.sum(signs @ diffs >= observed - 1e-12) + 1) / (10_000 + 1))


def heldout_scores(
    collection_path: Path, pipeline: str, queries: Sequence[TrainQuery]
) -> list[float]:
    """Per-query nDCG@10 (in ``queries``' order) of the named pipeline on the collection as
    it is on disk now (reopened, so the latest manifest, adapter and reranker count)."""
    collection = Collection(collection_path)
    reranker = open_collection_reranker(collection) if pipeline.endswith("+rerank") else None
    built = build_pipeline(collection, pipeline, reranker=reranker)
    run = {
        tq.query.query_id: clean_run(tq.query.query_id, built.search(tq.query, 100))[0]
        for tq in queries
    }
    per_query = score_run(qrels_of(queries), run)
    return [per_query[tq.query.query_id]["ndcg@10"] for tq in queries]


def heldout_score(collection_path: Path, pipeline: str, queries: Sequence[TrainQuery]) -> float:
    """Mean of :func:`heldout_scores`."""
    return float(np.mean(heldout_scores(collection_path, pipeline, queries)))


def _verdict(
    job: OptimizeJob, name: str, before: Sequence[float], after: Sequence[float], detail: str
) -> StepReport:
    """Keep a step only if its held-out gain is positive and beyond chance
    (:func:`paired_p_value` below ``job.significance``)."""
    b, a = float(np.mean(before)), float(np.mean(after))
    p = paired_p_value(before, after, job.seed)
    kept = a > b and p < job.significance
    return StepReport(name, b, a, kept, f"{detail}; p={p:.3f}", p_value=p)


def _fusion_step(job: OptimizeJob, tune: list[TrainQuery], held: list[TrainQuery]) -> StepReport:
    collection = Collection(job.collection)
    names = collection_retrievers(collection)
    if len(names) < 2:
        raise InputError("the fusion step needs two or more retrievers")
    if job.source == "pseudo":
        score = heldout_score(job.collection, "hybrid", held)
        return StepReport("fusion", score, score, False, PSEUDO_FUSION)
    prior = family_fusion(names)
    current = tuned_fusion(collection) or prior
    queries = [tq.query for tq in tune + held]
    lists = fusion_lists(collection, names, queries)
    tune_q = [tq.query for tq in tune]
    best, score, details = search_fusion(names, tune_q, qrels_of(tune), lists, first=prior)

    def held_scores(fusion: FusionConfig) -> list[float]:
        held_lists = {tq.query.query_id: lists[tq.query.query_id] for tq in held}
        run = {q: clean_run(q, fusion.fuse(q, held_lists[q], 100))[0] for q in held_lists}
        per_query = score_run(qrels_of(held), run)
        return [per_query[tq.query.query_id]["ndcg@10"] for tq in held]

    result = _verdict(job, "fusion", held_scores(current), held_scores(best), best.describe())
    before, after = result.before, result.after
    if result.kept:
        tuned = {
            "source": job.source,
            "split": job.split if job.source == "split" else None,
            "queries": len(tune),
            "metric": "ndcg@10",
            "score": round(score, 6),
            "heldout": {"queries": len(held), "before": round(before, 6), "after": round(after, 6)},
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            **details,
        }
        write_tuned_fusion(job.collection, names, best, tuned)
    return result


def _undoable(path: Path, step: Callable[[], str]) -> tuple[Callable[[], None], str]:
    """Run ``step`` with ``path`` set aside first; returns (undo, detail). ``undo`` puts
    the earlier ``path`` back (or removes the new one when there was none)."""
    backup = path.with_name(f".{path.name}.before-optimize")
    shutil.rmtree(backup, ignore_errors=True)
    if path.exists():
        shutil.copytree(path, backup)

    def undo() -> None:
        shutil.rmtree(path, ignore_errors=True)
        if backup.exists():
            backup.rename(path)

    try:
        detail = step()
    except BaseException:
        undo()
        raise
    return undo, detail


def _adapter_step(
    job: OptimizeJob, tune: list[TrainQuery], held: list[TrainQuery], before: list[float]
) -> StepReport:
    collection = Collection(job.collection)
    if not collection.has("dense"):
        score = float(np.mean(before))
        return StepReport("adapter", score, score, False, "no dense index")
    config = AdapterConfig(seed=job.seed)

    def run() -> str:
        result = train_adapter(collection, tune, config, record={"data": f"optimize {job.source}"})
        return (
            f"inner held-out {result.baseline:.4f}->{result.best:.4f}, "
            f"epoch {result.best_epoch}{'' if result.kept else ' (not written)'}"
        )

    undo, detail = _undoable(job.collection / ADAPTER_FOLDER, run)
    result = _verdict(
        job, "adapter", before, heldout_scores(job.collection, "hybrid", held), detail
    )
    if not result.kept:
        undo()
    shutil.rmtree(job.collection / f".{ADAPTER_FOLDER}.before-optimize", ignore_errors=True)
    return result


def _reranker_step(
    job: OptimizeJob, tune: list[TrainQuery], held: list[TrainQuery], before: list[float]
) -> StepReport:
    target = job.collection / RERANKER_FOLDER

    def run() -> str:
        return train_collection_reranker(
            Collection(job.collection),
            tune,
            target,
            job.seed,
            job.reranker_epochs,
            job.reranker_base,
        )

    undo, detail = _undoable(target, run)
    after = heldout_scores(job.collection, "hybrid+rerank", held)
    result = _verdict(job, "reranker", before, after, detail)
    if not result.kept:
        undo()
    shutil.rmtree(target.with_name(f".{target.name}.before-optimize"), ignore_errors=True)
    return result


def _dense_step(
    job: OptimizeJob, tune: list[TrainQuery], held: list[TrainQuery], before: list[float]
) -> StepReport:
    """Fine-tune the collection's own bi-encoder on the tuning queries
    (:func:`twofold.train.dense.train_dense`), re-encode the corpus with it into a staged
    copy of the collection (:mod:`twofold.indexing.rebuild`: the other sub-indexes are
    hard-linked, ``interests`` is rebuilt, the adapter over the old vectors is dropped),
    and publish that copy only if held-out ``hybrid`` improves beyond chance."""
    import tempfile

    from twofold.train.dense import DenseTrainConfig, train_dense

    collection = Collection(job.collection)
    if not collection.has("dense"):
        score = float(np.mean(before))
        return StepReport("dense", score, score, False, "no dense index")
    entry = collection.manifest.sub_indexes["dense"]
    base = bundled_model(collection.root / "dense", entry, str(entry["model"]))
    config = DenseTrainConfig(base=base, epochs=job.dense_epochs, seed=job.seed)
    parent = job.collection.absolute().parent
    prefix = f".{job.collection.name}.dense-"
    with build_lock(job.collection), tempfile.TemporaryDirectory(prefix=prefix, dir=parent) as tmp:
        model = Path(tmp) / "dense"
        trained = train_dense(collection, tune, model, config, {"data": f"optimize {job.source}"})
        executor = None
        if trained.doc_vectors is not None:  # the trainer's corpus encoding, not done twice
            local = LocalExecutor(resolve_device("auto"), job.progress)
            executor = ReuseVectors(local, trained.doc_vectors, trained.doc_encoding)
        staged = stage_rebuild(
            job.collection, "dense", {"model": str(model)}, job.progress, executor
        )
        try:
            after = heldout_scores(staged, "hybrid", held)
        except BaseException:
            discard_rebuild(job.collection)
            raise
        detail = (
            f"{trained.steps} steps; inner held-out dense "
            f"{trained.heldout_base:.4f}->{trained.heldout_trained:.4f}"
        )
        result = _verdict(job, "dense", before, after, detail)
        if result.kept:
            publish_rebuild(job.collection)
        else:
            discard_rebuild(job.collection)
    return result


def train_collection_reranker(
    collection: Collection,
    queries: Sequence[TrainQuery],
    out: Path,
    seed: int,
    epochs: int,
    base: str = RERANKER_BASE,
) -> str:
    """The ``train reranker --loss lce`` recipe (:func:`distill_reranker`): each known
    positive (a label or a pseudo-query's source) first in a group with hard negatives
    from the fused teacher; the interpolation weight with the fused score is tuned on 15%
    of ``queries`` kept out of training. Returns a one-line description."""
    from twofold.train.distill import DistillConfig, distill_reranker
    from twofold.train.reranker import RerankerTrainConfig

    distill = DistillConfig(negatives=7, hard=3, holdout=0.15, seed=seed)
    train = RerankerTrainConfig(
        base=base, loss="lce", epochs=epochs, lr=RERANKER_LR, batch_size=16, seed=seed
    )
    result = distill_reranker(
        collection, queries, out, distill, train, describe={"data": "optimize"}
    )
    return f"{result.steps} steps, loss {result.final_loss:.3f}"


def optimize(job: OptimizeJob) -> OptimizeReport:
    """Run the job's steps in order; see the module docstring."""
    collection = Collection(job.collection)
    pseudo = PseudoConfig(count=job.pseudo_count, seed=job.seed)
    queries = load_queries(job.source, collection, job.dataset, job.split, pseudo)
    tune, held = holdout_split(queries, job.holdout, job.seed)
    if len(tune) < 2 or len(held) < 2:
        raise InputError(f"too few training queries ({len(queries)}) to tune and hold out")
    report = OptimizeReport(len(queries), len(tune), len(held), job.source)
    for step in job.steps:
        started = time.monotonic()
        log.info("optimize: step %s", step)
        if step == "fusion":
            result = _fusion_step(job, tune, held)
        else:
            before = heldout_scores(job.collection, "hybrid", held)
            if step == "dense":
                result = _dense_step(job, tune, held, before)
            elif step == "adapter":
                result = _adapter_step(job, tune, held, before)
            else:
                result = _reranker_step(job, tune, held, before)
        result.seconds = time.monotonic() - started
        report.steps.append(result)
        log.info(
            "optimize: %s %.4f -> %.4f kept=%s", step, result.before, result.after, result.kept
        )
    manifest = read_manifest(job.collection)
    pipelines = dict(manifest.pipelines)
    pipelines["optimize"] = {
        **report.to_json(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_manifest(job.collection, replace(manifest, pipelines=pipelines))
    return report
