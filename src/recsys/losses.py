"""Ranking losses. Graph models: BPR and the embedding L2 term (algorithms.md §1.3, §2.2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bpr_loss(pos_scores: torch.Tensor, neg_scores: torch.Tensor) -> torch.Tensor:
    """BPR: mean over the batch (and over negatives) of ``-ln σ(ŷ_ui - ŷ_uj) = softplus(ŷ_uj - ŷ_ui)``.

    ``pos_scores``: ``(B,)``; ``neg_scores``: ``(B, n_neg)``.
    """
    return F.softplus(neg_scores - pos_scores[:, None]).mean()


def embedding_l2(users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """``½(‖e_u‖² + ‖e_i‖² + mean_j ‖e_j‖²)`` summed over the batch and divided by the batch size.

    ``users``/``pos``: ``(B, d)``; ``neg``: ``(B, n_neg, d)``. With one negative this is exactly the
    LightGCN/NGCF regulariser (multiplied by λ in the module).
    """
    batch = users.shape[0]
    total = users.pow(2).sum() + pos.pow(2).sum() + neg.pow(2).sum() / neg.shape[1]
    return 0.5 * total / batch
