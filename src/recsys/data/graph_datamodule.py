"""LightningDataModule for user–item graph data (BPR training, full-ranking evaluation)."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils.data import DataLoader

from recsys.data.bpr_batches import BPREpochSampler
from recsys.data.datamodule import RecDataModule
from recsys.data.eval_batches import RankingEvalSet
from recsys.data.interactions import GraphSplits
from recsys.data.loading import distributed_rank_and_world
from recsys.data.preprocess import carve_validation
from recsys.data.sources.base import GraphSource
from recsys.info import DatasetInfo, UserItemCSR
from recsys.sampling import sampling_generator
from recsys.settings import FRACTION, Settings, check_settings

log = logging.getLogger(__name__)


class GraphDataModule(RecDataModule):
    """Graph data (:class:`~recsys.data.datamodule.RecDataModule`):

    * train: one vectorised BPR epoch per epoch (:class:`~recsys.data.bpr_batches.BPREpochSampler`);
    * val: rank all items, mask train items, ground truth = validation items;
    * test: rank all items, mask train + validation items, ground truth = test items.

    When the source has no validation split (e.g. the LightGCN/NGCF train/test files), ``validate_fraction``
    of every user's train items (seeded by ``validate_seed``) are moved to validation.
    """

    kind = "graph"
    settings: ClassVar[Settings] = {**RecDataModule.settings, "validate_fraction": FRACTION}

    def __init__(
        self,
        source: GraphSource,
        batch_size: int = 2048,
        eval_batch_size: int = 1024,
        validate_fraction: float = 0.0,
        validate_seed: int = 0,
        **kwargs: Any,
    ) -> None:
        """``kwargs``: :class:`~recsys.data.datamodule.RecDataModule`'s (cache_dir, validate_on_test, …)."""
        check_settings("data", {"validate_fraction": validate_fraction}, type(self))
        super().__init__(source, batch_size, eval_batch_size, **kwargs)
        self.validate_fraction = validate_fraction
        self.validate_seed = validate_seed
        self._csr: dict[str, UserItemCSR] = {}

    def on_splits(self, splits: GraphSplits) -> None:
        if not self.validate_on_test and len(splits.valid[0]) == 0 and self.validate_fraction > 0:
            splits = self._carve_validation(splits)
        self.splits = splits
        self._csr = {s: splits.csr(s) for s in ("train", "valid", "test")}
        self.negative_sampler.bind(self._csr["train"])
        if not self.validate_on_test and self._csr["valid"].nnz == 0:
            raise self.empty_validation(
                "data.validate_fraction=0.1 (validation carved from train), data.validate_on_test=true (the papers' "
                "protocol) or a split with validation")
        log.info("Dataset %s: %d users, %d items, %d train / %d valid / %d test interactions",
                 self.source.name, splits.num_users, splits.num_items, len(splits.train[0]), len(splits.valid[0]),
                 len(splits.test[0]))

    def _carve_validation(self, splits: GraphSplits) -> GraphSplits:
        """Move ``validate_fraction`` of each user's train items to validation (seeded, vectorised)."""
        train, valid = carve_validation(*splits.train, self.validate_fraction, self.validate_seed)
        log.info("No validation split in %s: moved %.0f%% of every user's train items to validation (%d "
                 "interactions, data.validate_fraction=%s, seed %d)", self.source.name, 100 * self.validate_fraction,
                 len(valid[0]), self.validate_fraction, self.validate_seed)
        meta = {**splits.meta, "validation": f"carved from train (fraction {self.validate_fraction}, "
                f"seed {self.validate_seed})"}
        return dataclasses.replace(splits, train=train, valid=valid, meta=meta)

    @property
    def info(self) -> DatasetInfo:
        """Sizes and train graph handed to the model constructor (call after ``setup``)."""
        if self.splits is None:
            raise RuntimeError("GraphDataModule.setup() must run before .info")
        return DatasetInfo(self.splits.num_users, self.splits.num_items, self._csr["train"])

    def evaluation_units(self, split: str, ids: np.ndarray) -> dict[str, np.ndarray]:
        """``{"user": original id}`` of the evaluated users ``ids[:, 0]`` (the dense id without original ids)."""
        users = ids[:, 0]
        original = self.splits.user_ids if self.splits is not None else None
        return {"user": users if original is None else original[users]}

    # -- loaders -------------------------------------------------------------------------------
    def epoch_sampler(self, device: torch.device | str | None = None) -> BPREpochSampler:
        return BPREpochSampler(self._csr["train"], self.negative_sampler, self.batch_size, seed=self.seed,
                               steps_per_chunk=self.chunk_steps(), device=device)

    def train_dataloader(self) -> DataLoader:
        """The epochs' BPR batches, drawn on the model's GPU unless loader workers draw them (worker processes
        keep to the CPU); other devices draw on the CPU (MPS has no float64 for the proposal's CDF)."""
        device = self.trainer.strategy.root_device if self.trainer is not None else None
        on_gpu = device is not None and device.type == "cuda" and self.num_workers == 0
        return self.epoch_sampler(device if on_gpu else None).loader(self.num_workers)

    def example_batch(self) -> list[dict]:
        sampler = self.epoch_sampler()
        users = sampler.active_users[:self.batch_size]
        pos = self._csr["train"].indices[self._csr["train"].indptr[users]]
        g = sampling_generator(self.seed, 0, 0, 99)  # a stream of its own
        return [{"users": users, "pos_items": pos, **self.negative_sampler.batch_negatives(users, pos, g)}]

    def excluded_items(self, testing: bool = True) -> UserItemCSR:
        """The items each user's ranking leaves out: train ∪ validation for the test (and recommendations), train
        for validation."""
        return self._csr["train"].union(self._csr["valid"]) if testing else self._csr["train"]

    def eval_loader(self, split: str, testing: bool) -> DataLoader:
        mask = self.excluded_items(testing)
        rank, world = distributed_rank_and_world()
        dataset = RankingEvalSet(mask, self._csr[split], self.eval_batch_size, rank=rank, world_size=world)
        return DataLoader(dataset, batch_size=None, shuffle=False, num_workers=self.num_workers)
