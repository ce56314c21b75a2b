"""MostPop: rank items by their number of train interactions (the floor every model must beat)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from recsys.info import DatasetInfo
from recsys.metrics import METRIC_NAMES
from recsys.models.ranking_module import TopKRecommender


class MostPop(TopKRecommender):
    """Non-personalised baseline: ``ŷ_ui = |{u' : (u', i) ∈ train}|``. Nothing to train."""

    def __init__(self, info: DatasetInfo, topk: Sequence[int] = (10, 20, 50), metrics: Sequence[str] = METRIC_NAMES) -> None:
        super().__init__(topk, metrics)
        self.save_hyperparameters({"num_users": info.num_users, "num_items": info.num_items}, logger=False)
        self.register_buffer("popularity", info.item_popularity.float())

    def score_users(self, users: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        scores = self.popularity.expand(users.numel(), -1)
        return scores.clone() if out is None else out.copy_(scores)

    def configure_optimizers(self) -> None:
        return None
