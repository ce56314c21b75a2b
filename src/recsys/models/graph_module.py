"""LightningModule for graph encoders (MF, LightGCN, NGCF): BPR training + full-ranking evaluation."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from recsys.data.interactions import DatasetInfo
from recsys.losses import bpr_loss, embedding_l2
from recsys.metrics import METRIC_NAMES
from recsys.models.components.adjacency import SparseAdjacency
from recsys.models.ranking_module import TopKRecommender


class GraphRecommender(TopKRecommender):
    """Trains ``encoder`` with BPR: ``L = mean softplus(ŷ_uj − ŷ_ui) + λ · reg``.

    ``reg`` is :func:`~recsys.losses.embedding_l2` on the ego embeddings of the batch rows
    (LightGCN, MF) or on the final embeddings (NGCF), as the encoder declares (``regularize_ego``).
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
        users, pos, neg = batch["users"], batch["pos_items"], batch["neg_items"]
        user_emb, item_emb = self()
        u, i, j = user_emb[users], item_emb[pos], item_emb[neg]
        pos_scores = (u * i).sum(-1)
        neg_scores = torch.einsum("bd,bnd->bn", u, j)
        loss_bpr = bpr_loss(pos_scores, neg_scores)
        if self.encoder.regularize_ego:
            ego_u, ego_i = self.encoder.ego()
            reg = embedding_l2(ego_u[users], ego_i[pos], ego_i[neg])
        else:
            reg = embedding_l2(u, i, j)
        loss = loss_bpr + self.reg_weight * reg
        size = users.numel()
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=size)
        self.log("train/bpr", loss_bpr, on_step=False, on_epoch=True, batch_size=size)
        return loss

    def prepare_scoring(self) -> None:
        with torch.no_grad():
            self._eval_embeddings = self()

    def finish_scoring(self) -> None:
        self._eval_embeddings = None

    def score_users(self, users: torch.Tensor) -> torch.Tensor:
        assert self._eval_embeddings is not None, "prepare_scoring() runs before evaluation"
        user_emb, item_emb = self._eval_embeddings
        return user_emb[users] @ item_emb.T

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(params=self.parameters())
