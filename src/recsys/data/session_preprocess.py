"""GRU4Rec-style preprocessing of session events (Hidasi et al., ICLR'16 §4), all in array operations.

:func:`preprocess_sessions` runs, in order (the official ``examples/rsc15/preprocess.py`` steps):

1. events sorted by (session, time), the source order kept for equal times;
2. optional removal of consecutive repeats of an item inside a session (``dedup_consecutive``; RSC15 does
   *not* do it, the newer "Yoochoose" preprocessing does);
3. drop sessions shorter than ``min_session_length`` (2: length-1 sessions), drop items with fewer than
   ``min_item_support`` (5) events, drop sessions shorter than ``min_session_length`` again (no iteration
   to a fixed point, as in the official script);
4. time split: sessions whose **last** event is within the final ``test_days`` days (86,400 s each) of the
   data → test, the rest → train; test events with items unseen in train are dropped, then test sessions
   shorter than ``min_session_length``;
5. the same inside train with ``valid_days`` (0 = no validation split): the last days of train → valid;
   the model is then trained on the rest, so valid **and** test events are restricted to its items;
6. item ids ``0..n-1`` mapped from the training split; sessions of every split ordered by start time.

:func:`assemble_splits` does only steps 1 and 6 (+ the unseen-item rule) for data that comes already split
(the GRU4Rec "prepared" files).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np

from recsys.data.session_data import SessionSplits
from recsys.errors import ConfigError, DataError
from recsys.info import SessionSequences

log = logging.getLogger(__name__)

DAY = 86_400.0


@dataclass
class SessionEvents:
    """Raw click events. ``sessions``/``items`` are integer codes into ``session_ids``/``item_ids`` (the ids
    as they appear in the source); ``times`` in seconds."""

    sessions: np.ndarray
    items: np.ndarray
    times: np.ndarray
    session_ids: np.ndarray
    item_ids: np.ndarray
    origin: str = "dataset"

    def __len__(self) -> int:
        return len(self.items)

    @classmethod
    def from_ids(
        cls, sessions: np.ndarray, items: np.ndarray, times: np.ndarray, origin: str = "dataset"
    ) -> SessionEvents:
        """Factorise original session and item ids (any dtype) into codes."""
        session_ids, s = np.unique(np.asarray(sessions), return_inverse=True)
        item_ids, i = np.unique(np.asarray(items), return_inverse=True)
        times = np.asarray(times, dtype=np.float64)
        if len(times) != len(i) or len(s) != len(i):
            raise DataError(f"{origin}: {len(s)} sessions, {len(i)} items and {len(times)} times differ in length")
        if len(times) and not np.isfinite(times).all():
            k = int(np.argmin(np.isfinite(times)))
            raise DataError(f"{origin}: event {k} has a non-finite time {times[k]!r}")
        return cls(s.astype(np.int64).reshape(-1), i.astype(np.int64).reshape(-1), times, session_ids, item_ids, origin)

    def take(self, index: np.ndarray) -> SessionEvents:
        return SessionEvents(self.sessions[index], self.items[index], self.times[index], self.session_ids,
                             self.item_ids, self.origin)

    def sorted(self) -> SessionEvents:
        """Events ordered by (session, time); equal times keep their order."""
        order = np.lexsort((np.arange(len(self)), self.times, self.sessions))
        return self.take(order)

    def session_lengths(self) -> np.ndarray:
        """Length of the session of every event, ``(N,)``."""
        return np.bincount(self.sessions, minlength=len(self.session_ids))[self.sessions]


@dataclass
class SessionPreprocessing:
    """The option set of :func:`preprocess_sessions` (``data.source.preprocessing.*``)."""

    min_session_length: int = 2
    min_item_support: int = 5
    test_days: float = 1.0
    valid_days: float = 1.0
    dedup_consecutive: bool = False

    def __post_init__(self) -> None:
        if self.min_session_length < 2:
            raise ConfigError(f"preprocessing.min_session_length must be >= 2, got {self.min_session_length}")
        if self.min_item_support < 1:
            raise ConfigError(f"preprocessing.min_item_support must be >= 1, got {self.min_item_support}")
        if not self.test_days > 0:
            raise ConfigError(f"preprocessing.test_days must be > 0, got {self.test_days}")
        if self.valid_days < 0:
            raise ConfigError(f"preprocessing.valid_days must be >= 0, got {self.valid_days}")

    def as_dict(self) -> dict:
        return asdict(self)


def drop_consecutive_repeats(ev: SessionEvents) -> SessionEvents:
    """Keep an event unless it repeats the previous event's item in the same session (``ev`` sorted)."""
    keep = np.ones(len(ev), dtype=bool)
    keep[1:] = (ev.sessions[1:] != ev.sessions[:-1]) | (ev.items[1:] != ev.items[:-1])
    return ev.take(keep)


