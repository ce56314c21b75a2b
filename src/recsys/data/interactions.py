"""The in-memory form of implicit-feedback data: user–item pairs, per-user CSR sets and splits."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import torch

from recsys.errors import DataError
from recsys.io import Entry, load_npz, save_npz


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


SPLITS = ("train", "valid", "test")

#: The arrays of a graph cache file (besides its metadata).
CACHE_SCHEMA = {
    "num_users": Entry(np.int64, ndim=0),
    "num_items": Entry(np.int64, ndim=0),
    **{f"{s}_{k}": Entry(np.int64) for s in SPLITS for k in ("users", "items")},
    "user_ids": Entry(str, optional=True),
    "item_ids": Entry(str, optional=True),
}


def _check_original_ids(a: dict[str, np.ndarray]) -> str | None:
    for ids, n in (("user_ids", "num_users"), ("item_ids", "num_items")):
        if ids in a and len(a[ids]) != int(a[n]):
            return f"{len(a[ids])} original ids for {int(a[n])} dense ids"
    return None


@dataclass
class GraphSplits:
    """A processed implicit-feedback dataset: dense ids and train/valid/test (user, item) pairs.

    ``user_ids``/``item_ids`` keep the original ids (as strings) so recommendations can be mapped back.
    """

    num_users: int
    num_items: int
    train: tuple[np.ndarray, np.ndarray]
    valid: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    user_ids: np.ndarray | None = None
    item_ids: np.ndarray | None = None
    meta: dict[str, str] = field(default_factory=dict)

    def validate(self, origin: str = "dataset") -> None:
        """Check ids are in range; raise :class:`DataError` naming ``origin`` otherwise."""
        for name, (u, i) in (("train", self.train), ("valid", self.valid), ("test", self.test)):
            if len(u) != len(i):
                raise DataError(f"{origin}: {name} split has {len(u)} users but {len(i)} items")
            if len(u) and (u.min() < 0 or u.max() >= self.num_users):
                raise DataError(f"{origin}: {name} split has user ids outside [0, {self.num_users})")
            if len(i) and (i.min() < 0 or i.max() >= self.num_items):
                raise DataError(f"{origin}: {name} split has item ids outside [0, {self.num_items})")
        if len(self.train[0]) == 0:
            raise DataError(f"{origin}: the train split is empty")

    def csr(self, split: str) -> UserItemCSR:
        u, i = getattr(self, split)
        return UserItemCSR.from_pairs(torch.from_numpy(u), torch.from_numpy(i), self.num_users, self.num_items)

    def save(self, path: str | os.PathLike) -> None:
        """Write atomically as ``.npz`` (:func:`recsys.io.save_npz` with :data:`CACHE_SCHEMA`)."""
        arrays = {"num_users": self.num_users, "num_items": self.num_items, "user_ids": self.user_ids,
                  "item_ids": self.item_ids}
        for s in SPLITS:
            arrays[f"{s}_users"], arrays[f"{s}_items"] = getattr(self, s)
        save_npz(path, CACHE_SCHEMA, arrays, self.meta)

    @classmethod
    def load(cls, path: str | os.PathLike) -> GraphSplits:
        """Read a cache file written by :meth:`save`. Anything else — truncated, bit-flipped (the zip CRC),
        missing arrays, wrong dtypes, ids out of range, object arrays (never unpickled) — raises
        :class:`DataError` naming the file."""
        a, meta = load_npz(path, CACHE_SCHEMA, "dataset cache", _check_original_ids)
        splits = cls(
            num_users=int(a["num_users"]),
            num_items=int(a["num_items"]),
            **{s: (a[f"{s}_users"], a[f"{s}_items"]) for s in SPLITS},
            user_ids=a.get("user_ids"),
            item_ids=a.get("item_ids"),
            meta=meta,
        )
        splits.validate(str(path))
        return splits


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
