"""Which torch device a job runs on, and in which precision: one rule for builds,
encoders and training loops.

Precision (``auto`` | ``fp32`` | ``bf16``): ``auto`` is bfloat16 where the hardware runs
bfloat16 matrix products natively, a CUDA GPU that supports it or a CPU with AMX tiles
(Intel Sapphire Rapids and later) or AVX512-BF16 dot products (AMD Zen 4, Intel Cooper
Lake), and float32 elsewhere. On the 2-core AMX dev machine minilm-l6 encodes 256-token
documents about 3x faster in bfloat16, with cosine to float32 >= 0.9999, and one traced
query in 0.7x the time; on a 2-core AVX512-BF16 EPYC, 1.94x and 0.67x, cosine >=
0.99992 (``bench/bench_precision.py``, BENCHMARKS.md).

SPLADE encoders (``encoder="sparse"``) are the exception on AVX512-BF16 without AMX:
there ``auto`` stays float32, because the float32 head behind its bfloat16 bound
(``sparse_head``) gives the exact weights and one query in 0.82x the time of a whole
bfloat16 encoder (5.6 against 6.8 ms, same run). The environment variable
``TWOFOLD_PRECISION`` (``fp32`` or ``bf16``) decides what ``auto`` picks for every encoder
of the process: document builds and query encoding. Training loops have their own
``auto`` (``train.loop``)."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

from twofold.core.errors import InputError

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")
CPUINFO = Path("/proc/cpuinfo")


def resolve_device(requested: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; ``cuda`` without a GPU
    is an error rather than a silent fall-back."""
    if requested not in DEVICES:
        raise InputError(f"--device must be auto, cpu or cuda, not {requested!r}")
    if requested == "cpu":
        return "cpu"
    try:
        import torch

        has_cuda = bool(torch.cuda.is_available())
    except ImportError:
        has_cuda = False
    if requested == "cuda" and not has_cuda:
        raise InputError("--device cuda was asked for, but torch sees no GPU")
    return "cuda" if has_cuda else "cpu"


def resolve_precision(requested: str, device: str, encoder: str = "dense") -> str:
    """``fp32`` or ``bf16`` for work on ``device`` (resolved: ``cpu`` or ``cuda``) by an
    ``encoder`` of kind ``dense`` or ``sparse`` (an MLM head); see the module doc for what
    ``auto`` picks."""
    if requested not in PRECISIONS:
        raise InputError(f"--precision must be auto, fp32 or bf16, not {requested!r}")
    if requested != "auto":
        return requested
    forced = os.environ.get("TWOFOLD_PRECISION", "").strip().lower()
    if forced:
        if forced not in ("fp32", "bf16"):
            raise InputError(f"TWOFOLD_PRECISION must be fp32 or bf16, not {forced!r}")
        return forced
    if device == "cuda":
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if encoder == "sparse":
        return "bf16" if cpu_has_amx() else "fp32"
    return "bf16" if cpu_has_bf16_dot() else "fp32"


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX bfloat16 tiles (Linux: the ``amx_bf16`` flag)."""
    return "amx_bf16" in cpu_flags()


def cpu_has_bf16_dot() -> bool:
    """Whether this CPU multiplies bfloat16 natively: AMX tiles or AVX512-BF16 dot
    products (AMD Zen 4, Intel Cooper Lake and later). Elsewhere torch emulates
    bfloat16 products, slower than float32 ones."""
    return bool({"amx_bf16", "avx512_bf16"} & cpu_flags())


@cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux ``/proc/cpuinfo``; empty where it cannot be read)."""
    try:
        text = CPUINFO.read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[-1].split())
    return frozenset()