def drop_short_sessions(ev: SessionEvents, min_length: int) -> SessionEvents:
    return ev.take(ev.session_lengths() >= min_length)


def filter_events(ev: SessionEvents, min_session_length: int = 2, min_item_support: int = 5) -> SessionEvents:
    """Step 3: short sessions out, rare items out, short sessions out again."""
    ev = drop_short_sessions(ev, min_session_length)
    support = np.bincount(ev.items, minlength=len(ev.item_ids))
    ev = ev.take(support[ev.items] >= min_item_support)
    return drop_short_sessions(ev, min_session_length)


def session_end_times(ev: SessionEvents) -> np.ndarray:
    """Time of the last event of every event's session, ``(N,)``."""
    end = np.full(len(ev.session_ids), -np.inf)
    np.maximum.at(end, ev.sessions, ev.times)
    return end[ev.sessions]


def time_split(ev: SessionEvents, seconds: float) -> tuple[SessionEvents, SessionEvents]:
    """``(before, last)``: sessions whose last event is at or after ``t_max - seconds`` go to ``last``."""
    if len(ev) == 0:
        return ev, ev
    end = session_end_times(ev)
    last = end >= ev.times.max() - seconds
    return ev.take(~last), ev.take(last)


def restrict_items(ev: SessionEvents, known: np.ndarray, min_session_length: int = 2) -> SessionEvents:
    """Drop events whose item code is not ``known`` (boolean over codes), then sessions that got too short."""
    ev = ev.take(known[ev.items])
    return drop_short_sessions(ev, min_session_length)


def to_sequences(ev: SessionEvents, item_map: np.ndarray) -> SessionSequences:
    """Sessions of ``ev`` (sorted by session, time) as CSR over dense ids ``item_map[code]``, ordered by
    start time (equal start times: by session id)."""
    if len(ev) == 0:
        return SessionSequences.empty()
    new = np.ones(len(ev), dtype=bool)
    new[1:] = ev.sessions[1:] != ev.sessions[:-1]
    starts = np.flatnonzero(new)
    lengths = np.diff(np.append(starts, len(ev)))
    dense = item_map[ev.items]
    if (dense < 0).any():
        raise DataError(f"{ev.origin}: an event's item is not in the item map")
    seqs = SessionSequences.from_lengths(lengths, dense, ev.times, ev.session_ids[ev.sessions[starts]].astype(str))
    order = np.argsort(ev.times[starts], kind="stable")
    return seqs.take(order)


def _item_map(train: SessionEvents) -> tuple[np.ndarray, np.ndarray]:
    """Dense ids of the train items (in order of original id): ``(code -> id or -1, original ids)``."""
    used = np.zeros(len(train.item_ids), dtype=bool)
    used[train.items] = True
    item_map = np.full(len(train.item_ids), -1, dtype=np.int64)
    item_map[used] = np.arange(int(used.sum()))
    return item_map, train.item_ids[used]


