"""Session-parallel mini-batches (GRU4Rec, Hidasi et al., ICLR'16 §3.1.1), planned with array operations and
streamed.

Sessions are taken in the order of the split (by start time). ``B`` lanes each hold one session; at every
step a lane's input is the session's current item and its target the next item. When a lane's session has
no next item left, the lane takes the next unused session at the following step (lanes that free up at the
same step take sessions in lane order) and its hidden state must be reset. When no session is left, finished
lanes go idle and the batch shrinks. Training without shared extra negatives (``n_sample = 0``) stops, as the
official code's ``_adjust_hidden``, at the first lane release that leaves fewer than 2 lanes (``min_lanes=2``:
no update from a 1 × 1 score matrix). Otherwise a session of length ``n`` contributes exactly ``n − 1`` steps; sessions
of length < 2 contribute nothing.

:func:`plan_session_parallel` computes the lane and first step of every session (one vectorised update per
*distinct lane-release time*, never one per event), then lays all events out in step order with array ops;
:class:`SessionParallelChunks` (a sampler of ready-made chunks) yields ``steps_per_chunk`` steps at a time as
slices of those arrays:

* ``inputs`` ``(b,)`` int64 — current item of every active lane;
* ``targets`` ``(b,)`` int64 — next item;
* ``lanes`` ``(b,)`` int64 — lane of every row (ascending; ``b <= B``; rows of idle lanes are absent);
* ``reset`` ``(b,)`` bool — a new session starts in this lane at this step (reset its hidden state first);

concatenated over the chunk's steps, with ``ptr`` marking the steps (and the training steps' shared negatives).
Evaluation chunks (``event_ids=True``) also name every row: ``sessions`` (index of its session in the split) and
``positions`` (0-based position of its input event in the session), for the per-event test results.

Under DDP every rank takes the sessions ``rank::world_size`` (still in start-time order) and runs its own
lanes; all ranks yield the same number of steps (the longest rank's), shorter ranks ending with empty steps,
so the per-step gradient all-reduce never waits for a missing batch. The plan is not random; the shared
negatives are a function of ``(seed, epoch, rank, step)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from recsys.data.loading import EpochSampler
from recsys.info import SessionSequences
from recsys.sampling import NegativeSampler, StepNegatives


@dataclass(frozen=True)
class SessionSchedule:
    """Lane and first step of every session (``-1`` for sessions with fewer than 2 events)."""

    lane: np.ndarray
    start: np.ndarray
    num_steps: int


def schedule_sessions(lengths: np.ndarray, num_lanes: int) -> SessionSchedule:
    """Greedy lane assignment of sessions in order: session ``s`` (``d_s = len_s − 1`` steps) goes to the
    lane that frees up first (lowest lane index on ties) at the step it frees up.

    Loops once per distinct release time (at most once per step), each iteration a few vector operations
    over the ``B`` lanes.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    lane = np.full(len(lengths), -1, dtype=np.int64)
    start = np.full(len(lengths), -1, dtype=np.int64)
    active = np.flatnonzero(lengths >= 2)
    duration = lengths[active] - 1
    n = len(active)
    if n == 0:
        return SessionSchedule(lane, start, 0)
    first = min(num_lanes, n)
    a_lane = np.empty(n, dtype=np.int64)
    a_start = np.empty(n, dtype=np.int64)
    a_lane[:first] = np.arange(first)
    a_start[:first] = 0
    free_at = duration[:first].copy()
    nxt = first
    while nxt < n:
        t = free_at.min()
        lanes = np.flatnonzero(free_at == t)[: n - nxt]
        new = np.arange(nxt, nxt + len(lanes))
        a_lane[new] = lanes
        a_start[new] = t
        free_at[lanes] = t + duration[new]
        nxt += len(lanes)
    lane[active] = a_lane
    start[active] = a_start
    return SessionSchedule(lane, start, int(free_at.max()))


@dataclass(frozen=True)
class SessionParallelPlan:
    """All steps of one pass, events in (step, lane) order; step ``t`` is rows ``ptr[t]:ptr[t+1]``."""

    inputs: torch.Tensor
    targets: torch.Tensor
    lanes: torch.Tensor
    reset: torch.Tensor
    ptr: torch.Tensor
    num_lanes: int
    #: with ``event_ids``: session (index in the planned sequences) and 0-based position in it of every row's
    #: input event
    sessions: torch.Tensor | None = None
    positions: torch.Tensor | None = None

    @property
    def num_steps(self) -> int:
        return self.ptr.numel() - 1

    def steps_with_lanes(self, min_lanes: int) -> int:
        """Steps kept when the pass stops at the first lane release (a step ``t > 0`` at which a lane resets
        or the batch shrinks: the official iterator's block boundary) that leaves fewer than ``min_lanes``
        lanes."""
        counts = self.ptr.diff()
        if min_lanes <= 1 or self.num_steps == 0:
            return self.num_steps
        resets = torch.zeros(self.num_steps, dtype=torch.long).index_add_(
            0, torch.repeat_interleave(torch.arange(self.num_steps), counts), self.reset.long())
        boundary = (resets[1:] > 0) | (counts[1:] < counts[:-1])
        stop = torch.nonzero(boundary & (counts[1:] < min_lanes))
        return int(stop[0]) + 1 if stop.numel() else self.num_steps



