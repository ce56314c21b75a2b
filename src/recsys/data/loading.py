"""What the training loaders share: process rank, epoch-seeded samplers of ready-made chunks, the pass-through
dataset that lets a ``Sampler`` yield whole batches (no per-sample ``__getitem__`` + collate)."""

from __future__ import annotations

from typing import ClassVar

import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler

from recsys.settings import POSITIVE_INT, Settings, check_settings


def distributed_rank_and_world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside ``torch.distributed``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class PassThrough(Dataset):
    """A dataset whose item *is* the index: lets a Sampler yield whole ready-made batches."""

    def __getitem__(self, batch):  # type: ignore[override]
        return batch


class EpochSampler(Sampler):
    """A sampler whose items are whole chunks of ``steps_per_chunk`` steps of ``batch_size`` rows (or lanes),
    drawn as a function of ``(seed, epoch)``; Lightning calls :meth:`set_epoch` before every epoch."""

    #: its ``data.*`` settings (:mod:`recsys.settings`), which the DataModule passes on
    settings: ClassVar[Settings] = {"batch_size": POSITIVE_INT, "steps_per_chunk": POSITIVE_INT}

    def __init__(self, batch_size: int, steps_per_chunk: int = 1, seed: int = 0) -> None:
        check_settings("data", {"batch_size": batch_size, "steps_per_chunk": steps_per_chunk}, type(self))
        self.batch_size = batch_size
        self.steps_per_chunk = steps_per_chunk
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def loader(self, num_workers: int = 0) -> DataLoader:
        """A DataLoader that hands this sampler's chunks over as they are."""
        return DataLoader(PassThrough(), batch_size=None, sampler=self, num_workers=num_workers)