def _assemble(
    train: SessionEvents, valid: SessionEvents | None, test: SessionEvents, min_session_length: int,
    meta: dict[str, str],
) -> SessionSplits:
    item_map, item_ids = _item_map(train)
    known = item_map >= 0
    parts = {"train": to_sequences(train, item_map)}
    for name, ev in (("valid", valid), ("test", test)):
        if ev is None or len(ev) == 0:
            parts[name] = SessionSequences.empty()
            continue
        kept = restrict_items(ev, known, min_session_length)
        if len(kept) < len(ev):
            log.info("%s: %d %s events dropped (item unseen in train, or session left too short)",
                     ev.origin, len(ev) - len(kept), name)
        parts[name] = to_sequences(kept, item_map)
    return SessionSplits(num_items=len(item_ids), item_ids=item_ids.astype(str), meta=meta, **parts)


def preprocess_sessions(ev: SessionEvents, options: SessionPreprocessing | None = None) -> SessionSplits:
    """Raw events → :class:`SessionSplits` with the GRU4Rec preprocessing (module docstring)."""
    opts = options or SessionPreprocessing()
    ev = ev.sorted()
    if opts.dedup_consecutive:
        ev = drop_consecutive_repeats(ev)
    ev = filter_events(ev, opts.min_session_length, opts.min_item_support)
    if len(ev) == 0:
        raise DataError(
            f"{ev.origin}: no event is left after dropping sessions shorter than {opts.min_session_length} and "
            f"items with fewer than {opts.min_item_support} events (lower data.source.preprocessing.min_item_support)"
        )
    train, test = time_split(ev, opts.test_days * DAY)
    valid = None
    if opts.valid_days > 0:
        train, valid = time_split(train, opts.valid_days * DAY)
    if len(train) == 0:
        raise DataError(
            f"{ev.origin}: the time split leaves no training session (the data spans "
            f"{(ev.times.max() - ev.times.min()) / DAY:.2f} days; lower data.source.preprocessing.test_days/valid_days)"
        )
    meta = {"preprocessing": str(opts.as_dict())}
    return _assemble(train, valid, test, opts.min_session_length, meta)


def assemble_splits(
    train: SessionEvents, test: SessionEvents, valid: SessionEvents | None = None, min_session_length: int = 2
) -> SessionSplits:
    """Already split events → :class:`SessionSplits` (ids from train, unseen valid/test items dropped).

    The three must share code spaces: build them with :func:`split_codes`.
    """
    return _assemble(train.sorted(), None if valid is None else valid.sorted(), test.sorted(), min_session_length,
                     {"preprocessing": "given split"})


def split_codes(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]], origins: list[str]) -> list[SessionEvents]:
    """Several ``(sessions, items, times)`` tables as :class:`SessionEvents` over one shared item code space
    (each table keeps its own sessions)."""
    item_ids, item_codes = np.unique(np.concatenate([np.asarray(p[1]) for p in parts]), return_inverse=True)
    out, lo = [], 0
    for (sessions, items, times), origin in zip(parts, origins, strict=True):
        ev = SessionEvents.from_ids(sessions, np.zeros(len(items), np.int64), times, origin)
        ev.items = item_codes[lo : lo + len(items)].astype(np.int64).reshape(-1)
        ev.item_ids = item_ids
        out.append(ev)
        lo += len(items)
    return out


def sessions_from_user_events(
    users: np.ndarray, times: np.ndarray, gap_seconds: float
) -> np.ndarray:
    """Session codes for timestamped user interactions: a user's events (in time order) start a new session
    after an inactivity gap longer than ``gap_seconds``. Returns ``(N,)`` int64 codes in input order."""
    if not gap_seconds > 0:
        raise ConfigError(f"data.source.session_gap must be > 0 seconds, got {gap_seconds}")
    users = np.asarray(users)
    times = np.asarray(times, dtype=np.float64)
    order = np.lexsort((np.arange(len(times)), times, users))
    u, t = users[order], times[order]
    new = np.ones(len(t), dtype=bool)
    new[1:] = (u[1:] != u[:-1]) | (t[1:] - t[:-1] > gap_seconds)
    codes = np.empty(len(t), dtype=np.int64)
    codes[order] = np.cumsum(new) - 1
    return codes