def plan_session_parallel(sessions: SessionSequences, num_lanes: int, event_ids: bool = False) -> SessionParallelPlan:
    """The whole pass over ``sessions`` with ``num_lanes`` lanes (module docstring), vectorised; ``event_ids``: keep
    every row's session and position too (evaluation)."""
    lengths = sessions.lengths
    sched = schedule_sessions(lengths, num_lanes)
    steps = np.maximum(lengths - 1, 0)
    total = int(steps.sum())
    sess = np.repeat(np.arange(len(lengths), dtype=np.int64), steps)  # session of every step-event
    first = np.cumsum(steps) - steps
    offset = np.arange(total, dtype=np.int64) - first[sess]  # 0-based position inside the session
    event = sessions.offsets[:-1][sess] + offset  # index of the input event
    step = sched.start[sess] + offset
    lane = sched.lane[sess]
    width = max(num_lanes, 1)
    slot = np.full(sched.num_steps * width, -1, dtype=np.int64)
    slot[step * width + lane] = np.arange(total)  # (step, lane) → row: a counting sort, no argsort
    order = slot[slot >= 0]
    counts = np.bincount(step, minlength=sched.num_steps)
    ptr = np.zeros(sched.num_steps + 1, dtype=np.int64)
    np.cumsum(counts, out=ptr[1:])
    items = sessions.items
    return SessionParallelPlan(
        inputs=torch.from_numpy(items[event[order]].copy()),
        targets=torch.from_numpy(items[event[order] + 1].copy()),
        lanes=torch.from_numpy(lane[order].copy()),
        reset=torch.from_numpy(offset[order] == 0),
        ptr=torch.from_numpy(ptr),
        num_lanes=num_lanes,
        sessions=torch.from_numpy(sess[order].copy()) if event_ids else None,
        positions=torch.from_numpy(offset[order].copy()) if event_ids else None,
    )


class SessionParallelChunks(EpochSampler):
    """Yields the steps of :func:`plan_session_parallel` in chunks of ``steps_per_chunk`` (module docstring).

    A chunk is ``{inputs, targets, lanes, reset}`` (the chunk's events, ``(E,)``) with ``ptr`` ``(T + 1,)``
    (step ``t`` is rows ``ptr[t]:ptr[t+1]``) and, for training with extra negatives, ``negatives`` and
    ``neg_log_q`` ``(T, n_sample)`` (:class:`~recsys.sampling.StepNegatives`, a function of
    ``(seed, epoch, rank, step)``: the chunking does not change them).

    Args:
        sessions: the split, sessions in start-time order.
        batch_size: number of lanes ``B`` (GRU4Rec's ``batch_size``).
        rank, world_size: this process's share ``sessions[rank::world_size]``.
        pad_to_longest_rank: yield as many steps as the longest rank's plan (empty steps at the end) so that
            all DDP ranks take the same number of optimizer steps (training); evaluation leaves it off.
        min_lanes: stop the pass at the first lane release leaving fewer lanes (training with ``n_sample=0``:
            2, as the official code; evaluation: 1, every event is scored).
        steps_per_chunk: steps per yielded chunk.
        negatives: the sampler of the steps' shared extra negatives (training; ``None`` or ``n_sample=0``: none).
        seed: seed of the negatives.
        event_ids: add ``sessions`` (index in ``sessions``, whatever the rank) and ``positions`` to every chunk.
    """

    def __init__(
        self,
        sessions: SessionSequences,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        pad_to_longest_rank: bool = False,
        min_lanes: int = 1,
        steps_per_chunk: int = 1,
        negatives: NegativeSampler | None = None,
        seed: int = 0,
        event_ids: bool = False,
    ) -> None:
        super().__init__(batch_size, steps_per_chunk, seed)
        self.rank, self.world_size = rank, world_size
        self.event_ids = event_ids
        self.negatives = negatives if negatives is not None and negatives.n_sample > 0 else None

        def rank_plan(r: int) -> SessionParallelPlan:
            return plan_session_parallel(sessions.take(np.arange(r, sessions.num_sessions, world_size)), batch_size,
                                         event_ids=event_ids)

        self.plan = rank_plan(rank)
        self.plan_steps = self.plan.steps_with_lanes(min_lanes)
        self.num_steps = self.plan_steps
        if pad_to_longest_rank and world_size > 1:
            if min_lanes <= 1:
                lengths = sessions.lengths
                self.num_steps = max(
                    schedule_sessions(lengths[r::world_size], batch_size).num_steps for r in range(world_size)
                )
            else:
                self.num_steps = max(rank_plan(r).steps_with_lanes(min_lanes) for r in range(world_size))

    def __len__(self) -> int:
        return math.ceil(self.num_steps / self.steps_per_chunk)

    def chunk(self, lo: int, hi: int, draws: StepNegatives | None = None) -> dict[str, torch.Tensor]:
        """Steps ``lo..hi-1`` (those beyond the plan are empty padding steps)."""
        plan = self.plan
        a, b = min(lo, self.plan_steps), min(hi, self.plan_steps)
        first, last = int(plan.ptr[a]), int(plan.ptr[b])
        ptr = plan.ptr[a : b + 1] - first
        if hi - lo > b - a:  # padding steps: empty ranges at the end
            ptr = torch.cat([ptr, ptr[-1:].expand(hi - lo - (b - a))])
        out = {"inputs": plan.inputs[first:last], "targets": plan.targets[first:last],
               "lanes": plan.lanes[first:last], "reset": plan.reset[first:last], "ptr": ptr}
        if self.event_ids:  # this rank plans sessions rank::world_size: index j here is rank + j·world there
            assert plan.sessions is not None and plan.positions is not None
            out["sessions"] = plan.sessions[first:last] * self.world_size + self.rank
            out["positions"] = plan.positions[first:last]
        if draws is not None:
            out["negatives"], out["neg_log_q"] = draws.steps(lo, hi)
        return out

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        draws = None if self.negatives is None else StepNegatives(self.negatives, self.seed, self.epoch, self.rank)
        for lo in range(0, self.num_steps, self.steps_per_chunk):
            yield self.chunk(lo, min(lo + self.steps_per_chunk, self.num_steps), draws)
