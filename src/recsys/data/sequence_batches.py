"""Sequence batches (``data.train_batches=sequences``): the training examples of self-attentive models such as
SASRec (Kang & McAuley, ICDM'18 §III-A), built with array operations from the cached session data.

An **example** is a window of ``m + 1 ≤ max_len + 1`` consecutive events of one training session (or user
history): its first ``m`` items are the inputs, its last ``m`` the next-item targets, one per position. In a
batch every example is **left-padded** with :data:`PAD` (−1, never an item id: items are ``0..N-1``) to the
batch's width ``w`` (its longest example, ``≤ max_len``), so the latest item of every example sits in the last
column:

* ``inputs`` ``(B, w)`` int64 — ``s_1..s_m`` right-aligned, ``PAD`` before;
* ``targets`` ``(B, w)`` int64 — ``s_2..s_{m+1}`` aligned with the inputs, ``PAD`` before;
* ``mask`` ``(B, w)`` bool — the positions that hold a target (``targets != PAD``);
* ``negatives`` ``(M, k)`` int64 and ``neg_log_q`` ``(M, k)`` float32 — ``k = sampler.num_negatives`` draws per
  target position from the sampler's proposal (uniform, or ``∝ supp(i)^alpha``; no rejection), with their log
  probabilities ``log q``; rows follow the positions of ``mask`` in row-major order (``M = mask.sum()``).

**Long sessions** (``n > max_len + 1`` events; ``data.windows``):

* ``all`` (default): the session is cut, from its end, into windows of ``max_len`` targets that overlap by one
  event (ends ``n, n − max_len, n − 2·max_len, …``; the earliest window is shorter), so every next-item
  transition of the split is a target exactly once per epoch;
* ``last``: only the last ``max_len + 1`` events (the official SASRec code's rule for user histories).

An **epoch** is one pass over all examples in an order shuffled by ``(seed, epoch)``, cut into steps of
``batch_size`` examples. Under DDP every rank takes the examples ``rank::world_size`` of that order and all ranks
take the same number of steps (a rank with fewer examples ends with an empty step). The negatives of a step are a
function of ``(seed, epoch, rank, step)``, whatever the chunking.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from recsys.data.loading import EpochSampler
from recsys.errors import ConfigError
from recsys.info import SessionSequences
from recsys.sampling import NegativeSampler, SessionNegativeSampler, sampling_generator

PAD = -1
WINDOWS = ("all", "last")
ORDER_STREAM, NEGATIVE_STREAM = 7, 8


@dataclass(frozen=True)
class SequenceExamples:
    """Example ``j`` is the events ``items[start[j]:stop[j]]`` of its split (global event indices)."""

    start: np.ndarray
    stop: np.ndarray

    def __len__(self) -> int:
        return len(self.start)


def sequence_examples(sessions: SessionSequences, max_len: int, windows: str = "all") -> SequenceExamples:
    """The examples of ``sessions`` (module docstring): a session of ``n ≥ 2`` events gives
    ``ceil((n − 1) / max_len)`` windows (``all``) or one (``last``), ordered by session, latest window first
    (``max_len`` and ``windows`` are checked by their owner, :class:`~recsys.data.session_datamodule.SessionDataModule`)."""
    lengths = sessions.lengths
    counts = -(-np.maximum(lengths - 1, 0) // max_len)  # ceil((n - 1) / max_len), 0 for n < 2
    if windows == "last":
        counts = np.minimum(counts, 1)
    session = np.repeat(np.arange(len(lengths), dtype=np.int64), counts)
    first = np.cumsum(counts) - counts
    j = np.arange(len(session), dtype=np.int64) - first[session]  # 0 = the session's last window
    stop = sessions.offsets[1:][session] - j * max_len
    start = np.maximum(sessions.offsets[:-1][session], stop - max_len - 1)
    return SequenceExamples(start, stop)


def sequence_batch(items: torch.Tensor, start: torch.Tensor, stop: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{inputs, targets, mask}`` ``(B, w)`` of the examples ``items[start:stop]`` (module docstring), one gather."""
    m = stop - start - 1  # targets per example
    w = int(m.max()) if m.numel() else 0
    event = (stop - 1 - w)[:, None] + torch.arange(w)[None, :]  # the input event of every column
    mask = event >= start[:, None]
    event = torch.where(mask, event, 0)
    pad = torch.full_like(event, PAD)
    return {"inputs": torch.where(mask, items[event], pad), "targets": torch.where(mask, items[event + 1], pad),
            "mask": mask}


