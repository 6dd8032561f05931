"""Training losses, as pure torch functions (no model, no state).

- :func:`margin_mse`: Margin-MSE (Hofstaetter et al. 2020, "Improving Efficient Neural
  Ranking Models with Cross-Architecture Knowledge Distillation", arXiv 2010.02666),
  used to distil the cross-encoder reranker from a teacher ensemble.
- :func:`flops`: the FLOPS sparsity regularizer (Paria et al. 2020, arXiv 2004.05665),
  as SPLADE uses it; for the inference-free doc encoder DESIGN.md applies it to the
  *raw* doc weights ``w`` while the ranking loss sees ``idf * w`` (IDF-aware FLOPS).
- :func:`flops_lambda`: the quadratic warm-up of the FLOPS weight (Formal et al. 2021,
  SPLADE, arXiv 2107.05720: ``lambda_t = lambda * min(1, t / T)^2``).
- :func:`kl_distill`: listwise KL distillation over a group of documents per query, the
  heterogeneous-ensemble loss of the inference-free encoder (Geng et al. 2024,
  arXiv 2411.04403).
- :func:`localized_contrastive`: Localized Contrastive Estimation (Gao et al. 2021,
  "Rethink Training of BERT Rerankers in Multi-Stage Retrieval Pipeline", arXiv
  2101.08751): softmax cross-entropy of the known positive against hard negatives drawn
  from the first stage the reranker will rerank, the reranker's labelled loss.
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


def flops_lambda(step: int, lambda_max: float, warmup_steps: int) -> float:
    """The FLOPS weight at optimizer step ``step`` (0-based): ``lambda_max * min(1,
    step / warmup_steps)^2``; ``lambda_max`` when ``warmup_steps`` is 0.

    The quadratic warm-up (SPLADE's ``lambda_t``, with ``T = warmup_steps``) lets the
    ranking loss shape the weights before the sparsity pressure reaches full strength.
    """
    if step < 0 or lambda_max < 0 or warmup_steps < 0:
        raise ValueError(
            f"flops_lambda needs step, lambda_max, warmup_steps >= 0, got "
            f"{step}, {lambda_max}, {warmup_steps}"
        )
    if warmup_steps == 0:
        return float(lambda_max)
    return float(lambda_max) * min(1.0, step / warmup_steps) ** 2


def kl_distill(student_scores: torch.Tensor, teacher_scores: torch.Tensor) -> torch.Tensor:
    """``KL(softmax(t) || softmax(s))`` per query, averaged over the batch; a scalar tensor.

    Both are ``[batch, group]``: each row the scores of one query's group of ``G``
    documents, ``s`` the student's (logits, no temperature), ``t`` the teacher's
    (already scaled: DESIGN.md's ``30 * mean min-max score`` acts as an inverse softmax
    temperature; no gradient needed). ``sum_g p_t (log p_t - log p_s)``: 0 when the two
    distributions agree, and unchanged by adding a constant to a row of either.
    """
    import torch

    if student_scores.dim() != 2 or student_scores.shape != teacher_scores.shape:
        raise ValueError(
            "kl_distill needs two [batch, group] tensors of one shape, got "
            f"{tuple(student_scores.shape)} and {tuple(teacher_scores.shape)}"
        )
    log_s = torch.log_softmax(student_scores, dim=-1)
    log_t = torch.log_softmax(teacher_scores.to(student_scores.dtype), dim=-1)
    return (log_t.exp() * (log_t - log_s)).sum(dim=-1).mean()


def localized_contrastive(student_scores: torch.Tensor) -> torch.Tensor:
    """``mean_q -log softmax(s_q)[0]``; a scalar tensor.

    ``student_scores``: ``[batch, group]``, each row one query's group with its known
    positive in column 0 and hard negatives after it. Unchanged by adding a constant to a
    row; ``log(group)`` when the student cannot tell the documents apart.
    """
    import torch

    if student_scores.dim() != 2 or student_scores.shape[1] < 2:
        raise ValueError(
            "localized_contrastive needs [batch, group >= 2] scores, got "
            f"{tuple(student_scores.shape)}"
        )
    return -torch.log_softmax(student_scores, dim=-1)[:, 0].mean()
