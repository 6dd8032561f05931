"""Training losses, as pure torch functions (no model, no state).

- :func:`margin_mse`: Margin-MSE (Hofstaetter et al. 2020, "Improving Efficient Neural
  Ranking Models with Cross-Architecture Knowledge Distillation", arXiv 2010.02666),
  used to distil the cross-encoder reranker from a teacher ensemble.
- :func:`flops`: the FLOPS sparsity regularizer (Paria et al. 2020, arXiv 2004.05665),
  as SPLADE uses it; for the inference-free doc encoder DESIGN.md applies it to the
  *raw* doc weights ``w`` while the ranking loss sees ``idf * w`` (IDF-aware FLOPS).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def margin_mse(
    student_pos: torch.Tensor,
    student_neg: torch.Tensor,
    teacher_pos: torch.Tensor,
    teacher_neg: torch.Tensor,
) -> torch.Tensor:
    """``mean(((s+ - s-) - (t+ - t-))^2)``; a scalar tensor.

    All four are ``[batch]`` tensors of scores for (query, positive) and (query,
    negative) pairs: ``s`` the student's, ``t`` the teacher's (no gradient needed).
    Only margins are matched, so the student's scores may sit at any offset.
    """
    shapes = {tuple(t.shape) for t in (student_pos, student_neg, teacher_pos, teacher_neg)}
    if len(shapes) != 1:
        raise ValueError(f"margin_mse needs four tensors of one shape, got {sorted(shapes)}")
    student_margin = student_pos - student_neg
    teacher_margin = (teacher_pos - teacher_neg).to(student_margin.dtype)
    return ((student_margin - teacher_margin) ** 2).mean()


def flops(weights: torch.Tensor) -> torch.Tensor:
    """FLOPS regularizer ``sum_j (mean_i |w_ij|)^2``; a scalar tensor.

    ``weights``: ``[batch, vocab]`` term weights of a batch of documents (the raw
    weights ``w``, not ``idf * w``, for the IDF-aware variant of DESIGN.md).
    """
    if weights.dim() != 2:
        raise ValueError(f"flops needs [batch, vocab] weights, got shape {tuple(weights.shape)}")
    return (weights.abs().mean(dim=0) ** 2).sum()
