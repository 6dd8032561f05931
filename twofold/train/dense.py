"""``twofold train dense``: fine-tune the bi-encoder on the collection's own training
queries, with hard negatives from its fused retrievers, and distil their ensemble.

Loss per batch of ``B`` (query, positive) pairs, each with ``negatives`` hard negatives
from the fused, anchored :class:`~twofold.train.teacher.Teacher`:

- InfoNCE (van den Oord et al. 2018) with temperature ``tau`` of each query against every
  document of the batch (its positive, its hard negatives, and the other queries'
  documents as in-batch negatives; the multiple-negatives ranking loss of
  sentence-transformers, Henderson et al. 2017, arXiv 1705.00652);
- plus ``kl_weight`` times the listwise KL from the teacher's softmax over the query's own
  group (positive + its negatives) to the student's
  (:func:`~twofold.train.losses.kl_distill`), the ensemble distillation.

Hard negatives are drawn (seeded) from the teacher's ranks ``skip+1 .. skip+pool``: the
very top unjudged candidates are the likeliest false negatives.

The guard against memorized documents: the training queries are split with
:func:`~twofold.train.queries.holdout_split`, so no held-out query shares a positive with
a training query. After training the whole corpus is encoded once with the student and
its held-out nDCG@10 is compared with the collection's own ``dense`` vectors; both figures
go into the model card, and ``kept`` says whether the student beat them. The output is a
sentence-transformers style directory (pooling files copied from the base) that
``twofold index build --dense-model DIR`` reads.
"""

from __future__ import annotations

import logging
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from twofold.core.errors import InputError
from twofold.indexing.collection import Collection
from twofold.indexing.dense.shards import encoding_key
from twofold.models.dense import DenseEncoder
from twofold.models.device import resolve_device, resolve_precision
from twofold.models.registry import model_fingerprint, resolve
from twofold.search.dense import DenseRetriever
from twofold.train.adapter import heldout_ndcg
from twofold.train.loop import (
    LoopConfig,
    adamw_linear_decay,
    mixed_precision,
    optimizer_step,
    seed_all,
    shuffled_batches,
    tail_mean,
    total_steps,
)
from twofold.train.losses import kl_distill
from twofold.train.publish import check_output, publish_model
from twofold.train.queries import TrainQuery, holdout_split, shown_text
from twofold.train.teacher import Teacher, TeacherConfig

log = logging.getLogger(__name__)

# Files of a sentence-transformers directory that say how to pool; copied from the base.
POOLING_FILES = (
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "1_Pooling",
)


@dataclass(frozen=True)
class DenseTrainConfig(LoopConfig):
    """:class:`LoopConfig` (``max_length``: document tokens); ``query_length``: query
    tokens; ``negatives``: hard negatives per pair, drawn from teacher ranks
    ``skip+1 .. skip+pool``; ``tau``: InfoNCE temperature; ``kl_weight``: of the teacher
    KL; ``holdout``: fraction of queries held out; ``scale``: inverse temperature of the
    teacher's min-max scores in the KL."""

    base: str = "minilm-l6"
    epochs: int = 1
    batch_size: int = 16
    lr: float = 2e-5
    max_length: int = 256
    query_length: int = 64
    negatives: int = 2
    skip: int = 2
    pool: int = 30
    tau: float = 0.05
    kl_weight: float = 0.0
    scale: float = 10.0
    holdout: float = 0.2

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.negatives < 0 or self.skip < 0 or self.pool < max(1, self.negatives):
            raise InputError("negatives >= 0, skip >= 0 and pool >= negatives")
        if self.tau <= 0 or self.kl_weight < 0 or self.query_length < 4:
            raise InputError("tau > 0, kl_weight >= 0 and query_length >= 4")
        if self.kl_weight > 0 and self.negatives == 0:
            raise InputError("the teacher KL needs negatives > 0")
        if not 0 < self.holdout < 1:
            raise InputError("holdout must be in (0, 1)")