class SequenceChunks(EpochSampler):
    """Yields an epoch's sequence batches (module docstring) in chunks: lists of ``steps_per_chunk`` step batches.

    Args:
        sessions: the training split.
        batch_size: examples per step.
        max_len, windows: the examples (:func:`sequence_examples`).
        rank, world_size: this process's share of every epoch's order.
        steps_per_chunk: steps per yielded chunk.
        negatives: the sampler whose proposal draws ``negatives.num_negatives`` negatives per target (None: none).
        seed: seed of the order and of the negatives.
    """

    def __init__(self, sessions: SessionSequences, batch_size: int, max_len: int, windows: str = "all", rank: int = 0,
                 world_size: int = 1, steps_per_chunk: int = 1, negatives: NegativeSampler | None = None,
                 seed: int = 0) -> None:
        super().__init__(batch_size, steps_per_chunk, seed)
        examples = sequence_examples(sessions, max_len, windows)
        self.start, self.stop = torch.from_numpy(examples.start), torch.from_numpy(examples.stop)
        self.items = torch.from_numpy(sessions.items)
        self.rank, self.world_size = rank, world_size
        self.num_steps = math.ceil(math.ceil(len(examples) / world_size) / batch_size)
        self.negatives = negatives
        if isinstance(negatives, SessionNegativeSampler):
            raise ConfigError("sampler=gru4rec draws GRU4Rec's extra negatives shared by a session-parallel step; "
                              "sequence batches take sampler=uniform or popularity (sampler.num_negatives per target)")
        if negatives is not None and not isinstance(negatives.num_negatives, int):
            raise ConfigError(f"sampler={type(negatives).__name__} gives no number of negatives per target "
                              "(sampler.num_negatives); sequence batches take sampler=uniform or popularity")
        if negatives is not None:
            weights = negatives.proposal_weights()
            self.log_q = (weights / weights.sum()).clamp_min(1e-300).log().float()

    def __len__(self) -> int:
        return math.ceil(self.num_steps / self.steps_per_chunk)

    def order(self, epoch: int) -> torch.Tensor:
        """This rank's examples of ``epoch``, in training order."""
        g = sampling_generator(self.seed, epoch, 0, ORDER_STREAM)
        return torch.randperm(len(self.start), generator=g)[self.rank :: self.world_size]

    def step(self, order: torch.Tensor, t: int, epoch: int) -> dict[str, torch.Tensor]:
        """Step ``t`` of ``epoch`` given the rank's ``order`` (empty beyond its examples)."""
        rows = order[t * self.batch_size : (t + 1) * self.batch_size]
        batch = sequence_batch(self.items, self.start[rows], self.stop[rows])
        if self.negatives is not None:
            m, k = int(batch["mask"].sum()), self.negatives.num_negatives
            g = sampling_generator(self.seed, epoch, self.rank, NEGATIVE_STREAM, t)
            negatives = self.negatives.propose(m * k, g).view(m, k)
            batch |= {"negatives": negatives, "neg_log_q": self.log_q[negatives]}
        return batch

    def chunk(self, lo: int, hi: int, epoch: int | None = None) -> list[dict[str, torch.Tensor]]:
        """Steps ``lo..hi-1`` of ``epoch`` (default: the current one)."""
        epoch = self.epoch if epoch is None else epoch
        order = self.order(epoch)
        return [self.step(order, t, epoch) for t in range(lo, hi)]

    def __iter__(self) -> Iterator[list[dict[str, torch.Tensor]]]:
        epoch = self.epoch
        order = self.order(epoch)
        for lo in range(0, self.num_steps, self.steps_per_chunk):
            yield [self.step(order, t, epoch) for t in range(lo, min(lo + self.steps_per_chunk, self.num_steps))]
