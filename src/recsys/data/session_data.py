"""The in-memory form of session data: sessions as CSR sequences, train/valid/test splits, atomic cache.

A split holds its sessions **ordered by start time** (the time of their first event; ties keep the source
order), each session's events in time order:

* ``offsets`` ``(S + 1,)`` int64 — session ``s`` is ``items[offsets[s]:offsets[s + 1]]``;
* ``items`` ``(N,)`` int64 — dense item ids ``0..num_items-1``, mapped from the **training** data;
* ``times`` ``(N,)`` float64 — event times in seconds (unix time when the source has one);
* ``session_ids`` ``(S,)`` str — the sessions' original ids (optional).

Validation and test sessions only hold items seen in train (algorithms.md §3.5/§3.6).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from recsys.data.interactions import atomic_write
from recsys.errors import DataError

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")


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

    def sequences(self) -> list[list[int]]:
        """Python lists of item ids per session (for tests and small inspections only)."""
        return [self.items[a:b].tolist() for a, b in zip(self.offsets[:-1], self.offsets[1:], strict=True)]


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
        """Write atomically as ``.npz`` (temporary file in the same folder, then ``os.replace``)."""
        arrays: dict[str, Any] = {"num_items": np.int64(self.num_items)}
        for name in SPLITS:
            s = self.split(name)
            arrays[f"{name}_offsets"] = s.offsets.astype(np.int64)
            arrays[f"{name}_items"] = s.items.astype(np.int64)
            arrays[f"{name}_times"] = s.times.astype(np.float64)
            if s.session_ids is not None:
                arrays[f"{name}_session_ids"] = np.asarray(s.session_ids).astype(str)
        if self.item_ids is not None:
            arrays["item_ids"] = np.asarray(self.item_ids).astype(str)
        arrays["meta_keys"] = np.array(list(self.meta.keys()), dtype=str)
        arrays["meta_values"] = np.array(list(self.meta.values()), dtype=str)
        atomic_write(path, lambda f: np.savez(f, **arrays))

    @classmethod
    def load(cls, path: str | os.PathLike) -> SessionSplits:
        try:
            with np.load(path, allow_pickle=False) as z:
                parts = {
                    name: SessionSequences(
                        z[f"{name}_offsets"], z[f"{name}_items"], z[f"{name}_times"],
                        z[f"{name}_session_ids"] if f"{name}_session_ids" in z.files else None,
                    )
                    for name in SPLITS
                }
                splits = cls(
                    num_items=int(z["num_items"]),
                    **parts,
                    item_ids=z["item_ids"] if "item_ids" in z.files else None,
                    meta=dict(zip(z["meta_keys"].tolist(), z["meta_values"].tolist(), strict=True)),
                )
        except Exception as err:  # noqa: BLE001 - zipfile/zlib/numpy raise many types for a damaged file
            raise DataError(f"{path}: not a readable session cache ({type(err).__name__}: {err}); delete it to "
                            "rebuild") from err
        for name in SPLITS:
            s = splits.split(name)
            for key, a, dtype in (("offsets", s.offsets, np.int64), ("items", s.items, np.int64),
                                  ("times", s.times, np.float64)):
                if a.dtype != dtype or a.ndim != 1:
                    raise DataError(f"{path}: not a readable session cache ({name}_{key} is {a.dtype}, {a.ndim}-d)")
            if len(s.offsets) == 0 or (s.session_ids is not None and len(s.session_ids) != s.num_sessions):
                raise DataError(f"{path}: not a readable session cache ({name} session ids/offsets disagree)")
        if splits.item_ids is not None and len(splits.item_ids) != splits.num_items:
            raise DataError(f"{path}: not a readable session cache ({len(splits.item_ids)} item ids for "
                            f"{splits.num_items} items)")
        splits.validate(str(path))
        return splits
