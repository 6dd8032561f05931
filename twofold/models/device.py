"""Which torch device a job runs on: one rule for builds, encoders and training loops."""

from __future__ import annotations

from twofold.core.errors import InputError

DEVICES = ("auto", "cpu", "cuda")


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
