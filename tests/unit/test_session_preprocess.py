"""GRU4Rec preprocessing rules (algorithms.md §3.6) on hand-made fixtures, plus the session cache."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.data.cache import cache_path, load_or_build
from recsys.data.session_data import SessionSplits
from recsys.data.session_preprocess import (
    DAY,
    SessionEvents,
    SessionPreprocessing,
    assemble_splits,
    filter_events,
    preprocess_sessions,
    sessions_from_user_events,
    split_codes,
)
from recsys.errors import ConfigError, DataError
from recsys.info import SessionSequences

T0 = 1_400_000_000.0


def events(rows: list[tuple[object, object, float]]) -> SessionEvents:
    s, i, t = zip(*rows, strict=True)
    return SessionEvents.from_ids(np.array(s), np.array(i), np.array(t, dtype=np.float64), origin="fixture")


def originals(splits: SessionSplits, split: str) -> list[list[str]]:
    """Sessions of a split as lists of original item ids."""
    s = splits.split(split)
    return [[str(splits.item_ids[i]) for i in seq] for seq in np.split(s.items, s.offsets)[1:-1]]


def test_filters_in_the_official_order_without_iterating():
    # item 'r' has 5 events but 2 of them sit in a length-1 session: after step 1 it has 3 → dropped;
    # session B then shrinks to length 1 and is dropped by step 3; session C keeps its two frequent items
    rows = []
    for k in range(5):
        rows += [(f"S{k}", "a", T0 + 10 * k), (f"S{k}", "b", T0 + 10 * k + 1)]
    rows += [("L1", "r", T0), ("L2", "r", T0 + 1)]  # length-1 sessions
    rows += [("B", "r", T0 + 2), ("B", "a", T0 + 3)]
    rows += [("C", "a", T0 + 4), ("C", "r", T0 + 5), ("C", "b", T0 + 6)]
    ev = filter_events(events(rows).sorted(), min_session_length=2, min_item_support=5)
    kept = {(str(ev.session_ids[s]), str(ev.item_ids[i])) for s, i in zip(ev.sessions, ev.items, strict=True)}
    assert ("B", "a") not in kept  # B became a length-1 session
    assert not any(item == "r" for _, item in kept)
    assert ("C", "a") in kept and ("C", "b") in kept
    # the rule is applied once, not to a fixed point: an item that falls under 5 by step 3 stays
    rows2 = [(f"S{k}", "a", T0 + k) for k in range(4)] + [(f"S{k}", "z", T0 + k + 0.5) for k in range(4)]
    rows2 += [("S4", "z", T0 + 20), ("S4", "z", T0 + 21)]
    rows2 += [("X", "a", T0 + 9), ("X", "q", T0 + 10)]  # 'a' has 5 events, 'q' 1 → X shrinks to length 1
    ev2 = filter_events(events(rows2).sorted(), 2, 5)
    assert {str(ev2.item_ids[i]) for i in ev2.items} == {"a", "z"}
    assert int((ev2.item_ids[ev2.items] == "a").sum()) == 4  # 'a' now has 4 < 5 events, but is not re-filtered


def make_clicks(num_sessions: int, days: float, items: int = 6, seed: int = 0) -> SessionEvents:
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(num_sessions):
        start = T0 + (s + 0.5) / num_sessions * days * DAY
        for k in range(int(rng.integers(2, 5))):
            rows.append((s, int(rng.integers(items)), start + 60.0 * k))
    return events(rows)


def test_time_split_by_last_event_valid_split_and_ids_from_train():
    ev = make_clicks(400, days=10.0)
    opts = SessionPreprocessing(min_item_support=1, test_days=1.0, valid_days=1.0)
    splits = preprocess_sessions(ev, opts)
    t_max = ev.times.max()
    ends = {name: [] for name in ("train", "valid", "test")}
    for name in ends:
        seqs = splits.split(name)
        ends[name] = seqs.times[seqs.offsets[1:] - 1].tolist()
    assert min(ends["test"]) >= t_max - DAY
    assert max(ends["train"] + ends["valid"]) < t_max - DAY
    train_max = max(ends["train"] + ends["valid"])
    assert min(ends["valid"]) >= train_max - DAY > max(ends["train"])
    # every session lands in exactly one split (none were dropped: every item is frequent here)
    assert sum(splits.split(n).num_sessions for n in ends) == 400
    # ids: 0..n-1 over the train items; valid/test only hold train items
    assert set(splits.train.items.tolist()) == set(range(splits.num_items))
    for name in ("valid", "test"):
        assert set(splits.split(name).items.tolist()) <= set(range(splits.num_items))
        starts = splits.split(name).start_times()
        assert (np.diff(starts) >= 0).all()
    splits.validate("fixture")


def test_unseen_test_items_are_dropped_then_short_test_sessions():
    rows = [(s, "a", T0 + s) for s in range(5)] + [(s, "b", T0 + s + 0.5) for s in range(5)]
    last = T0 + 10 * DAY
    rows += [("t1", "a", last - 100), ("t1", "new", last - 50), ("t1", "b", last)]  # keeps a, b
    rows += [("t2", "new", last - 10), ("t2", "a", last - 5)]  # left with one event → dropped
    splits = preprocess_sessions(events(rows), SessionPreprocessing(min_item_support=1, valid_days=0))
    assert originals(splits, "test") == [["a", "b"]]
    assert "new" not in set(splits.item_ids.tolist())
    assert splits.valid.num_sessions == 0


def test_dedup_consecutive_is_optional():
    rows = [(0, "a", T0), (0, "a", T0 + 1), (0, "b", T0 + 2), (0, "a", T0 + 3)]
    rows += [(1, "a", T0 + 5 * DAY), (1, "b", T0 + 5 * DAY + 1)]
    plain = preprocess_sessions(events(rows), SessionPreprocessing(min_item_support=1, valid_days=0))
    dedup = preprocess_sessions(events(rows), SessionPreprocessing(min_item_support=1, valid_days=0, dedup_consecutive=True))
    assert originals(plain, "train") == [["a", "a", "b", "a"]]
    assert originals(dedup, "train") == [["a", "b", "a"]]


def test_events_are_time_ordered_inside_sessions_and_sessions_by_start_time():
    rows = [("late", "x", T0 + 100), ("late", "y", T0 + 50), ("early", "y", T0 + 10), ("early", "x", T0 + 20)]
    rows += [("t", "x", T0 + 3 * DAY), ("t", "y", T0 + 3 * DAY + 1)]
    splits = preprocess_sessions(events(rows), SessionPreprocessing(min_item_support=1, valid_days=0))
    assert originals(splits, "train") == [["y", "x"], ["y", "x"]]
    assert splits.train.session_ids.tolist() == ["early", "late"]


def test_preprocessing_errors_name_the_fix():
    with pytest.raises(ConfigError, match="min_session_length"):
        SessionPreprocessing(min_session_length=1)
    with pytest.raises(DataError, match="min_item_support"):
        preprocess_sessions(make_clicks(20, 3.0), SessionPreprocessing(min_item_support=10_000))
    with pytest.raises(DataError, match="test_days"):
        preprocess_sessions(make_clicks(20, 0.5), SessionPreprocessing(min_item_support=1))


def test_assemble_splits_maps_ids_from_train_and_drops_unseen():
    train, test = split_codes(
        [(np.array([1, 1, 2, 2]), np.array([10, 11, 11, 12]), np.array([1.0, 2, 3, 4])),
         (np.array([1, 1, 1, 7, 7]), np.array([11, 99, 12, 99, 10]), np.array([9.0, 10, 11, 12, 13]))],
        ["train", "test"],
    )
    splits = assemble_splits(train, test)
    assert splits.num_items == 3
    assert originals(splits, "train") == [["10", "11"], ["11", "12"]]
    assert originals(splits, "test") == [["11", "12"]]  # 99 unseen; session 7 is left with one event


def test_sessions_from_user_events_split_on_inactivity_gap():
    users = np.array(["u", "u", "v", "u", "u", "v"])
    times = np.array([0.0, 100.0, 5.0, 5000.0, 5100.0, 8000.0])
    codes = sessions_from_user_events(users, times, gap_seconds=3600)
    assert codes[0] == codes[1] != codes[3] == codes[4]
    assert codes[2] != codes[5]
    assert len(set(codes.tolist())) == 4
    with pytest.raises(ConfigError):
        sessions_from_user_events(users, times, 0)


def test_session_splits_round_trip_and_atomic_cache(tmp_path):
    ev = make_clicks(300, days=8.0)
    splits = preprocess_sessions(ev, SessionPreprocessing(min_item_support=1))
    path = tmp_path / "s.npz"
    splits.save(path)
    back = SessionSplits.load(path)
    for name in ("train", "valid", "test"):
        a, b = splits.split(name), back.split(name)
        np.testing.assert_array_equal(a.offsets, b.offsets)
        np.testing.assert_array_equal(a.items, b.items)
        np.testing.assert_array_equal(a.times, b.times)
        np.testing.assert_array_equal(a.session_ids, b.session_ids)
    assert back.num_items == splits.num_items and list(back.item_ids) == list(splits.item_ids)
    assert not list(tmp_path.glob("*.tmp"))

    class Source:
        name = "fixture"
        calls = 0

        def fingerprint(self):
            return {"n": 300}

        def build(self):
            Source.calls += 1
            return splits

    first = load_or_build(Source(), tmp_path / "cache", SessionSplits.load)
    second = load_or_build(Source(), tmp_path / "cache", SessionSplits.load)
    assert Source.calls == 1 and cache_path(Source(), tmp_path / "cache").is_file()
    np.testing.assert_array_equal(first.train.items, second.train.items)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="bad.npz"):
        SessionSplits.load(tmp_path / "bad.npz")


def test_take_and_lengths():
    seqs = SessionSequences.from_lengths(np.array([2, 3, 1]), np.array([1, 2, 3, 4, 5, 6]))
    taken = seqs.take(np.array([2, 0]))
    assert (taken.offsets.tolist(), taken.items.tolist()) == ([0, 1, 3], [6, 1, 2])  # sessions [6], [1, 2]
    assert seqs.num_steps == 3
    assert seqs.session_of_event().tolist() == [0, 0, 1, 1, 1, 2]
