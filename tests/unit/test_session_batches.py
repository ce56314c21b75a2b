"""Session-parallel mini-batches against a direct simulation of GRU4Rec's lane loop (algorithms.md §3.1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys.data.session_batches import SessionParallelBatches, plan_session_parallel, schedule_sessions
from recsys.data.session_data import SessionSequences


def random_sessions(rng: np.random.Generator, num_sessions: int, max_len: int = 9, min_len: int = 1) -> SessionSequences:
    lengths = rng.integers(min_len, max_len + 1, size=num_sessions)
    items = rng.integers(0, 50, size=int(lengths.sum()))
    return SessionSequences.from_lengths(lengths, items, np.arange(len(items), dtype=np.float64))


def reference_steps(sessions: SessionSequences, num_lanes: int) -> list[list[tuple[int, int, int, bool]]]:
    """The official loop, one event at a time: per step the (lane, input, target, reset) of every active lane."""
    seqs = [s for s in sessions.sequences()]
    queue = [k for k, s in enumerate(seqs) if len(s) >= 2]
    lane_sess = [None] * num_lanes
    lane_pos = [0] * num_lanes
    fresh = [False] * num_lanes
    for lane in range(num_lanes):
        if queue:
            lane_sess[lane] = queue.pop(0)
            fresh[lane] = True
    steps = []
    while any(s is not None for s in lane_sess):
        rows = []
        for lane in range(num_lanes):
            s = lane_sess[lane]
            if s is None:
                continue
            p = lane_pos[lane]
            rows.append((lane, seqs[s][p], seqs[s][p + 1], fresh[lane]))
            fresh[lane] = False
        steps.append(rows)
        for lane in range(num_lanes):  # advance; finished lanes take the next session in lane order
            s = lane_sess[lane]
            if s is None:
                continue
            lane_pos[lane] += 1
            if lane_pos[lane] + 1 >= len(seqs[s]):
                lane_sess[lane] = queue.pop(0) if queue else None
                lane_pos[lane] = 0
                fresh[lane] = lane_sess[lane] is not None
    return steps


def as_rows(batch: dict[str, torch.Tensor]) -> list[tuple[int, int, int, bool]]:
    return list(zip(batch["lanes"].tolist(), batch["inputs"].tolist(), batch["targets"].tolist(),
                    batch["reset"].tolist(), strict=True))


@pytest.mark.parametrize("num_lanes", [1, 3, 8, 50])
@pytest.mark.parametrize("seed", [0, 1])
def test_plan_equals_the_official_lane_loop(num_lanes, seed):
    sessions = random_sessions(np.random.default_rng(seed), 37)
    expected = reference_steps(sessions, num_lanes)
    got = [as_rows(b) for b in SessionParallelBatches(sessions, num_lanes)]
    assert len(got) == len(expected)
    assert got == expected


def test_every_session_contributes_len_minus_one_steps_and_resets_exactly_at_boundaries():
    sessions = random_sessions(np.random.default_rng(5), 200, max_len=12)
    batches = list(SessionParallelBatches(sessions, 16))
    inputs = torch.cat([b["inputs"] for b in batches])
    assert inputs.numel() == sessions.num_steps == int(np.maximum(sessions.lengths - 1, 0).sum())
    # follow every lane through the steps: it must replay whole sessions, in session order
    per_lane: dict[int, list[list[int]]] = {}
    for b in batches:
        for lane, x, y, reset in as_rows(b):
            runs = per_lane.setdefault(lane, [])
            if reset:
                runs.append([x, y])
            else:
                assert runs and runs[-1][-1] == x  # continues the running session: input = previous target
                runs[-1].append(y)
    replayed = sorted((run for runs in per_lane.values() for run in runs), key=len)
    expected = sorted((s for s in sessions.sequences() if len(s) >= 2), key=len)
    assert sorted(map(tuple, replayed)) == sorted(map(tuple, expected))  # nothing lost, nothing duplicated
    assert int(torch.cat([b["reset"] for b in batches]).sum()) == sum(1 for s in expected)


def test_lanes_refill_in_start_time_order_and_batch_shrinks_at_the_end():
    lengths = np.array([2, 5, 2, 3, 2, 4, 2, 2])
    sessions = SessionSequences.from_lengths(lengths, np.arange(lengths.sum()))
    sched = schedule_sessions(lengths, 3)
    # lanes 0,1,2 take sessions 0,1,2 at step 0; lane 0 and 2 free at step 1 → sessions 3 (lane 0), 4 (lane 2)
    assert sched.lane[:5].tolist() == [0, 1, 2, 0, 2]
    assert sched.start[:5].tolist() == [0, 0, 0, 1, 1]
    starts = [(int(sched.start[s]), int(sched.lane[s])) for s in range(len(lengths))]
    assert starts == sorted(starts)  # sessions start in their (start-time) order
    sizes = [b["inputs"].numel() for b in SessionParallelBatches(sessions, 3)]
    assert sizes[0] == 3 and sizes[-1] < 3 and sorted(sizes[-3:], reverse=True) == sizes[-3:]
    assert sum(sizes) == int((lengths - 1).sum())


def test_sessions_of_length_one_contribute_nothing():
    sessions = SessionSequences.from_lengths(np.array([1, 3, 1, 2]), np.array([9, 1, 2, 3, 8, 4, 5]))
    rows = [r for b in SessionParallelBatches(sessions, 2) for r in as_rows(b)]
    assert rows == [(0, 1, 2, True), (1, 4, 5, True), (0, 2, 3, False)]


def test_ddp_partition_is_disjoint_complete_and_equal_length():
    sessions = random_sessions(np.random.default_rng(3), 101, max_len=15, min_len=2)
    world = 3
    datasets = [SessionParallelBatches(sessions, 4, rank=r, world_size=world, pad_to_longest_rank=True) for r in range(world)]
    lengths = {len(d) for d in datasets}
    assert len(lengths) == 1  # every rank takes the same number of optimiser steps
    n_events = 0
    for r, d in enumerate(datasets):
        batches = list(d)
        assert len(batches) == len(d)
        own = sessions.take(np.arange(r, sessions.num_sessions, world))
        assert sum(b["inputs"].numel() for b in batches) == own.num_steps  # padding steps are empty
        n_events += own.num_steps
    assert n_events == sessions.num_steps


def test_plan_is_vectorised_over_a_large_split():
    sessions = random_sessions(np.random.default_rng(0), 50_000, max_len=20, min_len=2)
    plan = plan_session_parallel(sessions, 64)
    assert plan.inputs.numel() == sessions.num_steps
    assert int(plan.ptr[-1]) == sessions.num_steps
    assert (plan.ptr[1:] - plan.ptr[:-1]).max() <= 64


def test_a_split_with_fewer_sessions_than_processes_is_a_clear_error(tmp_path, monkeypatch):
    """Under DDP a rank without sessions would leave the others waiting in DDP's first-step sync."""
    from recsys.data import session_datamodule
    from recsys.data.session_datamodule import SessionDataModule
    from recsys.data.sources.session_synthetic import SyntheticSessionSource
    from recsys.errors import DataError

    dm = SessionDataModule(SyntheticSessionSource(num_items=50, num_sessions=300, num_days=5), cache_dir=str(tmp_path))
    dm.prepare_data()
    dm.setup()
    assert len(dm.val_dataloader()) > 0  # one process: fine
    too_many = dm.splits.valid.num_sessions + 1
    monkeypatch.setattr(session_datamodule, "distributed_rank_and_world", lambda: (0, too_many))
    with pytest.raises(DataError, match=rf"validation split has {too_many - 1} session\(s\) but the run has {too_many} processes"):
        dm.val_dataloader()


