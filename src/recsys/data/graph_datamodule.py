"""LightningDataModule for user–item graph data (BPR training, full-ranking evaluation)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytorch_lightning as pl
from torch.utils.data import DataLoader

from recsys.data.cache import ensure_cached, load_or_build
from recsys.data.eval_batches import RankingEvalSet
from recsys.data.interactions import DatasetInfo, GraphSplits, UserItemCSR
from recsys.data.preprocess import carve_validation
from recsys.data.sources.base import GraphSource
from recsys.errors import ConfigError
from recsys.sampling import (
    BPREpochSampler,
    NegativeSampler,
    PassThrough,
    UniformNegativeSampler,
    distributed_rank_and_world,
)

log = logging.getLogger(__name__)


class GraphDataModule(pl.LightningDataModule):
    """Graph data: the source is built (or read from the cache) once, on one process.

    * train: one vectorised BPR epoch per epoch (:class:`~recsys.sampling.BPREpochSampler`);
    * val: rank all items, mask train items, ground truth = validation items;
    * test: rank all items, mask train + validation items, ground truth = test items.

    ``validate_on_test=True`` reproduces the papers' protocol (model selection on the test split); runs
    made that way say so in ``metrics.json`` (``validate_on_test``). Otherwise, when the source has no
    validation split (e.g. the LightGCN/NGCF train/test files), ``validate_fraction`` of every user's train
    items (seeded by ``validate_seed``) are moved to validation. ``path`` is the local data location that the
    data configs interpolate into their source (``source.path: ${data.path}``).
    """

    kind = "graph"

    def __init__(
        self,
        source: GraphSource,
        batch_size: int = 2048,
        eval_batch_size: int = 1024,
        cache_dir: str | None = None,
        validate_on_test: bool = False,
        num_workers: int = 0,
        seed: int = 0,
        negative_sampler: NegativeSampler | None = None,
        path: str | None = None,
        validate_fraction: float = 0.0,
        validate_seed: int = 0,
    ) -> None:
        super().__init__()
        if batch_size < 1 or eval_batch_size < 1:
            raise ConfigError(f"data.batch_size and data.eval_batch_size must be >= 1, got {batch_size}, {eval_batch_size}")
        self.source = source
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.validate_on_test = validate_on_test
        self.num_workers = num_workers
        self.seed = seed
        self.negative_sampler = negative_sampler or UniformNegativeSampler()
        self.path = path
        if not 0.0 <= validate_fraction < 1.0:
            raise ConfigError(f"data.validate_fraction must be in [0, 1), got {validate_fraction}")
        self.validate_fraction = validate_fraction
        self.validate_seed = validate_seed
        self.splits: GraphSplits | None = None
        self._csr: dict[str, UserItemCSR] = {}

    # -- preparation ---------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Build and cache the dataset (Lightning runs this on one process per node)."""
        if self.cache_dir is not None:
            ensure_cached(self.source, self.cache_dir)

    def setup(self, stage: str | None = None) -> None:
        if self.splits is not None:
            return
        self.splits = load_or_build(self.source, self.cache_dir)
        if not self.validate_on_test and len(self.splits.valid[0]) == 0 and self.validate_fraction > 0:
            self.splits = self._carve_validation(self.splits)
        self._csr = {s: self.splits.csr(s) for s in ("train", "valid", "test")}
        self.negative_sampler.bind(self._csr["train"])
        if not self.validate_on_test and self._csr["valid"].nnz == 0:
            raise ConfigError(
                f"data source {self.source.name!r} has an empty validation split; "
                "set data.validate_fraction=0.1 (validation carved from train), data.validate_on_test=true (the papers' "
                "protocol) or a split with validation"
            )
        s = self.splits
        log.info(
            "Dataset %s: %d users, %d items, %d train / %d valid / %d test interactions",
            self.source.name, s.num_users, s.num_items, len(s.train[0]), len(s.valid[0]), len(s.test[0]),
        )

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

    # -- loaders -------------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        sampler = BPREpochSampler(self._csr["train"], self.negative_sampler, self.batch_size, seed=self.seed)
        return DataLoader(PassThrough(), batch_size=None, sampler=sampler, num_workers=self.num_workers)

    def _eval_loader(self, mask: UserItemCSR, target: UserItemCSR) -> DataLoader:
        rank, world = distributed_rank_and_world()
        dataset = RankingEvalSet(mask, target, self.eval_batch_size, rank=rank, world_size=world)
        return DataLoader(dataset, batch_size=None, shuffle=False, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        if self.validate_on_test:
            return self._eval_loader(self._csr["train"], self._csr["test"])
        return self._eval_loader(self._csr["train"], self._csr["valid"])

    def test_dataloader(self) -> DataLoader:
        train_and_valid = self._csr["train"].union(self._csr["valid"])
        return self._eval_loader(train_and_valid, self._csr["test"])
