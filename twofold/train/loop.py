"""What the training loops (reranker, sparse doc encoder, dense bi-encoder) share: the
config fields and their checks, seeding, the optimizer with its schedule, the batches,
mixed precision, one step.

Precision (``precision``): ``auto`` trains in bfloat16 autocast on CUDA (no loss scaling
needed: bfloat16 has float32's exponent range) and in float32 on the CPU; ``fp32`` never
autocasts; ``bf16`` autocasts on any device. On a CPU with AMX, ``bf16`` is the opt-in:
``train dense`` with it gave the float32 quality over 3 SciFact seeds (BENCHMARKS.md,
"bfloat16 training"); the other trainers were not measured in it. Weights and optimizer
state stay float32 either way."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from twofold.core.errors import InputError
from twofold.models.device import DEVICES, PRECISIONS

T = TypeVar("T")


@dataclass(frozen=True)
class LoopConfig:
    """``base``: registry name or directory of the student's initial weights; ``lr``:
    AdamW learning rate (linear decay to 0); ``max_length``: tokens per training input
    (capped by the model's positions); ``device``: auto | cpu | cuda; ``precision``: auto
    | fp32 | bf16 (see the module doc). Each loop's config subclasses this with its own
    defaults."""

    base: str = ""
    epochs: int = 1
    batch_size: int = 16
    lr: float = 3e-5
    max_length: int = 256
    device: str = "auto"
    seed: int = 0
    weight_decay: float = 0.01
    precision: str = "auto"

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.max_length < 8 or self.lr <= 0:
            raise InputError("epochs >= 1, batch_size >= 1, max_length >= 8 and lr > 0")
        if self.device not in DEVICES:
            raise InputError(f"device must be auto, cpu or cuda, not {self.device!r}")
        if self.precision not in PRECISIONS:
            raise InputError(f"--precision must be auto, fp32 or bf16, not {self.precision!r}")


def loop_precision(device: str, precision: str) -> str:
    """``bf16`` when the loop autocasts to bfloat16 on ``device``, else ``fp32``."""
    return "bf16" if precision == "bf16" or (precision == "auto" and device == "cuda") else "fp32"


def mixed_precision(
    device: str, precision: str, torch: Any
) -> contextlib.AbstractContextManager[Any]:
    """The autocast context of one forward pass and loss (see the module doc)."""
    if loop_precision(device, precision) == "bf16":
        context: contextlib.AbstractContextManager[Any] = torch.autocast(
            device_type=device, dtype=torch.bfloat16
        )
        return context
    return contextlib.nullcontext()


def tail_mean(values: Sequence[float]) -> float:
    """Mean over the last 10% of steps (at least one); NaN for none."""
    tail = values[-max(1, len(values) // 10) :]
    return sum(tail) / len(tail) if tail else float("nan")


def seed_all(seed: int, torch: Any) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def fit_length(model: Any, requested: int) -> int:
    """``requested`` capped by the model's ``max_position_embeddings`` (when it has one)."""
    max_pos = int(getattr(model.config, "max_position_embeddings", 0) or requested)
    return min(requested, max_pos)


def total_steps(n_examples: int, config: LoopConfig) -> int:
    return (n_examples + config.batch_size - 1) // config.batch_size * config.epochs


def adamw_linear_decay(model: Any, config: LoopConfig, total: int, torch: Any) -> tuple[Any, Any]:
    """AdamW over ``model``'s parameters and a schedule decaying the rate linearly to 0
    over ``total`` steps."""
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: max(0.0, 1.0 - step / total)
    )
    return optimizer, scheduler


def shuffled_batches(
    items: Sequence[T], batch_size: int, epochs: int, seed: int
) -> Iterator[list[T]]:
    """``epochs`` passes over ``items`` in batches, each pass in a new seeded order."""
    order = list(range(len(items)))
    rng = random.Random(seed)
    for _epoch in range(epochs):
        rng.shuffle(order)
        for start in range(0, len(order), batch_size):
            yield [items[i] for i in order[start : start + batch_size]]


def optimizer_step(loss: Any, model: Any, optimizer: Any, scheduler: Any, torch: Any) -> None:
    """Backpropagate ``loss``, clip the gradient norm to 1, step optimizer and schedule."""
    optimizer.zero_grad()
    loss.float().backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    scheduler.step()
