"""Training of the inference-free sparse document encoder on prepared examples.

IDF-aware FLOPS plus heterogeneous ensemble distillation (Geng et al. 2024, "Towards
Competitive Search Relevance For Inference-Free Learned Sparse Retrievers", arXiv
2411.04403; DESIGN.md, Training). The student is a Hugging Face ``*ForMaskedLM``
(default ``splade-tiny``) used as the document encoder of
:class:`twofold.models.sparse.MLMSparseEncoder` (its training path, with gradients)::

    w_d = log(1 + relu(max_i mask_i * logits_i))     [V], special tokens zeroed
    q   = 1[j in tokens(q)] * relu(idf_j)            [V], no model (IdfQueryEncoder)
    s(q, d) = q . w_d = sum_{t in tokens(q)} idf_t * w_d[t]

Per step, a batch of ``B`` queries each with a group of ``G`` documents and teacher
logits ``t`` ([B, G]): ``loss = KL(softmax(t) || softmax(s)) + lambda_t * FLOPS(w)``
where the FLOPS regularizer sees the raw weights ``w`` of the ``B * G`` documents (not
``idf * w``: the IDF-aware variant) and ``lambda_t`` warms up quadratically from 0 to
``lambda_max`` over ``warmup_steps``.

The result is a model directory in the OpenSearch doc-only layout that
``twofold index build --retrievers sparse --sparse-model DIR`` reads: config, weights,
tokenizer, ``idf.json`` (token -> idf, the query side) and ``training_args.json``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from twofold.core.errors import DependencyError, InputError
from twofold.models.device import resolve_device
from twofold.train.loop import (
    LoopConfig,
    adamw_linear_decay,
    fit_length,
    mixed_precision,
    optimizer_step,
    seed_all,
    shuffled_batches,
    tail_mean,
    total_steps,
)
from twofold.train.losses import flops, flops_lambda, kl_distill
from twofold.train.publish import check_output, publish_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SparseExample:
    """One training query with its group of ``G`` documents and their teacher logits
    (``teacher[g]``: DESIGN.md's ``30 * mean_teacher(min-max score)`` of ``docs[g]``)."""

    query: str
    docs: tuple[str, ...]
    teacher: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.docs or len(self.docs) != len(self.teacher):
            raise InputError("an example needs as many teacher scores as documents (>= 1)")


@dataclass(frozen=True)
class SparseTrainConfig(LoopConfig):
    """:class:`LoopConfig` with ``base`` a registry name or ``*ForMaskedLM`` directory;
    ``batch_size``: queries per step (``B``; ``B * G`` documents are encoded);
    ``max_length``: tokens per document while training; ``lambda_max``: the FLOPS
    weight ``lambda`` of SPLADE / Geng et al. after warm-up; ``warmup_steps``: ``T`` of
    the quadratic warm-up ``lambda * min(1, t/T)^2``.

    Defaults: the best of the settings tried on held-out SciFact train queries
    (BENCHMARKS.md). Train at the build's ``max_length`` (256): 128 lost about 0.02
    nDCG@10 there. ``lambda_max`` 0.01 gave the baseline's nDCG@10 with 2.7x fewer terms
    per document, 0.001 +0.01 nDCG@10 with 1.7x fewer (the KL term alone sparsifies
    too; under Adam a small FLOPS gradient still moves a weight by about ``lr``)."""

    base: str = "splade-tiny"
    batch_size: int = 4
    lr: float = 1e-4
    lambda_max: float = 0.001
    warmup_steps: int = 20

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lambda_max < 0 or self.warmup_steps < 0:
            raise InputError("lambda_max >= 0 and warmup_steps >= 0")


@dataclass
class SparseTrainResult:
    """Per optimizer step: ``losses`` (total), ``kl``, ``flops`` (unweighted), ``lambdas``
    and ``active`` (mean nonzero weights per document of the batch)."""

    out: Path
    steps: int = 0
    losses: list[float] = field(default_factory=list)
    kl: list[float] = field(default_factory=list)
    flops: list[float] = field(default_factory=list)
    lambdas: list[float] = field(default_factory=list)
    active: list[float] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def final_loss(self) -> float:
        return tail_mean(self.losses)

    @property
    def final_kl(self) -> float:
        return tail_mean(self.kl)

    @property
    def final_active(self) -> float:
        return tail_mean(self.active)


def corpus_idf(
    texts: Iterable[str], tokenizer: Any, max_length: int, chunk: int = 512
) -> np.ndarray:
    """BM25's idf over ``texts`` as the index build computes it: document frequencies of
    the tokenizer ids (truncated to ``max_length``, special tokens excluded), then
    ``log(1 + (N - df + 0.5) / (df + 0.5))``; a (V,) float32 vector."""
    from twofold.models.sparse import idf_from_df, special_ids

    df = np.zeros(len(tokenizer), dtype=np.int64)
    n = 0
    batch: list[str] = []

    def count(items: list[str]) -> None:
        ids = tokenizer(items, truncation=True, max_length=max_length)["input_ids"]
        for x in ids:
            df[np.unique(np.asarray(x, dtype=np.int64))] += 1

    for text in texts:
        batch.append(text)
        n += 1
        if len(batch) == chunk:
            count(batch)
            batch = []
    if batch:
        count(batch)
    df[special_ids(tokenizer)] = 0
    return idf_from_df(df, n)


def write_idf_json(path: Path, idf: np.ndarray, tokenizer: Any) -> None:
    """``idf`` ((V,), by token id) as the OpenSearch ``idf.json`` (token -> idf) that
    :func:`twofold.models.sparse.model_idf` reads; special tokens left out (they get 0)."""
    from twofold.models.sparse import special_ids, vocab_list

    special = set(special_ids(tokenizer))
    vocab = vocab_list(tokenizer)
    table = {
        tok: round(float(idf[j]), 6)
        for j, tok in enumerate(vocab[: len(idf)])
        if j not in special and idf[j] != 0
    }
    path.write_text(json.dumps(table, ensure_ascii=False), encoding="utf-8")


def _fit(idf: np.ndarray, size: int) -> np.ndarray:
    """``idf`` cut or zero-padded to ``size`` entries (the MLM head's vocabulary)."""
    out = np.zeros(size, dtype=np.float32)
    n = min(size, len(idf))
    out[:n] = np.asarray(idf, dtype=np.float32)[:n]
    return out


def train_sparse(
    examples: Sequence[SparseExample],
    idf: np.ndarray,
    out: Path,
    config: SparseTrainConfig,
    extra_args: dict[str, Any] | None = None,
    on_step: Callable[[int, float], None] | None = None,
    progress: bool = False,
) -> SparseTrainResult:
    """Train the doc encoder on ``examples`` and save the model directory ``out``.

    ``idf``: (V,) query-side idf by the student tokenizer's ids (written to ``idf.json``).
    All examples must have the same group size ``G``. ``extra_args`` are recorded in
    ``training_args.json`` (e.g. how the examples were made); ``on_step(step, loss)`` is
    called after each step; ``progress`` shows a progress bar on stderr.
    """
    if not examples:
        raise InputError("no training examples")
    sizes = {len(e.docs) for e in examples}
    if len(sizes) != 1:
        raise InputError(f"every example needs the same group size, got {sorted(sizes)}")
    group = sizes.pop()
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - hard dependency
        raise DependencyError("sparse training needs torch and transformers") from exc
    from twofold.models.echo import load_sparse_encoder
    from twofold.models.registry import resolve
    from twofold.models.sparse import IdfQueryEncoder

    base_dir = resolve(config.base)
    check_output(out, base_dir)
    seed_all(config.seed, torch)
    device = resolve_device(config.device)
    # a masked LM, or a causal LM encoded with echo (same forward(input_ids, mask))
    student = load_sparse_encoder(config.base, device=device, max_length=config.max_length)
    tokenizer, model = student.tokenizer, student.model
    max_length = min(fit_length(model, config.max_length), student.max_length)
    idf = _fit(idf, student.vocab_size)
    queries = IdfQueryEncoder(tokenizer, idf)
    model.train()
    total = total_steps(len(examples), config)
    optimizer, scheduler = adamw_linear_decay(model, config, total, torch)
    bar: Any = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc="train sparse", unit="step", dynamic_ncols=True)

    result = SparseTrainResult(out=out)
    started = time.monotonic()
    for batch in shuffled_batches(examples, config.batch_size, config.epochs, config.seed):
        docs = [d for e in batch for d in e.docs]  # B * G, query-major
        enc = tokenizer(
            docs, truncation=True, max_length=max_length, padding=True, return_tensors="pt"
        ).to(device)
        with mixed_precision(device, config.precision, torch):
            w = student.forward(enc["input_ids"], enc["attention_mask"]).float()  # [B*G, V]
        q_np = queries.encode_queries([e.query for e in batch]).toarray()
        q = torch.from_numpy(q_np).to(device)  # [B, V], relu(idf) on query tokens
        s = torch.einsum("bv,bgv->bg", q, w.view(len(batch), group, -1))  # [B, G]
        t = torch.tensor([e.teacher for e in batch], device=device)  # [B, G]
        rank = kl_distill(s, t)
        reg = flops(w)
        lam = flops_lambda(result.steps, config.lambda_max, config.warmup_steps)
        loss = rank + lam * reg
        optimizer_step(loss, model, optimizer, scheduler, torch)
        result.steps += 1
        result.losses.append(float(loss.detach()))
        result.kl.append(float(rank.detach()))
        result.flops.append(float(reg.detach()))
        result.lambdas.append(lam)
        result.active.append(float((w.detach() > 0).sum(dim=1).float().mean()))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(kl=f"{result.kl[-1]:.3f}", terms=f"{result.active[-1]:.0f}")
        if on_step is not None:
            on_step(result.steps, result.losses[-1])
    if bar is not None:
        bar.close()
    result.seconds = time.monotonic() - started
    record = {
        "trainer": "twofold train sparse",
        "title": "Inference-free sparse document encoder",
        "description": "IDF-aware FLOPS + heterogeneous ensemble KL distillation "
        "(Geng et al. 2024, arXiv 2411.04403). Build with `twofold index build "
        "--retrievers sparse --sparse-model DIR`.",
        "method": "IDF-aware FLOPS + ensemble KL distillation (arXiv 2411.04403)",
        **asdict(config),
        "base_dir": str(base_dir),
        "device_used": device,
        "examples": len(examples),
        "group_size": group,
        "steps": result.steps,
        "seconds": round(result.seconds, 1),
        "first_loss": result.losses[0],
        "final_loss": result.final_loss,
        "first_kl": result.kl[0],
        "final_kl": result.final_kl,
        "first_active_terms": result.active[0],
        "final_active_terms": result.final_active,
        **(extra_args or {}),
        "per_step": {
            "loss": result.losses,
            "kl": result.kl,
            "flops": result.flops,
            "lambda": result.lambdas,
            "active_terms": result.active,
        },
    }

    def write(staging: Path) -> None:
        model.eval().to("cpu").save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        write_idf_json(staging / "idf.json", idf, tokenizer)

    record["metrics"] = {
        "final_kl": round(result.final_kl, 4),
        "final_active_terms": round(result.final_active, 1),
    }
    publish_model(out, write, record, base_dir)
    log.info(
        "trained %d steps in %.0fs, KL %.4f -> %.4f, active terms %.0f -> %.0f -> %s",
        result.steps,
        result.seconds,
        result.kl[0],
        result.final_kl,
        result.active[0],
        result.final_active,
        out,
    )
    return result
