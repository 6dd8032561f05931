"""Margin-MSE training of a cross-encoder reranker (Hofstaetter et al. 2020, arXiv
2010.02666) on prepared ``(query, positive, negative, t+, t-)`` examples.

The student is a Hugging Face ``*ForSequenceClassification`` model with one label
(the relevance logit), initialised from ``base`` (a model registry name such as
``minilm-l6``, or a directory); when ``base`` is a bare encoder (``BertModel``) the
classification head is new. The result is a directory that
:func:`twofold.models.reranker.load_reranker` reads: config, weights, tokenizer and
``training_args.json`` (the parameters and the loss).

Two losses (``loss``):

- ``margin-mse`` (the default for queries without known positives): one
  :class:`MarginExample` per (positive, negative) pair, the student matches the teacher's
  margin;
- ``lce``: Localized Contrastive Estimation (Gao et al. 2021, arXiv 2101.08751) over a
  :class:`GroupExample` per known positive (the positive first, then hard negatives from
  the fused first stage), plus ``kl_weight`` times the listwise KL to the teacher's
  softmax over the same group (:func:`~twofold.train.losses.kl_distill`), so the labels
  set the order of the positive and the teacher the order among the rest.

Pairs are tokenized as the reranker scores them: query first, the document truncated
(``only_second``) to ``max_length`` tokens.

Students (all <= 30M parameters): ``minilm-l6`` (6 layers, 22.7M), the same cut to its
first ``layers`` encoder layers (``layers=2``: 12.0M; the embeddings and the first
layers are kept, the rest dropped before training), and ``splade-tiny``'s BERT-tiny
backbone (2 layers, hidden 128, 4.4M) loaded as a sequence classifier (new head).

The output also holds ``twofold_reranker.json``
(:data:`twofold.models.reranker.SETTINGS_FILE`): ``max_length``, ``int8`` and the
interpolation weight ``alpha`` that ``tune(staging_dir)`` returns (tuned on held-out
queries by :mod:`twofold.train.interpolation`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from twofold.core.errors import DependencyError, InputError, ModelError
from twofold.models.device import resolve_device
from twofold.models.reranker import SETTINGS_FILE
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
from twofold.train.losses import kl_distill, localized_contrastive, margin_mse
from twofold.train.publish import check_output, publish_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MarginExample:
    """One training triple with its teacher scores (``t+ = teacher_pos``, ``t- = teacher_neg``)."""

    query: str
    pos_text: str
    neg_text: str
    teacher_pos: float
    teacher_neg: float


@dataclass(frozen=True)
class GroupExample:
    """One known positive (``texts[0]``) with hard negatives after it, and the teacher's
    scores of the same texts (``teacher[i]`` for ``texts[i]``)."""

    query: str
    texts: tuple[str, ...]
    teacher: tuple[float, ...]


LOSSES = ("margin-mse", "lce")


@dataclass(frozen=True)
class RerankerTrainConfig(LoopConfig):
    """:class:`LoopConfig`; ``max_length``: tokens per (query, doc) pair; ``layers``:
    keep only the student's first N encoder layers (None: all); ``int8``: the model dir
    asks for dynamic int8 inference; ``loss``: margin-mse | lce; ``kl_weight``: of the
    teacher KL beside LCE. With ``lce`` a batch is ``batch_size`` groups. Defaults: the
    student and rate that measured best on SciFact's held-out train queries (BERT-tiny,
    1e-4; BENCHMARKS.md, "Training: the LCE reranker over 3 seeds")."""

    base: str = "splade-tiny"
    lr: float = 1e-4
    layers: int | None = None
    int8: bool = False
    loss: str = "margin-mse"
    kl_weight: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.layers is not None and self.layers < 1:
            raise InputError("--layers must be >= 1")
        if self.loss not in LOSSES:
            raise InputError(f"--loss must be one of {', '.join(LOSSES)}, not {self.loss!r}")
        if self.kl_weight < 0:
            raise InputError("--kl-weight must be >= 0")


MAX_PARAMETERS = 30_000_000


def encoder_layers(model: Any) -> Any:
    """The ``nn.ModuleList`` of a BERT-like model's encoder layers."""
    layers = getattr(getattr(model.base_model, "encoder", None), "layer", None)
    if layers is None:
        raise ModelError(f"{type(model).__name__} has no encoder.layer list to cut")
    return layers


def cut_layers(model: Any, n: int) -> Any:
    """``model`` with only its first ``n`` encoder layers (config updated to match)."""
    layers = encoder_layers(model)
    if n > len(layers):
        raise InputError(f"--layers {n}: the student has only {len(layers)} layers")
    del layers[n:]
    model.config.num_hidden_layers = n
    return model


def parameter_count(model: Any) -> int:
    return int(sum(p.numel() for p in model.parameters()))


@dataclass
class TrainResult:
    out: Path
    steps: int
    losses: list[float] = field(default_factory=list)  # one per optimizer step
    seconds: float = 0.0

    @property
    def final_loss(self) -> float:
        """Mean loss over the last 10% of steps (at least one)."""
        return tail_mean(self.losses)


def _base_dir(base: str) -> str:
    from twofold.models.registry import resolve

    return str(resolve(base))