def official_iterator_steps(sessions: SessionSequences, batch_size: int, n_sample: int) -> list[list[tuple[int, int]]]:
    """GRU4Rec's ``SessionDataIterator.__call__`` (PyTorch code) transliterated, with training's reset hook
    (``_adjust_hidden``: stop when ``n_sample == 0`` and fewer than 2 lanes stay valid): per step the
    (input, target) of every lane. Sessions of length < 2 are dropped first, as the official data prep."""
    seqs = [list(s) for s in sessions.sequences() if len(s) >= 2]
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in seqs])])
    data = np.concatenate(seqs)
    n = len(seqs)
    iters = np.arange(min(batch_size, n))
    maxiter = iters.max()
    start, end = offsets[iters].copy(), offsets[iters + 1].copy()
    steps = []
    while True:
        minlen = (end - start).min()
        out_idx = data[start]
        for i in range(minlen - 1):
            in_idx, out_idx = out_idx, data[start + i + 1]
            steps.append(list(zip(in_idx.tolist(), out_idx.tolist(), strict=True)))
        start = start + minlen - 1
        finished = end - start <= 1
        n_finished = finished.sum()
        iters[finished] = maxiter + np.arange(1, n_finished + 1)
        maxiter += n_finished
        valid = iters < n
        n_valid = valid.sum()
        if n_valid == 0:
            break
        mask = finished & valid
        start[mask], end[mask] = offsets[iters[mask]], offsets[iters[mask] + 1]
        iters, start, end = iters[valid], start[valid], end[valid]
        if n_sample == 0 and n_valid < 2:  # _adjust_hidden returns True: training stops
            break
    return steps


