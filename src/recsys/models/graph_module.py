"""LightningModule for graph encoders (MF, LightGCN, NGCF): BPR training + full-ranking evaluation."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from recsys.data.interactions import DatasetInfo
from recsys.losses import bpr_loss, embedding_l2_sq
from recsys.metrics import METRIC_NAMES
from recsys.models.components.adjacency import SparseAdjacency
from recsys.models.ranking_module import TopKRecommender
from recsys.sampling import select_hard_negatives


class GraphRecommender(TopKRecommender):
    """Trains ``encoder`` with BPR: ``L = mean softplus(ŷ_uj − ŷ_ui) + λ · reg``.

    The mean runs over the batch's valid (user, pos, neg) pairs; the negatives are whatever the
    ``sampler`` group put in the batch (per-row, hard candidates → arg-max, or shared in-batch negatives
    with a mask; :func:`batch_negative_scores`).
    ``reg`` is :func:`~recsys.losses.embedding_l2` on the ego embeddings of the batch rows
    (LightGCN, MF) or on the final embeddings (NGCF), as the encoder declares (``regularize_ego``);
    a row's negative term is the mean ``‖e_j‖²`` over its valid negatives
    (:func:`~recsys.losses.embedding_l2_sq`).
    Every training step propagates the whole graph (as the official code does); evaluation propagates
    once per epoch. Scores are inner products ``ŷ_ui = e_uᵀ e_i``.

    Args:
        info: sizes and train graph from the DataModule.
        encoder: factory ``encoder(num_users=, num_items=, **encoder_kwargs) -> nn.Module``.
        optimizer: factory ``optimizer(params=) -> torch.optim.Optimizer``.
        reg_weight: λ.
        encoder_kwargs: every other model config key (``embedding_dim``, ``num_layers``, …) goes to
            the encoder, so sweeps override ``model.<key>`` directly.
    """

    def __init__(
        self,
        info: DatasetInfo,
        encoder: Callable[..., nn.Module],
        optimizer: Callable[..., torch.optim.Optimizer],
        reg_weight: float = 1e-4,
        topk: Sequence[int] = (10, 20, 50),
        metrics: Sequence[str] = METRIC_NAMES,
        **encoder_kwargs: Any,
    ) -> None:
        super().__init__(topk, metrics)
        self.save_hyperparameters(
            {"num_users": info.num_users, "num_items": info.num_items, "reg_weight": reg_weight, **encoder_kwargs},
            logger=False,
        )
        self.encoder = encoder(num_users=info.num_users, num_items=info.num_items, **encoder_kwargs)
        self.optimizer_factory = optimizer
        self.reg_weight = reg_weight
        self._adjacency: SparseAdjacency = self.encoder.build_adjacency(info.train)
        self._eval_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None

    def adjacency(self) -> SparseAdjacency:
        """The normalised train graph on the module's device (moved lazily, not a state_dict entry)."""
        self._adjacency = self._adjacency.to(self.device)
        return self._adjacency

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Final user and item embeddings."""
        return self.encoder(self.adjacency())

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        users, pos = batch["users"], batch["pos_items"]
        user_emb, item_emb = self()
        reg_user, reg_item = self.encoder.ego() if self.encoder.regularize_ego else (user_emb, item_emb)
        u = user_emb[users]
        pos_scores = (u * item_emb[pos]).sum(-1)
        neg_scores, neg_mask, neg_sq = batch_negative_scores(batch, user_emb, item_emb, reg_item)
        loss_bpr = bpr_loss(pos_scores, neg_scores, neg_mask)
        reg = embedding_l2_sq(reg_user[users].pow(2).sum(-1), reg_item[pos].pow(2).sum(-1), neg_sq)
        loss = loss_bpr + self.reg_weight * reg
        size = users.numel()
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=size, sync_dist=True)
        self.log("train/bpr", loss_bpr, on_step=False, on_epoch=True, batch_size=size, sync_dist=True)
        return loss

    def prepare_scoring(self) -> None:
        with torch.no_grad(), self.float32_scoring():  # float32 scores also for half-precision weights
            self._eval_embeddings = tuple(e.float() for e in self())

    def finish_scoring(self) -> None:
        self._eval_embeddings = None

    def score_users(self, users: torch.Tensor) -> torch.Tensor:
        assert self._eval_embeddings is not None, "prepare_scoring() runs before evaluation"
        user_emb, item_emb = self._eval_embeddings
        return user_emb[users] @ item_emb.T

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(params=self.parameters())


def batch_negative_scores(
    batch: dict[str, torch.Tensor], user_emb: torch.Tensor, item_emb: torch.Tensor, reg_item: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Scores ``(B, N)`` and mask ``(B, N)`` (None = all valid) of a batch's negatives, and per row the mean
    ``‖e_j‖²`` of the regularised embeddings (``reg_item``) of its valid negatives ``(B,)``.

    Dispatches on the keys the negative sampler put in the batch (see :mod:`recsys.sampling`):
    ``neg_items`` ``(B, n)`` per-row negatives; ``neg_candidates`` ``(B, n, M)`` → the best-scoring
    candidate of each ``(b, n)`` (no gradient through the choice); ``neg_shared`` ``(S,)`` with
    ``neg_shared_mask`` ``(B, S)``: negatives shared by the batch (in-batch, extra samples), scored as one
    ``(B, d) @ (d, S)`` product.
    """
    users = batch["users"]
    u = user_emb[users]
    per_row = batch.get("neg_items")
    if "neg_candidates" in batch:
        per_row = select_hard_negatives(user_emb, item_emb, users, batch["neg_candidates"])
    shared = batch.get("neg_shared")
    if per_row is None and shared is None:
        raise KeyError("a BPR batch needs neg_items, neg_candidates or neg_shared (see recsys.sampling)")
    scores, sq_sum, count = [], 0.0, 0.0
    if per_row is not None:
        scores.append(torch.einsum("bd,bnd->bn", u, item_emb[per_row]))
        sq_sum, count = reg_item[per_row].pow(2).sum((1, 2)), per_row.shape[1]
    mask = None
    if shared is not None:
        shared_mask = batch["neg_shared_mask"]
        scores.append(u @ item_emb[shared].T)
        valid = shared_mask.to(reg_item.dtype)
        sq_sum = sq_sum + valid @ reg_item[shared].pow(2).sum(-1)
        count = count + valid.sum(1)
        mask = shared_mask
        if per_row is not None:
            mask = torch.cat([torch.ones_like(per_row, dtype=torch.bool), shared_mask], 1)
    neg_scores = scores[0] if len(scores) == 1 else torch.cat(scores, 1)
    neg_sq = sq_sum / count.clamp(min=1) if torch.is_tensor(count) else sq_sum / count
    return neg_scores, mask, neg_sq
