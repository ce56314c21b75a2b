"""Negative samplers (the ``sampler/`` config group) and the BPR epoch sampler.

A negative sampler is bound once to the training data (``bind``) and then draws negatives for a batch of
users in a few tensor ops (``sample``). Rejection against the user's train positives is a batched
binary search on sorted ``user * num_items + item`` keys; only rejected entries are redrawn.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, Sampler

from recsys.data.interactions import UserItemCSR
from recsys.errors import ConfigError, DataError

MAX_REJECTION_ROUNDS = 100


class NegativeSampler:
    """Base class: draws ``num_negatives`` items per user, never one of the user's train positives."""

    def __init__(self, num_negatives: int = 1) -> None:
        if num_negatives < 1:
            raise ConfigError(f"sampler.num_negatives must be >= 1, got {num_negatives}")
        self.num_negatives = num_negatives
        self.train: UserItemCSR | None = None
        self._keys: torch.Tensor | None = None

    def bind(self, train: UserItemCSR) -> NegativeSampler:
        """Attach the training interactions (called once by the DataModule)."""
        full = (train.degrees >= train.num_items).nonzero()
        if full.numel():
            raise DataError(
                f"user {int(full[0])} interacted with all {train.num_items} items in train: "
                "no negative item exists for it (filter such users out)"
            )
        self.train = train
        self._keys = train.keys()
        return self

    def propose(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Draw ``n`` candidate item ids from the proposal distribution (uniform here)."""
        assert self.train is not None
        return torch.randint(self.train.num_items, (n,), generator=generator)

    def sample(self, users: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Negatives of shape ``(len(users), num_negatives)``, rejected against train positives."""
        if self.train is None:
            raise RuntimeError("NegativeSampler.bind(train) must be called before sample()")
        users_rep = users[:, None].expand(-1, self.num_negatives).reshape(-1)
        items = self.propose(users_rep.numel(), generator)
        todo = self.train.contains(users_rep, items, self._keys).nonzero().squeeze(1)
        rounds = 0
        while todo.numel():
            rounds += 1
            if rounds > MAX_REJECTION_ROUNDS:
                raise RuntimeError(f"negative sampling did not converge after {MAX_REJECTION_ROUNDS} rounds")
            items[todo] = self.propose(todo.numel(), generator)
            todo = todo[self.train.contains(users_rep[todo], items[todo], self._keys)]
        return items.view(-1, self.num_negatives)


class UniformNegativeSampler(NegativeSampler):
    """``sampler=uniform``: items uniform over the catalogue, rejecting train positives (LightGCN/NGCF)."""


def distributed_rank_and_world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside ``torch.distributed``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class BPREpochSampler(Sampler):
    """Yields one epoch of BPR training batches ``{users, pos_items, neg_items}``.

    The LightGCN protocol (algorithms.md §1.4): ``num_samples`` (default: number of train interactions)
    users drawn uniformly with replacement among users that have train items, a uniform positive of each,
    and negatives from ``negative_sampler``. The whole epoch is drawn in a few tensor ops from a generator
    seeded by ``(seed, epoch)``; under DDP every rank draws the same epoch and keeps the disjoint slice
    ``rank::world_size``. Used as the ``sampler`` of a DataLoader over :class:`PassThrough`.
    """

    def __init__(
        self,
        train: UserItemCSR,
        negative_sampler: NegativeSampler,
        batch_size: int,
        seed: int = 0,
        num_samples: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"data.batch_size must be >= 1, got {batch_size}")
        self.train = train
        self.negative_sampler = negative_sampler
        self.batch_size = batch_size
        self.seed = seed
        self.num_samples = num_samples or train.nnz
        self.epoch = 0
        self.active_users = (train.degrees > 0).nonzero().squeeze(1)
        if self.active_users.numel() == 0:
            raise DataError("no user has a train interaction: cannot draw BPR triples")

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning before each epoch; makes the draw a function of (seed, epoch)."""
        self.epoch = epoch

    def _local_count(self) -> int:
        rank, world = distributed_rank_and_world()
        return len(range(rank, self.num_samples, world))

    def __len__(self) -> int:
        return math.ceil(self._local_count() / self.batch_size)

    def draw_epoch(self) -> dict[str, torch.Tensor]:
        """The full epoch's triples (all ranks), deterministic in (seed, epoch)."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        users = self.active_users[torch.randint(self.active_users.numel(), (self.num_samples,), generator=g)]
        start = self.train.indptr[users]
        deg = self.train.indptr[users + 1] - start
        offset = (torch.rand(self.num_samples, generator=g, dtype=torch.float64) * deg).long()
        pos = self.train.indices[start + offset]
        neg = self.negative_sampler.sample(users, g)
        return {"users": users, "pos_items": pos, "neg_items": neg}

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        epoch = self.draw_epoch()
        rank, world = distributed_rank_and_world()
        if world > 1:
            epoch = {k: v[rank::world] for k, v in epoch.items()}
        n = epoch["users"].numel()
        for lo in range(0, n, self.batch_size):
            yield {k: v[lo : lo + self.batch_size] for k, v in epoch.items()}


class PassThrough(Dataset):
    """A dataset whose item *is* the index: lets a Sampler yield whole ready-made batches."""

    def __getitem__(self, batch):  # type: ignore[override]
        return batch