@dataclass(frozen=True)
class DenseExample:
    """A query, its positive then hard negatives as shown, and the teacher's scores."""

    query: str
    texts: tuple[str, ...]
    teacher: tuple[float, ...]


@dataclass
class DenseResult:
    out: Path
    steps: int
    heldout_base: float
    heldout_trained: float
    train_queries: int
    heldout_queries: int
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    # the corpus as the published student encodes it (its held-out check) and what made
    # it (``shards.encoding_key``): a rebuild with that model can reuse the vectors
    doc_vectors: np.ndarray | None = None
    doc_encoding: dict[str, Any] = field(default_factory=dict)

    @property
    def kept(self) -> bool:
        return self.heldout_trained > self.heldout_base


def dense_examples(
    collection: Collection,
    queries: Sequence[TrainQuery],
    teacher: Teacher,
    config: DenseTrainConfig,
) -> list[DenseExample]:
    """One example per known positive; queries with none are skipped (the teacher's top
    document stands in only for the adapter, whose copy bias is guarded separately)."""
    rng = random.Random(config.seed)
    out = []
    for tq in queries:
        if not tq.positives:
            continue
        judged = teacher.judge(tq)
        window = list(judged.negatives[config.skip : config.skip + config.pool])
        if len(window) < config.negatives:
            continue
        for p in judged.positives:
            ids = [p, *rng.sample(window, config.negatives)]
            texts = tuple(shown_text(collection.docs.get(d), tq.hidden) for d in ids)
            out.append(DenseExample(tq.query.text, texts, tuple(judged.scores[d] for d in ids)))
    return out


def contrastive_loss(q: Any, docs: Any, group: int, tau: float) -> Any:
    """InfoNCE of ``q`` (B, dim) against all ``docs`` (B * group, dim), where query i's
    positive is row ``i * group``; the other rows are negatives."""
    import torch

    logits = q @ docs.T / tau
    target = torch.arange(q.shape[0], device=q.device) * group
    return torch.nn.functional.cross_entropy(logits, target)


