"""LightningDataModule for session data (GRU4Rec / SASRec training, next-item evaluation)."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils.data import DataLoader

from recsys.data.datamodule import RecDataModule
from recsys.data.loading import distributed_rank_and_world
from recsys.data.sequence_batches import WINDOWS, SequenceChunks
from recsys.data.session_batches import SessionParallelChunks
from recsys.data.session_data import SessionSplits
from recsys.errors import DataError
from recsys.info import SessionInfo, SessionSequences
from recsys.sampling import StepNegatives
from recsys.settings import POSITIVE_INT, Settings, check_settings, one_of

log = logging.getLogger(__name__)

#: session-parallel evaluation steps per validation/test batch (no optimiser step: only the loop's toll)
EVAL_STEPS_PER_CHUNK = 64
#: ``data.train_batches``: GRU4Rec's session-parallel lanes, or windows of sessions (self-attentive models)
TRAIN_BATCHES = ("session_parallel", "sequences")


class SessionDataModule(RecDataModule):
    """Session data (:class:`~recsys.data.datamodule.RecDataModule`):

    * train (``train_batches``): ``session_parallel`` mini-batches over the train sessions (``batch_size``
      lanes, start-time order), with the sampler's ``n_sample`` shared extra negatives per step
      (``sampler=gru4rec``); or ``sequences``: ``batch_size`` left-padded windows of at most ``max_len + 1``
      events of the train sessions (long sessions cut by ``windows``), next-item targets at every position and
      ``sampler.num_negatives`` negatives per target (:mod:`recsys.data.sequence_batches`; ``model=sasrec``
      sets it);
    * val / test: the same over the validation / test sessions with ``eval_batch_size`` lanes; the model
      resets the hidden state at every session start and ranks each next item among all training items.

    GRU4Rec's own scripts have no validation split (they train a fixed number of epochs on ``train_full`` and
    report the test): ``validate_on_test=True``. Loaders run in the main process (``num_workers`` is ignored:
    a session-parallel stream cannot be split across workers and a step costs a few slices).
    """

    kind = "session"
    settings: ClassVar[Settings] = {**RecDataModule.settings, "train_batches": one_of(*TRAIN_BATCHES),
                                    "max_len": POSITIVE_INT, "windows": one_of(*WINDOWS)}

    def __init__(self, source: Any, batch_size: int = 64, eval_batch_size: int = 512, num_workers: int = 0,
                 train_batches: str = "session_parallel", max_len: int = 50, windows: str = "all",
                 **kwargs: Any) -> None:
        """``kwargs``: :class:`~recsys.data.datamodule.RecDataModule`'s (cache_dir, validate_on_test, …)."""
        check_settings("data", {"num_workers": num_workers, "train_batches": train_batches, "max_len": max_len,
                                "windows": windows}, type(self))
        if num_workers:
            log.info("data.num_workers=%d ignored: session loaders run in the main process", num_workers)
        super().__init__(source, batch_size, eval_batch_size, num_workers=0, **kwargs)
        self.train_batches, self.max_len, self.windows = train_batches, max_len, windows
        self._support: torch.Tensor | None = None

    def on_splits(self, splits: SessionSplits) -> None:
        self.splits = splits
        self._support = torch.from_numpy(splits.item_support())
        self.negative_sampler.bind(item_counts=self._support)
        if not self.validate_on_test and splits.valid.num_steps == 0:
            raise self.empty_validation(
                "data.validate_on_test=true (GRU4Rec's protocol: train_full → test) or give a validation split (e.g. "
                "data.source.preprocessing.valid_days=1, or data.source.valid=<file>)")
        if splits.test.num_steps == 0:
            raise DataError(f"data source {self.source.name!r}: the test split has no session with 2+ events")
        log.info("Session dataset %s: %s", self.source.name, splits.summary())

    @property
    def info(self) -> SessionInfo:
        """Sizes, item support and the extra-negative settings handed to the model (call after ``setup``)."""
        if self.splits is None or self._support is None:
            raise RuntimeError("SessionDataModule.setup() must run before .info")
        return SessionInfo(self.splits.num_items, self._support, self.batch_size,
                           int(self.negative_sampler.n_sample), float(self.negative_sampler.alpha), self.splits.train,
                           self.train_batches, self.max_len if self.train_batches == "sequences" else None)

    def evaluation_units(self, split: str, ids: np.ndarray) -> dict[str, np.ndarray]:
        """``{"session": original id (its index without ids), "position": 0-based position of the input event}``
        of the evaluated events ``ids`` = (session index in ``split``, position)."""
        assert self.splits is not None
        sessions, original = ids[:, 0], self.splits.split(split).session_ids
        return {"session": sessions if original is None else original[sessions], "position": ids[:, 1]}

    # -- loaders -------------------------------------------------------------------------------
    def _rank_and_world(self, split: SessionSequences, name: str) -> tuple[int, int]:
        rank, world = distributed_rank_and_world()
        if split.num_sessions < world:  # a rank without sessions would leave the others waiting in DDP's sync
            raise DataError(
                f"data {self.source.name!r}: the {name} split has {split.num_sessions} session(s) but the run has "
                f"{world} processes; each needs at least one (use fewer devices or more data)"
            )
        return rank, world

    def _sequences(self) -> SequenceChunks:
        assert self.splits is not None
        rank, world = self._rank_and_world(self.splits.train, "train")
        return SequenceChunks(self.splits.train, self.batch_size, self.max_len, self.windows, rank=rank,
                              world_size=world, steps_per_chunk=self.chunk_steps(), negatives=self.negative_sampler,
                              seed=self.seed)

    def _chunks(self, split: SessionSequences, lanes: int, train: bool, name: str) -> SessionParallelChunks:
        rank, world = self._rank_and_world(split, name)
        # training without shared extra negatives stops before a 1 × 1 score matrix (official _adjust_hidden)
        min_lanes = 2 if train and self.negative_sampler.n_sample == 0 else 1
        return SessionParallelChunks(
            split, lanes, rank=rank, world_size=world, pad_to_longest_rank=train, min_lanes=min_lanes,
            steps_per_chunk=self.chunk_steps() if train else EVAL_STEPS_PER_CHUNK,
            negatives=self.negative_sampler if train else None, seed=self.seed, event_ids=not train)

    def train_dataloader(self) -> DataLoader:
        assert self.splits is not None
        if self.train_batches == "sequences":
            return self._sequences().loader()
        return self._chunks(self.splits.train, self.batch_size, train=True, name="train").loader()

    def example_batch(self) -> dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]:
        if self.train_batches == "sequences":
            return self._sequences().chunk(0, 1, epoch=0)
        chunks = self._chunks(self.splits.train, self.batch_size, train=True, name="train")
        return chunks.chunk(0, 1, None if chunks.negatives is None else StepNegatives(chunks.negatives, self.seed, 0))

    def eval_loader(self, split: str, testing: bool) -> DataLoader:
        assert self.splits is not None
        name = "validation" if split == "valid" else "test" if testing else "test (validate_on_test)"
        return self._chunks(self.splits.split(split), self.eval_batch_size, train=False, name=name).loader()
