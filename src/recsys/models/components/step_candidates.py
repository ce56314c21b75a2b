"""The item rows a GRU4Rec training step reads (its *candidates*), found for a chunk of steps at once.

A session-parallel step scores its columns (the lanes' targets, then the shared extra negatives) and, with the
shared embedding, looks up its input items in the same table. :meth:`GRU4RecNet.train_step
<recsys.models.components.gru4rec.GRU4RecNet.train_step>` reads each distinct item once: the step's candidates
are the distinct items of its columns (and inputs) in item order, and every column (and input) is an index
among them. :func:`chunk_candidates` finds them for all T steps of a chunk with one pass of tensor ops over keys
``t · N + item`` (a few per chunk instead of ten per step); :meth:`ChunkCandidates.step` hands out one step's
as views.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

#: mark a (T · N) table of the chunk's keys up to this many entries per key, else sort the keys (torch.unique)
CANDIDATE_MARK_FACTOR = 16


class StepCandidates(NamedTuple):
    """One step's candidates: ``rows`` ``(K,)`` the distinct items, ascending; ``targets`` ``(b,)``,
    ``negatives`` ``(S,)`` (None without extra negatives) and ``items`` ``(b,)`` (None without the shared
    embedding): the index among ``rows`` of every target, extra negative and input item."""

    rows: torch.Tensor
    targets: torch.Tensor
    negatives: torch.Tensor | None
    items: torch.Tensor | None

    @property
    def num_columns(self) -> int:
        """The number of score columns (targets and extra negatives)."""
        return self.targets.numel() + (0 if self.negatives is None else self.negatives.numel())

    @property
    def columns(self) -> torch.Tensor:
        """The index among ``rows`` of every score column (targets, then the extra negatives)."""
        return self.targets if self.negatives is None else torch.cat([self.targets, self.negatives])


@dataclass(frozen=True)
class ChunkCandidates:
    """The candidates of a chunk's steps laid end to end: step ``t``'s are flat positions
    ``offsets[t]:offsets[t+1]``. ``flat_columns``: the flat position of every column, the targets ``(E,)`` then
    the extra negatives ``(T · S,)`` step by step (to add up per-candidate column weights for the chunk at once);
    ``targets``/``negatives``/``items``: the same as step-local indices (:class:`StepCandidates`)."""

    rows: torch.Tensor
    offsets: list[int]
    ptr: list[int]
    flat_columns: torch.Tensor
    targets: torch.Tensor
    negatives: torch.Tensor | None
    items: torch.Tensor | None

    @property
    def size(self) -> int:
        """The number of candidates of all steps together."""
        return self.offsets[-1]

    def step(self, t: int) -> StepCandidates:
        lo, hi = self.ptr[t], self.ptr[t + 1]
        return StepCandidates(
            self.rows[self.offsets[t] : self.offsets[t + 1]],
            self.targets[lo:hi],
            None if self.negatives is None else self.negatives[t],
            None if self.items is None else self.items[lo:hi],
        )


def chunk_candidates(
    num_items: int,
    ptr: torch.Tensor,
    targets: torch.Tensor,
    negatives: torch.Tensor | None = None,
    items: torch.Tensor | None = None,
) -> ChunkCandidates:
    """The candidates of T steps: step ``t`` has targets (and inputs) ``targets[ptr[t]:ptr[t+1]]`` (``items``
    likewise) and the extra negatives ``negatives[t]`` (``(T, S)``). Candidates are the distinct items of each
    step's targets, negatives and ``items`` (pass ``items`` only where the step looks them up in the same table).

    The keys ``t · N + item`` of every step are marked in a ``T · N`` table (its running count numbers them) while
    that table is within :data:`CANDIDATE_MARK_FACTOR` × the keys, else sorted (``torch.unique``)."""
    device = targets.device
    num_steps, num_events = ptr.numel() - 1, targets.numel()
    steps = torch.arange(num_steps, device=device)
    step_of_event = torch.repeat_interleave(steps, ptr.diff(), output_size=num_events)
    event_base = step_of_event * num_items
    keys = [event_base + targets]
    if negatives is not None:
        keys.append((negatives + (steps * num_items)[:, None]).view(-1))
    if items is not None:
        keys.append(event_base + items)
    all_keys = torch.cat(keys)
    offsets = torch.zeros(num_steps + 1, dtype=torch.long, device=device)
    if num_steps * num_items >= CANDIDATE_MARK_FACTOR * all_keys.numel():  # (also: nothing to mark)
        flat_keys, position = torch.unique(all_keys, sorted=True, return_inverse=True)
        per_step = torch.bincount(torch.div(flat_keys, num_items, rounding_mode="floor"), minlength=num_steps)
        torch.cumsum(per_step, 0, out=offsets[1:])
    else:
        used = torch.zeros(num_steps * num_items, dtype=torch.bool, device=device).index_fill_(0, all_keys, True)
        rank = used.cumsum(0)  # marked keys up to each table entry: at every step's last entry, its end offset
        offsets[1:] = rank.view(num_steps, num_items)[:, -1]
        position = rank.index_select(0, all_keys).sub_(1)
        # the marked keys in order, each written by its own keys (cheaper than nonzero over the whole table)
        flat_keys = all_keys.new_empty(int(offsets[-1])).index_put_((position,), all_keys)
    rows = flat_keys - torch.repeat_interleave(steps * num_items, offsets.diff(), output_size=flat_keys.numel())
    start = offsets[:-1]  # each step's first flat position: flat − start = the index within the step
    event_start = start.index_select(0, step_of_event)
    num_columns = num_events + (negatives.numel() if negatives is not None else 0)
    return ChunkCandidates(
        rows=rows,
        offsets=offsets.tolist(),
        ptr=ptr.tolist(),
        flat_columns=position[:num_columns],
        targets=position[:num_events] - event_start,
        negatives=None if negatives is None else position[num_events:num_columns].view(num_steps, -1) - start[:, None],
        items=None if items is None else position[num_columns:] - event_start,
    )
