"""LightningDataModule for session data (GRU4Rec training, next-item evaluation)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from recsys.data.cache import ensure_cached, load_or_build
from recsys.data.session_batches import SessionParallelBatches
from recsys.data.session_data import (
    SessionSequences,
    SessionSplits,
)
from recsys.errors import ConfigError, DataError
from recsys.sampling import NegativeSampler, UniformNegativeSampler, distributed_rank_and_world

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SessionInfo:
    """What a session model needs to know about its data (handed to the model constructor).

    ``item_support``: ``supp(i)``, the number of training events of every item; ``batch_size``: the
    configured number of lanes (GRU4Rec normalises the loss by it); ``negative_sampler``: bound with
    ``item_counts=item_support``, it draws the extra negatives shared by a mini-batch (``n_sample``,
    ``∝ supp^alpha``); ``train``: the training sessions (for baselines that count co-occurrences).
    """

    num_items: int
    item_support: torch.Tensor
    batch_size: int
    negative_sampler: NegativeSampler
    train: SessionSequences

    @property
    def item_popularity(self) -> torch.Tensor:
        return self.item_support

    @property
    def n_sample(self) -> int:
        return int(getattr(self.negative_sampler, "n_sample", 0))

    @property
    def sample_alpha(self) -> float:
        return float(getattr(self.negative_sampler, "alpha", 0.0))


class SessionDataModule(pl.LightningDataModule):
    """Session data: the source is built (or read from the cache) once, on one process.

    * train: session-parallel mini-batches over the train sessions (``batch_size`` lanes, start-time order);
    * val / test: the same over the validation / test sessions with ``eval_batch_size`` lanes; the model
      resets the hidden state at every session start and ranks each next item among all training items.

    ``validate_on_test=True`` selects models on the test split (GRU4Rec's own scripts have no validation
    split: they train a fixed number of epochs on ``train_full`` and report the test); runs made that way
    say so in ``metrics.json``. Loaders run in the main process (``num_workers`` is ignored: a
    session-parallel stream cannot be split across workers and a step costs a few slices). ``path`` is
    ``data.path``, only interpolated into ``source.path`` by the configs.
    """

    kind = "session"

    def __init__(
        self,
        source: Any,
        batch_size: int = 64,
        eval_batch_size: int = 512,
        cache_dir: str | None = None,
        validate_on_test: bool = False,
        num_workers: int = 0,
        seed: int = 0,
        negative_sampler: NegativeSampler | None = None,
        path: str | None = None,
    ) -> None:
        super().__init__()
        if batch_size < 1 or eval_batch_size < 1:
            raise ConfigError(f"data.batch_size and data.eval_batch_size must be >= 1, got {batch_size}, {eval_batch_size}")
        self.source = source
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.validate_on_test = validate_on_test
        if num_workers:
            log.info("data.num_workers=%d ignored: session-parallel loaders run in the main process", num_workers)
        self.seed = seed
        self.path = path
        self.negative_sampler = negative_sampler or UniformNegativeSampler()
        self.splits: SessionSplits | None = None
        self._support: torch.Tensor | None = None

    # -- preparation ---------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Build and cache the dataset (Lightning runs this on one process per node)."""
        if self.cache_dir is not None:
            ensure_cached(self.source, self.cache_dir, SessionSplits.load)

    def setup(self, stage: str | None = None) -> None:
        if self.splits is not None:
            return
        self.splits = load_or_build(self.source, self.cache_dir, SessionSplits.load)
        s = self.splits
        self._support = torch.from_numpy(s.item_support())
        self.negative_sampler.bind(item_counts=self._support)
        if not self.validate_on_test and s.valid.num_steps == 0:
            raise ConfigError(
                f"data source {self.source.name!r} has an empty validation split; set data.validate_on_test=true "
                "(GRU4Rec's protocol: train_full → test) or give a validation split (e.g. "
                "data.source.preprocessing.valid_days=1, or data.source.valid=<file>)"
            )
        if s.test.num_steps == 0:
            raise DataError(f"data source {self.source.name!r}: the test split has no session with 2+ events")
        log.info("Session dataset %s: %s", self.source.name, s.summary())

    @property
    def info(self) -> SessionInfo:
        """Sizes, item support and the bound sampler handed to the model (call after ``setup``)."""
        if self.splits is None or self._support is None:
            raise RuntimeError("SessionDataModule.setup() must run before .info")
        return SessionInfo(self.splits.num_items, self._support, self.batch_size, self.negative_sampler,
                           self.splits.train)

    # -- loaders -------------------------------------------------------------------------------
    def _loader(self, split: SessionSequences, lanes: int, train: bool, name: str) -> DataLoader:
        rank, world = distributed_rank_and_world()
        if split.num_sessions < world:  # a rank without sessions would leave the others waiting in DDP's sync
            raise DataError(
                f"data {self.source.name!r}: the {name} split has {split.num_sessions} session(s) but the run has "
                f"{world} processes; each needs at least one (use fewer devices or more data)"
            )
        # training without shared extra negatives stops before a 1 × 1 score matrix (official _adjust_hidden)
        min_lanes = 2 if train and int(getattr(self.negative_sampler, "n_sample", 0)) == 0 else 1
        dataset = SessionParallelBatches(split, lanes, rank=rank, world_size=world, pad_to_longest_rank=train,
                                         min_lanes=min_lanes)
        return DataLoader(dataset, batch_size=None, num_workers=0)

    def train_dataloader(self) -> DataLoader:
        assert self.splits is not None
        return self._loader(self.splits.train, self.batch_size, train=True, name="train")

    def val_dataloader(self) -> DataLoader:
        assert self.splits is not None
        if self.validate_on_test:
            return self._loader(self.splits.test, self.eval_batch_size, train=False, name="test (validate_on_test)")
        return self._loader(self.splits.valid, self.eval_batch_size, train=False, name="validation")

    def test_dataloader(self) -> DataLoader:
        assert self.splits is not None
        return self._loader(self.splits.test, self.eval_batch_size, train=False, name="test")
