"""Evaluation batches for full ranking: users, items to mask and ground truth, in ragged form."""

from __future__ import annotations

import math

import torch
from torch.utils.data import Dataset

from recsys.info import UserItemCSR


class RankingEvalSet(Dataset):
    """Chunks of evaluated users; item ``i`` is the batch
    ``{users, mask_rows, mask_items, target_rows, target_items}``.

    ``mask`` holds the items to exclude from the ranking (train, plus validation at test time) and
    ``target`` the ground truth, both as (row-in-batch, item) pairs. Only users with at least one target
    item are evaluated (the full-ranking protocol of Wang et al., SIGIR'19 §4.1.2). With ``rank``/``world_size``
    each process
    keeps the disjoint slice ``users[rank::world_size]``: no padding, no duplicates.
    """

    def __init__(
        self,
        mask: UserItemCSR,
        target: UserItemCSR,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.mask = mask
        self.target = target
        self.batch_size = batch_size
        self.users = (target.degrees > 0).nonzero().squeeze(1)[rank::world_size]

    def __len__(self) -> int:
        return math.ceil(self.users.numel() / self.batch_size)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        users = self.users[index * self.batch_size : (index + 1) * self.batch_size]
        mask_rows, mask_items = self.mask.gather_rows(users)
        target_rows, target_items = self.target.gather_rows(users)
        return {
            "users": users,
            "mask_rows": mask_rows,
            "mask_items": mask_items,
            "target_rows": target_rows,
            "target_items": target_items,
        }
