"""What a DataModule hands to a model, and the containers it carries: a leaf module, so that data and models
both depend on it and never on each other.

* :class:`UserItemCSR`: per-user item sets in CSR form (train graphs, the items to exclude from a ranking);
* :class:`SessionSequences`: sessions of one split in CSR form (``offsets``, ``items``, ``times``, ids), each
  split's sessions ordered by start time, each session's events in time order;
* :class:`DatasetInfo` (graph models) and :class:`SessionInfo` (session models): the constructor argument
  ``info`` of a model (:func:`recsys.builders.build_model`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class UserItemCSR:
    """Per-user sorted item sets in CSR form (``indptr`` over users, ``indices`` = item ids).

    Set queries are batched: ``contains`` is a binary search over the sorted keys
    ``user * num_items + item``; ``gather_rows`` expands a batch of rows without a Python loop.
    """

    indptr: torch.Tensor  # (num_users + 1,) int64
    indices: torch.Tensor  # (nnz,) int64, sorted within each row
    num_items: int

    @classmethod
    def from_pairs(
        cls, users: torch.Tensor, items: torch.Tensor, num_users: int, num_items: int
    ) -> UserItemCSR:
        """Build from (user, item) pairs; duplicates are dropped, rows sorted by item."""
        users = torch.as_tensor(users, dtype=torch.int64)
        items = torch.as_tensor(items, dtype=torch.int64)
        if users.numel() and (users.min() < 0 or users.max() >= num_users or items.min() < 0 or items.max() >= num_items):
            raise ValueError(f"user/item ids must lie in [0, {num_users}) x [0, {num_items})")
        keys = torch.unique(users * num_items + items)  # sorted, deduplicated
        rows = keys // num_items
        counts = torch.bincount(rows, minlength=num_users)
        indptr = torch.zeros(num_users + 1, dtype=torch.int64)
        torch.cumsum(counts, 0, out=indptr[1:])
        return cls(indptr=indptr, indices=keys % num_items, num_items=num_items)

    @property
    def num_users(self) -> int:
        return self.indptr.numel() - 1

    @property
    def nnz(self) -> int:
        return self.indices.numel()

    @property
    def degrees(self) -> torch.Tensor:
        return self.indptr[1:] - self.indptr[:-1]

    def to(self, device: torch.device | str | None) -> UserItemCSR:
        """The same sets on ``device`` (``self`` when already there or ``device`` is None)."""
        if device is None or torch.device(device) == self.indptr.device:
            return self
        return UserItemCSR(indptr=self.indptr.to(device), indices=self.indices.to(device), num_items=self.num_items)

    def keys(self) -> torch.Tensor:
        """Sorted ``user * num_items + item`` keys of all stored pairs."""
        rows = torch.repeat_interleave(torch.arange(self.num_users, device=self.indptr.device), self.degrees)
        return rows * self.num_items + self.indices

    def pairs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All stored (user, item) pairs, row-major."""
        return torch.repeat_interleave(torch.arange(self.num_users, device=self.indptr.device), self.degrees), self.indices

    def contains(self, users: torch.Tensor, items: torch.Tensor, keys: torch.Tensor | None = None) -> torch.Tensor:
        """Batched membership test: ``out[j] = items[j] in row users[j]`` (any broadcastable shapes)."""
        keys = self.keys() if keys is None else keys
        query = users * self.num_items + items
        if keys.numel() == 0:
            return torch.zeros_like(query, dtype=torch.bool)
        pos = torch.searchsorted(keys, query.reshape(-1)).clamp_(max=keys.numel() - 1)
        return (keys[pos] == query.reshape(-1)).reshape(query.shape)

    def gather_rows(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Items of the given rows as ``(batch_position, item)`` pairs, vectorised."""
        starts = self.indptr[users]
        lengths = self.indptr[users + 1] - starts
        batch_pos = torch.repeat_interleave(torch.arange(users.numel(), device=users.device), lengths)
        first = torch.cumsum(lengths, 0) - lengths
        offsets = torch.arange(batch_pos.numel(), device=users.device) - first[batch_pos]
        return batch_pos, self.indices[starts[batch_pos] + offsets]

    def union(self, other: UserItemCSR) -> UserItemCSR:
        u1, i1 = self.pairs()
        u2, i2 = other.pairs()
        return UserItemCSR.from_pairs(torch.cat([u1, u2]), torch.cat([i1, i2]), self.num_users, self.num_items)


@dataclass(frozen=True)
class SessionSequences:
    """Sessions of one split in CSR form (see the module docstring)."""

    offsets: np.ndarray
    items: np.ndarray
    times: np.ndarray
    session_ids: np.ndarray | None = None

    @classmethod
    def empty(cls) -> SessionSequences:
        return cls(np.zeros(1, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64), np.zeros(0, dtype=str))

    @classmethod
    def from_lengths(
        cls, lengths: np.ndarray, items: np.ndarray, times: np.ndarray | None = None,
        session_ids: np.ndarray | None = None,
    ) -> SessionSequences:
        """Sessions given by their lengths and the concatenated items (and times)."""
        lengths = np.asarray(lengths, dtype=np.int64)
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        items = np.asarray(items, dtype=np.int64)
        times = np.zeros(len(items), np.float64) if times is None else np.asarray(times, dtype=np.float64)
        return cls(offsets, items, times, session_ids)

    @property
    def num_sessions(self) -> int:
        return len(self.offsets) - 1

    @property
    def num_events(self) -> int:
        return len(self.items)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def num_steps(self) -> int:
        """Number of next-item predictions (events that have a successor in their session)."""
        return int(np.maximum(self.lengths - 1, 0).sum())

    def session_of_event(self) -> np.ndarray:
        """``(N,)`` index of the session of every event."""
        return np.repeat(np.arange(self.num_sessions, dtype=np.int64), self.lengths)

    def start_times(self) -> np.ndarray:
        lengths = self.lengths
        out = np.full(self.num_sessions, np.nan)
        out[lengths > 0] = self.times[self.offsets[:-1][lengths > 0]]
        return out

    def take(self, sessions: np.ndarray) -> SessionSequences:
        """The given sessions (index array or boolean mask), in the given order."""
        sessions = np.asarray(sessions)
        if sessions.dtype == bool:
            sessions = np.flatnonzero(sessions)
        starts, lengths = self.offsets[:-1][sessions], self.lengths[sessions]
        first = np.cumsum(lengths) - lengths
        index = np.repeat(starts - first, lengths) + np.arange(int(lengths.sum()), dtype=np.int64)
        return SessionSequences.from_lengths(
            lengths, self.items[index], self.times[index],
            None if self.session_ids is None else self.session_ids[sessions],
        )


@dataclass(frozen=True)
class DatasetInfo:
    """What a graph model needs to know about its data: sizes, the train graph and popularity."""

    num_users: int
    num_items: int
    train: UserItemCSR

    @property
    def item_popularity(self) -> torch.Tensor:
        """Number of train interactions of every item."""
        return torch.bincount(self.train.indices, minlength=self.num_items)


@dataclass(frozen=True)
class SessionInfo:
    """What a session model needs to know about its data (handed to the model constructor).

    ``item_support``: ``supp(i)``, the number of training events of every item; ``batch_size``: the
    configured number of lanes (GRU4Rec normalises the loss by it); ``n_sample``/``sample_alpha``: the extra
    negatives the training loader adds to every step (``∝ supp^alpha``); ``train``: the training sessions (for
    baselines that count co-occurrences); ``train_batches``: the kind of training batches (``session_parallel``
    or ``sequences``) and ``max_len`` the longest sequence window of ``sequences`` batches (else None).
    """

    num_items: int
    item_support: torch.Tensor
    batch_size: int
    n_sample: int
    sample_alpha: float
    train: SessionSequences
    train_batches: str = "session_parallel"
    max_len: int | None = None
