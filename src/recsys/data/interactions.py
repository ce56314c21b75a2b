"""The in-memory form of implicit-feedback data: train/valid/test user–item pairs (:class:`GraphSplits`) and their
cache schema. The per-user CSR sets are :class:`recsys.info.UserItemCSR`."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import torch

from recsys.errors import DataError
from recsys.info import UserItemCSR
from recsys.io import Entry, load_npz, save_npz

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