def train_dense(
    collection: Collection,
    queries: Sequence[TrainQuery],
    out: Path,
    config: DenseTrainConfig,
    describe: dict[str, Any] | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> DenseResult:
    """Fine-tune ``config.base`` and publish it at ``out`` (see the module doc)."""
    import torch

    started = time.monotonic()
    base_dir = Path(str(resolve(config.base)))
    check_output(out, base_dir)  # before any work
    labelled = [tq for tq in queries if tq.positives]
    train_q, held_q = holdout_split(labelled, config.holdout, config.seed)
    if not train_q or not held_q:
        raise InputError(f"too few labelled training queries ({len(labelled)}) to hold some out")
    teacher = Teacher(collection, TeacherConfig(depth=max(50, config.skip + config.pool + 5)))
    examples = dense_examples(collection, train_q, teacher, config)
    if not examples:
        raise InputError("no training example: no query has a positive and enough negatives")
    baseline_dense = DenseRetriever(collection, use_adapter=False)
    held_text = [tq.query.text for tq in held_q]
    heldout_base = heldout_ndcg(
        held_q,
        baseline_dense.index.encode_queries(held_text),
        np.asarray(baseline_dense.index.vectors, dtype=np.float32),
        collection.docs.ids,
    )

    seed_all(config.seed, torch)
    device = resolve_device(config.device)
    student = DenseEncoder(config.base, device=device, max_length=config.max_length)
    student.model.train()
    total = total_steps(len(examples), config)
    optimizer, scheduler = adamw_linear_decay(student.model, config, total, torch)
    group = 1 + config.negatives
    result = DenseResult(out, 0, heldout_base, 0.0, len(train_q), len(held_q))
    for batch in shuffled_batches(examples, config.batch_size, config.epochs, config.seed):
        if len(batch) < 2:
            continue  # one pair has no in-batch negative
        with mixed_precision(device, config.precision, torch):
            q = student.embed([e.query for e in batch], config.query_length).float()
            docs = student.embed([t for e in batch for t in e.texts]).float()
            loss = contrastive_loss(q, docs, group, config.tau)
            if config.kl_weight > 0:
                own = torch.einsum("bd,bgd->bg", q, docs.view(len(batch), group, -1)) / config.tau
                teacher_scores = torch.tensor([e.teacher for e in batch], device=device)
                loss = loss + config.kl_weight * kl_distill(own, config.scale * teacher_scores)
        optimizer_step(loss, student.model, optimizer, scheduler, torch)
        result.steps += 1
        result.losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(result.steps, result.losses[-1])
    student.model.eval()
    log.info("encoding the corpus with the student for the held-out check")
    texts = [d.contents for d in collection.docs]
    # in the precision a rebuild of this collection encodes its documents in, so that
    # the rebuild can take these vectors (``shards.ReuseVectors``); bfloat16 here is
    # autocast over the float32 student, a rebuild's is bfloat16 weights: the same
    # precision, not the same bits
    doc_precision = _doc_precision(collection, device)
    with mixed_precision(device, doc_precision, torch):
        doc_vecs = np.concatenate(
            [student.encode_docs(texts[i : i + 256]) for i in range(0, len(texts), 256)]
        )
        with torch.inference_mode():
            prefixed = [student.query_prefix + t for t in held_text]  # as encode_queries does
            held_vectors = student.embed(prefixed, config.query_length).float().cpu().numpy()
    result.heldout_trained = heldout_ndcg(held_q, held_vectors, doc_vecs, collection.docs.ids)
    result.doc_vectors = doc_vecs
    result.seconds = time.monotonic() - started
    log.info(
        "dense: held-out nDCG@10 %.4f (collection) -> %.4f (student), %d steps in %.0fs",
        heldout_base,
        result.heldout_trained,
        result.steps,
        result.seconds,
    )
    if not result.kept:
        log.warning("the student does not beat the collection's dense vectors on held-out queries")
    record = {
        "trainer": "twofold train dense",
        "title": "Fine-tuned dense bi-encoder",
        "description": "InfoNCE over hybrid-mined hard negatives and in-batch negatives, "
        "plus KL to the fused teacher. Build with `twofold index build --dense-model DIR`.",
        **asdict(config),
        "base_dir": str(base_dir),
        "collection": str(collection.path),
        **(describe or {}),
        "examples": len(examples),
        "train_queries": len(train_q),
        "heldout_queries": len(held_q),
        "steps": result.steps,
        "seconds": round(result.seconds, 1),
        "metrics": {
            "first_loss": round(result.losses[0], 4),
            "final_loss": round(tail_mean(result.losses), 4),
            "heldout_ndcg@10_collection_dense": round(heldout_base, 4),
            "heldout_ndcg@10_student": round(result.heldout_trained, 4),
            "kept": result.kept,
        },
    }

    def write(staging: Path) -> None:
        student.model.to("cpu").save_pretrained(staging)
        student.tokenizer.save_pretrained(staging)
        for name in POOLING_FILES:
            src = base_dir / name
            if src.is_dir():
                shutil.copytree(src, staging / name)
            elif src.is_file():
                shutil.copy2(src, staging / name)

    publish_model(out, write, record, base_dir)
    result.doc_encoding = {
        **encoding_key(model_fingerprint(str(out))["sha256"], student),
        "precision": doc_precision,  # what encoded doc_vecs
    }
    return result


def _doc_precision(collection: Collection, device: str) -> str:
    """``fp32`` or ``bf16``: the precision a rebuild of ``collection``'s dense sub-index
    on ``device`` encodes in (its recorded ``precision`` option, resolved)."""
    recorded = (collection.manifest.build.get("options") or {}).get("dense") or {}
    return resolve_precision(str(recorded.get("precision", "auto")), device)
