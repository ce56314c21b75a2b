"""The in-memory form of session data: train/valid/test splits of sessions (:class:`recsys.info.SessionSequences`,
CSR sequences) and their atomic cache.

A split holds its sessions **ordered by start time** (the time of their first event; ties keep the source
order), each session's events in time order:

* ``offsets`` ``(S + 1,)`` int64 — session ``s`` is ``items[offsets[s]:offsets[s + 1]]``;
* ``items`` ``(N,)`` int64 — dense item ids ``0..num_items-1``, mapped from the **training** data;
* ``times`` ``(N,)`` float64 — event times in seconds (unix time when the source has one);
* ``session_ids`` ``(S,)`` str — the sessions' original ids (optional).

Validation and test sessions only hold items seen in train (Hidasi et al., ICLR'16 §4).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from recsys.errors import DataError
from recsys.info import SessionSequences
from recsys.io import Entry, load_npz, save_npz

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")


@dataclass
class SessionSplits:
    """A processed session dataset: train/valid/test sessions over items ``0..num_items-1``."""

    num_items: int
    train: SessionSequences
    valid: SessionSequences
    test: SessionSequences
    item_ids: np.ndarray | None = None
    meta: dict[str, str] = field(default_factory=dict)

    def split(self, name: str) -> SessionSequences:
        if name not in SPLITS:
            raise KeyError(f"unknown split {name!r}; expected one of {SPLITS}")
        return getattr(self, name)

    def item_support(self) -> np.ndarray:
        """``supp(i)``: number of training events of every item, ``(num_items,)`` int64."""
        return np.bincount(self.train.items, minlength=self.num_items).astype(np.int64)

    def validate(self, origin: str = "dataset") -> None:
        """Check shapes, id ranges and time order; raise :class:`DataError` naming ``origin`` otherwise."""
        for name in SPLITS:
            s = self.split(name)
            if s.offsets[0] != 0 or s.offsets[-1] != len(s.items) or (np.diff(s.offsets) < 0).any():
                raise DataError(f"{origin}: {name} split has inconsistent session offsets")
            if len(s.times) != len(s.items):
                raise DataError(f"{origin}: {name} split has {len(s.items)} items but {len(s.times)} times")
            if len(s.items) and (s.items.min() < 0 or s.items.max() >= self.num_items):
                raise DataError(f"{origin}: {name} split has item ids outside [0, {self.num_items})")
            starts = s.start_times()
            if len(starts) > 1 and (np.diff(starts[~np.isnan(starts)]) < 0).any():
                raise DataError(f"{origin}: {name} sessions are not ordered by start time")
        if self.train.num_steps == 0:
            raise DataError(f"{origin}: the train split has no session with at least 2 events")

    def summary(self) -> str:
        parts = [f"{self.num_items} items"]
        for name in SPLITS:
            s = self.split(name)
            parts.append(f"{name}: {s.num_sessions} sessions / {s.num_events} events")
        return ", ".join(parts)

    # -- persistence ---------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write atomically as ``.npz`` (:func:`recsys.io.save_npz` with :data:`CACHE_SCHEMA`)."""
        arrays: dict[str, Any] = {"num_items": self.num_items, "item_ids": self.item_ids}
        for name in SPLITS:
            s = self.split(name)
            arrays |= {f"{name}_offsets": s.offsets, f"{name}_items": s.items, f"{name}_times": s.times,
                       f"{name}_session_ids": s.session_ids}
        save_npz(path, CACHE_SCHEMA, arrays, self.meta)

    @classmethod
    def load(cls, path: str | os.PathLike) -> SessionSplits:
        """Read a cache file written by :meth:`save`; anything else raises :class:`DataError` naming the file
        (see :func:`recsys.io.load_npz`)."""
        a, meta = load_npz(path, CACHE_SCHEMA, "session cache", _check_sessions)
        parts = {name: SessionSequences(a[f"{name}_offsets"], a[f"{name}_items"], a[f"{name}_times"],
                                        a.get(f"{name}_session_ids"))
                 for name in SPLITS}
        splits = cls(num_items=int(a["num_items"]), **parts, item_ids=a.get("item_ids"), meta=meta)
        splits.validate(str(path))
        return splits


#: The arrays of a session cache file (besides its metadata).
CACHE_SCHEMA = {
    "num_items": Entry(np.int64, ndim=0),
    **{f"{name}_{key}": entry for name in SPLITS for key, entry in (
        ("offsets", Entry(np.int64)), ("items", Entry(np.int64)), ("times", Entry(np.float64)),
        ("session_ids", Entry(str, optional=True)))},
    "item_ids": Entry(str, optional=True),
}


def _check_sessions(a: dict[str, np.ndarray]) -> str | None:
    for name in SPLITS:
        offsets, ids = a[f"{name}_offsets"], a.get(f"{name}_session_ids")
        if len(offsets) == 0 or (ids is not None and len(ids) != len(offsets) - 1):
            return f"{name} session ids/offsets disagree"
    if "item_ids" in a and len(a["item_ids"]) != int(a["num_items"]):
        return f"{len(a['item_ids'])} item ids for {int(a['num_items'])} items"
    return None
