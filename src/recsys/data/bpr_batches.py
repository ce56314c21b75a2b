"""One epoch of BPR training batches (the sampling of LightGCN's official code, He et al., SIGIR'20), drawn with
tensor ops and
handed over in chunks of T batches (:mod:`recsys.models.chunked`)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from recsys.data.loading import EpochSampler, distributed_rank_and_world
from recsys.errors import DataError
from recsys.info import UserItemCSR
from recsys.sampling import NegativeSampler, sampling_generator


class BPREpochSampler(EpochSampler):
    """Yields one epoch of BPR training batches ``{users, pos_items, <negatives>}``, ``steps_per_chunk`` per item.

    ``num_samples`` (default: number of train interactions) users drawn uniformly with replacement among users
    that have train items and a uniform positive of each, in a few tensor ops from a generator seeded by
    ``(seed, epoch)``. Under DDP every rank draws the same (users, positives) and keeps the disjoint slice
    ``rank::world_size``, cut into the same number of near-equal batches (<= ``batch_size``) on every rank so
    that all ranks take the same number of steps. The negatives are added per batch by
    ``negative_sampler.batch_negatives`` (in-batch negatives depend on the batch), from a generator seeded by
    ``(seed, epoch, rank)``: the batches do not depend on ``steps_per_chunk``.

    ``device``: where the epoch is drawn (the train sets, the sampler's tables and the generators live there, and
    the batches come out there: nothing to copy per step). The draws are a function of the seeds for a given
    device type, GPU model and torch version: a GPU's random streams differ from the CPU's, and CUDA sizes its
    random kernels by the GPU's multiprocessor count (DDP ranks on GPUs of different models would draw different
    epochs, whose ``rank::world_size`` slices would no longer partition one epoch).
    """

    def __init__(
        self,
        train: UserItemCSR,
        negative_sampler: NegativeSampler,
        batch_size: int,
        seed: int = 0,
        num_samples: int | None = None,
        steps_per_chunk: int = 1,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(batch_size, steps_per_chunk, seed)
        self.device = torch.device(device or "cpu")
        self.train = train.to(self.device)
        self.negative_sampler = negative_sampler.to(self.device)
        self.num_samples = num_samples or train.nnz
        self.active_users = (self.train.degrees > 0).nonzero().squeeze(1)
        if self.active_users.numel() == 0:
            raise DataError("no user has a train interaction: cannot draw BPR triples")

    def num_batches(self) -> int:
        """BPR steps per epoch, the same on every rank (that of the largest shard): unequal step counts would
        desynchronise DDP's gradient all-reduce."""
        _, world = distributed_rank_and_world()
        return math.ceil(math.ceil(self.num_samples / world) / self.batch_size)

    def __len__(self) -> int:
        return math.ceil(self.num_batches() / self.steps_per_chunk)

    def draw_epoch(self) -> dict[str, torch.Tensor]:
        """The full epoch's ``users`` and ``pos_items`` (all ranks), deterministic in (seed, epoch)."""
        g = torch.Generator(device=self.device).manual_seed(self.seed * 1_000_003 + self.epoch)
        users = self.active_users[torch.randint(self.active_users.numel(), (self.num_samples,), generator=g,
                                                device=self.device)]
        start = self.train.indptr[users]
        deg = self.train.indptr[users + 1] - start
        offset = (torch.rand(self.num_samples, generator=g, dtype=torch.float64, device=self.device) * deg).long()
        pos = self.train.indices[start + offset]
        return {"users": users, "pos_items": pos}

    def batches(self) -> Iterator[dict[str, torch.Tensor]]:
        """The epoch's batches one by one."""
        epoch = self.draw_epoch()
        rank, world = distributed_rank_and_world()
        if world > 1:
            epoch = {k: v[rank::world] for k, v in epoch.items()}
        g = sampling_generator(self.seed, self.epoch, rank, device=self.device)
        n = epoch["users"].numel()
        if world > 1:  # num_batches() near-equal batches (<= batch_size each) on every rank
            num_batches = self.num_batches()
            bounds = [(i * n // num_batches, (i + 1) * n // num_batches) for i in range(num_batches)]
        else:
            bounds = [(lo, lo + self.batch_size) for lo in range(0, n, self.batch_size)]
        for lo, hi in bounds:
            users, pos = epoch["users"][lo:hi], epoch["pos_items"][lo:hi]
            yield {"users": users, "pos_items": pos, **self.negative_sampler.batch_negatives(users, pos, g)}

    def __iter__(self) -> Iterator[list[dict[str, torch.Tensor]]]:
        chunk: list[dict[str, torch.Tensor]] = []
        for batch in self.batches():
            chunk.append(batch)
            if len(chunk) == self.steps_per_chunk:
                yield chunk
                chunk = []
        if chunk:
            yield chunk