def train_reranker(
    examples: Sequence[MarginExample] | Sequence[GroupExample],
    out: Path,
    config: RerankerTrainConfig,
    extra_args: dict[str, Any] | None = None,
    on_step: Callable[[int, float], None] | None = None,
    tune: Callable[[Path], dict[str, Any]] | None = None,
) -> TrainResult:
    """Train with Margin-MSE on ``examples`` and save the model directory ``out``.

    ``extra_args`` are recorded in ``training_args.json`` beside the config (e.g. how
    the examples were made); ``on_step(step, loss)`` is called after each step;
    ``tune(dir)`` gets the saved (staged) model directory and returns the settings to
    store with it (``alpha`` and its figures).
    """
    if not examples:
        raise InputError("no training examples")
    wanted = GroupExample if config.loss == "lce" else MarginExample
    if not all(isinstance(e, wanted) for e in examples):
        raise InputError(f"--loss {config.loss} trains on {wanted.__name__}s")
    try:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
    except ImportError as exc:  # pragma: no cover - hard dependencies
        raise DependencyError("reranker training needs torch and transformers") from exc

    source = _base_dir(config.base)
    check_output(out, source)  # before any work: a bad --out costs nothing
    seed_all(config.seed, torch)
    device = resolve_device(config.device)
    try:
        tokenizer: Any = AutoTokenizer.from_pretrained(source)
        model: Any = AutoModelForSequenceClassification.from_pretrained(source, num_labels=1)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load the student from {config.base}: {exc}") from None
    if config.layers is not None:
        cut_layers(model, config.layers)
    parameters = parameter_count(model)
    if parameters > MAX_PARAMETERS:
        raise InputError(f"the student has {parameters:,} parameters; at most 30M (use --layers)")
    max_length = fit_length(model, config.max_length)
    model.to(device).train()
    total = total_steps(len(examples), config)
    optimizer, scheduler = adamw_linear_decay(model, config, total, torch)

    def scores(queries: list[str], docs: list[str]) -> Any:
        enc = tokenizer(
            queries,
            docs,
            truncation="only_second",
            max_length=max_length,
            padding=True,
            return_tensors="pt",
        ).to(device)
        return model(**enc).logits[:, 0]  # [batch]

    def batch_loss(batch: list[Any]) -> Any:
        if config.loss == "lce":
            width = len(batch[0].texts)
            if any(len(e.texts) != width for e in batch):
                raise InputError("every LCE group needs the same number of documents")
            flat = scores(
                [e.query for e in batch for _ in e.texts], [t for e in batch for t in e.texts]
            )
            grid = flat.view(len(batch), width)
            loss = localized_contrastive(grid)
            if config.kl_weight > 0:
                teacher = torch.tensor([e.teacher for e in batch], device=device)
                loss = loss + config.kl_weight * kl_distill(grid, teacher)
            return loss
        queries = [e.query for e in batch]
        s_pos = scores(queries, [e.pos_text for e in batch])
        s_neg = scores(queries, [e.neg_text for e in batch])
        t_pos = torch.tensor([e.teacher_pos for e in batch], device=device)
        t_neg = torch.tensor([e.teacher_neg for e in batch], device=device)
        return margin_mse(s_pos, s_neg, t_pos, t_neg)

    result = TrainResult(out=out, steps=0)
    started = time.monotonic()
    for batch in shuffled_batches(examples, config.batch_size, config.epochs, config.seed):
        with mixed_precision(device, config.precision, torch):
            loss = batch_loss(batch)
        optimizer_step(loss, model, optimizer, scheduler, torch)
        result.steps += 1
        result.losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(result.steps, result.losses[-1])
    result.seconds = time.monotonic() - started

    record = {
        "trainer": "twofold train reranker",
        "title": "Distilled cross-encoder reranker",
        "description": "Cross-encoder trained on the collection's own retrievers as a "
        "teacher (hard negatives and targets from their fusion). Load with `--reranker DIR`.",
        "method": "margin-mse (arXiv 2010.02666)"
        if config.loss == "margin-mse"
        else "localized contrastive estimation (arXiv 2101.08751)"
        + (f" + {config.kl_weight} x teacher KL" if config.kl_weight else ""),
        **asdict(config),
        "base_dir": source,
        "parameters": parameters,
        "layers_kept": int(model.config.num_hidden_layers),
        "device_used": device,
        "examples": len(examples),
        "steps": result.steps,
        "seconds": round(result.seconds, 1),
        "first_loss": result.losses[0],
        "final_loss": result.final_loss,
        **(extra_args or {}),
    }
    record["metrics"] = {
        "first_loss": round(result.losses[0], 4),
        "final_loss": round(result.final_loss, 4),
    }

    def write(staging: Path) -> None:
        model.eval().to("cpu").save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        settings: dict[str, Any] = {"max_length": max_length, "int8": config.int8, "alpha": None}
        (staging / SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n")
        if tune is not None:
            settings.update(tune(staging))
            (staging / SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n")
        record["interpolation"] = settings
        for key in ("alpha", "heldout_ndcg@10_fused", "heldout_ndcg@10_reranked"):
            if settings.get(key) is not None:
                record["metrics"][key] = settings[key]

    publish_model(out, write, record, source)
    log.info(
        "trained %d steps in %.0fs, final loss %.4f -> %s",
        result.steps,
        result.seconds,
        result.final_loss,
        out,
    )
    return result