@pytest.mark.parametrize("batch_size", [1, 2, 3, 8])
@pytest.mark.parametrize("n_sample", [0, 16])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_epoch_tail_stops_as_the_official_iterator(batch_size, n_sample, seed):
    """Without shared extra negatives the official training pass ends at the first lane release that leaves
    < 2 lanes (no update from a 1 × 1 score matrix); with them it runs the shrinking tail to the end."""
    sessions = random_sessions(np.random.default_rng(seed), 23)
    expected = official_iterator_steps(sessions, batch_size, n_sample)
    batches = SessionParallelBatches(sessions, batch_size, min_lanes=2 if n_sample == 0 else 1)
    got = [list(zip(b["inputs"].tolist(), b["targets"].tolist(), strict=True)) for b in batches]
    assert len(batches) == len(expected)
    assert got == expected
    if n_sample == 0 and batch_size > 1:
        assert min(len(rows) for rows in got) >= 2
    if n_sample > 0:
        assert len(got) == len(reference_steps(sessions, batch_size))


def test_ddp_ranks_pad_to_the_longest_truncated_plan():
    sessions = random_sessions(np.random.default_rng(4), 41)
    ranks = [SessionParallelBatches(sessions, 3, rank=r, world_size=2, pad_to_longest_rank=True, min_lanes=2)
             for r in range(2)]
    own = [SessionParallelBatches(sessions.take(np.arange(r, 41, 2)), 3, min_lanes=2) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == max(len(o) for o in own)
    for r in range(2):
        got = list(ranks[r])
        assert [as_rows(b) for b in got[: len(own[r])]] == [as_rows(b) for b in own[r]]
        assert all(b["inputs"].numel() == 0 for b in got[len(own[r]):])


def test_epoch_tail_hand_computed_example():
    """Sessions [0, 1], [10 … 14], [20, 21, 22] on 2 lanes. Official loop: block 1 = one step (lane 0 ends,
    takes session 2), block 2 = two steps (lane 0 ends, nothing left: 1 valid lane) → with ``n_sample = 0``
    training stops there, so session 1's last step 13 → 14 (a 1 × 1 score matrix) is never taken."""
    sessions = SessionSequences.from_lengths(np.array([2, 5, 3]), np.array([0, 1, 10, 11, 12, 13, 14, 20, 21, 22]))
    full = [[(0, 1), (10, 11)], [(20, 21), (11, 12)], [(21, 22), (12, 13)], [(13, 14)]]

    def pairs(batches):
        return [list(zip(b["inputs"].tolist(), b["targets"].tolist(), strict=True)) for b in batches]

    assert pairs(SessionParallelBatches(sessions, 2, min_lanes=2)) == full[:3]
    assert len(SessionParallelBatches(sessions, 2, min_lanes=2)) == 3
    assert pairs(SessionParallelBatches(sessions, 2)) == full  # evaluation / n_sample > 0: every event
