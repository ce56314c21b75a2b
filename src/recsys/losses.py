"""Ranking losses. Graph models: BPR and the embedding L2 term (algorithms.md §1.3, §2.2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bpr_loss(
    pos_scores: torch.Tensor, neg_scores: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """BPR: mean over the batch (and over negatives) of ``-ln σ(ŷ_ui - ŷ_uj) = softplus(ŷ_uj - ŷ_ui)``.

    ``pos_scores``: ``(B,)``; ``neg_scores``: ``(B, n_neg)``. With a boolean ``mask`` ``(B, n_neg)``
    (True = a valid negative, e.g. in-batch negatives that are not the user's positives) the mean runs
    over the valid pairs only: ``Σ m_bj softplus(·) / max(1, Σ m_bj)`` (0 when no pair is valid).
    """
    pairwise = F.softplus(neg_scores - pos_scores[:, None])
    if mask is None:
        return pairwise.mean()
    return torch.where(mask, pairwise, 0.0).sum() / mask.sum().clamp(min=1)


def embedding_l2(users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """``½(‖e_u‖² + ‖e_i‖² + mean_j ‖e_j‖²)`` summed over the batch and divided by the batch size.

    ``users``/``pos``: ``(B, d)``; ``neg``: ``(B, n_neg, d)``. With one negative this is exactly the
    LightGCN/NGCF regulariser (multiplied by λ in the module).
    """
    batch = users.shape[0]
    total = users.pow(2).sum() + pos.pow(2).sum() + neg.pow(2).sum() / neg.shape[1]
    return 0.5 * total / batch


def embedding_l2_sq(user_sq: torch.Tensor, pos_sq: torch.Tensor, neg_sq: torch.Tensor) -> torch.Tensor:
    """:func:`embedding_l2` from squared norms: ``½(Σ_b ‖e_u‖² + Σ_b ‖e_i‖² + Σ_b neg_sq_b) / B``.

    ``user_sq``/``pos_sq``: ``(B,)``; ``neg_sq``: ``(B,)``, the mean of ``‖e_j‖²`` over row b's *valid*
    negatives (0 if none). With a masked (in-batch) row the term keeps the scale of one negative whatever
    the number of negatives; with ``n`` explicit negatives it equals :func:`embedding_l2`.
    """
    return 0.5 * (user_sq.sum() + pos_sq.sum() + neg_sq.sum()) / user_sq.shape[0]
