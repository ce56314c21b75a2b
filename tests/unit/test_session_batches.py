"""Session-parallel mini-batches against a direct simulation of GRU4Rec's lane loop (algorithms.md §3.1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys.data.session_batches import SessionParallelChunks, plan_session_parallel, schedule_sessions
from recsys.errors import ConfigError
from recsys.info import SessionSequences
from recsys.models.session_recommender import session_steps
from recsys.sampling import SessionNegativeSampler, StepNegatives


def step_list(chunks: SessionParallelChunks) -> list[dict[str, torch.Tensor]]:
    """Every step of one pass, in order, from the chunks the sampler yields."""
    got = list(chunks)
    assert len(got) == len(chunks)
    return [step for chunk in got for step in session_steps(chunk)]


def steps_of(sessions: SessionSequences, batch_size: int, **kwargs) -> list[dict[str, torch.Tensor]]:
    return step_list(SessionParallelChunks(sessions, batch_size, **kwargs))


def random_sessions(rng: np.random.Generator, num_sessions: int, max_len: int = 9, min_len: int = 1) -> SessionSequences:
    lengths = rng.integers(min_len, max_len + 1, size=num_sessions)
    items = rng.integers(0, 50, size=int(lengths.sum()))
    return SessionSequences.from_lengths(lengths, items, np.arange(len(items), dtype=np.float64))


def reference_steps(sessions: SessionSequences, num_lanes: int) -> list[list[tuple[int, int, int, bool]]]:
    """The official loop, one event at a time: per step the (lane, input, target, reset) of every active lane."""
    seqs = [s.tolist() for s in np.split(sessions.items, sessions.offsets)[1:-1]]  # one list per session
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
    got = [as_rows(b) for b in steps_of(sessions, num_lanes)]
    assert len(got) == len(expected)
    assert got == expected


def test_every_session_contributes_len_minus_one_steps_and_resets_exactly_at_boundaries():
    sessions = random_sessions(np.random.default_rng(5), 200, max_len=12)
    batches = steps_of(sessions, 16)
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
    expected = sorted((s.tolist() for s in np.split(sessions.items, sessions.offsets)[1:-1] if len(s) >= 2), key=len)
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
    sizes = [b["inputs"].numel() for b in steps_of(sessions, 3)]
    assert sizes[0] == 3 and sizes[-1] < 3 and sorted(sizes[-3:], reverse=True) == sizes[-3:]
    assert sum(sizes) == int((lengths - 1).sum())


def test_sessions_of_length_one_contribute_nothing():
    sessions = SessionSequences.from_lengths(np.array([1, 3, 1, 2]), np.array([9, 1, 2, 3, 8, 4, 5]))
    rows = [r for b in steps_of(sessions, 2) for r in as_rows(b)]
    assert rows == [(0, 1, 2, True), (1, 4, 5, True), (0, 2, 3, False)]


def test_ddp_partition_is_disjoint_complete_and_equal_length():
    sessions = random_sessions(np.random.default_rng(3), 101, max_len=15, min_len=2)
    world = 3
    datasets = [SessionParallelChunks(sessions, 4, rank=r, world_size=world, pad_to_longest_rank=True) for r in range(world)]
    lengths = {len(d) for d in datasets}
    assert len(lengths) == 1  # every rank takes the same number of optimiser steps
    n_events = 0
    for r, d in enumerate(datasets):
        batches = step_list(d)
        assert len(batches) == len(d) == d.num_steps
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
    seqs = [s.tolist() for s in np.split(sessions.items, sessions.offsets)[1:-1] if len(s) >= 2]
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
    batches = SessionParallelChunks(sessions, batch_size, min_lanes=2 if n_sample == 0 else 1)
    got = [list(zip(b["inputs"].tolist(), b["targets"].tolist(), strict=True)) for b in step_list(batches)]
    assert len(batches) == batches.num_steps == len(expected)
    assert got == expected
    if n_sample == 0 and batch_size > 1:
        assert min(len(rows) for rows in got) >= 2
    if n_sample > 0:
        assert len(got) == len(reference_steps(sessions, batch_size))


def test_ddp_ranks_pad_to_the_longest_truncated_plan():
    sessions = random_sessions(np.random.default_rng(4), 41)
    ranks = [SessionParallelChunks(sessions, 3, rank=r, world_size=2, pad_to_longest_rank=True, min_lanes=2)
             for r in range(2)]
    own = [SessionParallelChunks(sessions.take(np.arange(r, 41, 2)), 3, min_lanes=2) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == max(len(o) for o in own)
    for r in range(2):
        got = step_list(ranks[r])
        assert [as_rows(b) for b in got[: len(own[r])]] == [as_rows(b) for b in step_list(own[r])]
        assert all(b["inputs"].numel() == 0 for b in got[len(own[r]):])


def test_epoch_tail_hand_computed_example():
    """Sessions [0, 1], [10 … 14], [20, 21, 22] on 2 lanes. Official loop: block 1 = one step (lane 0 ends,
    takes session 2), block 2 = two steps (lane 0 ends, nothing left: 1 valid lane) → with ``n_sample = 0``
    training stops there, so session 1's last step 13 → 14 (a 1 × 1 score matrix) is never taken."""
    sessions = SessionSequences.from_lengths(np.array([2, 5, 3]), np.array([0, 1, 10, 11, 12, 13, 14, 20, 21, 22]))
    full = [[(0, 1), (10, 11)], [(20, 21), (11, 12)], [(21, 22), (12, 13)], [(13, 14)]]

    def pairs(chunks):
        return [list(zip(b["inputs"].tolist(), b["targets"].tolist(), strict=True)) for b in step_list(chunks)]

    assert pairs(SessionParallelChunks(sessions, 2, min_lanes=2)) == full[:3]
    assert len(SessionParallelChunks(sessions, 2, min_lanes=2)) == 3
    assert SessionParallelChunks(sessions, 2, min_lanes=2).num_steps == 3
    assert pairs(SessionParallelChunks(sessions, 2)) == full  # evaluation / n_sample > 0: every event
    assert pairs(SessionParallelChunks(sessions, 2, steps_per_chunk=3)) == full


# ---------------------------------------------------------------------------------------------- chunks
def assert_same_steps(a: list[dict[str, torch.Tensor]], b: list[dict[str, torch.Tensor]]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            assert x[k].dtype == y[k].dtype and torch.equal(x[k], y[k]), k


def negative_sampler(seed: int = 0, n_sample: int = 4) -> SessionNegativeSampler:
    counts = torch.from_numpy(np.random.default_rng(seed).integers(0, 20, size=50))
    return SessionNegativeSampler(n_sample=n_sample, alpha=0.5).bind(item_counts=counts)


@pytest.mark.parametrize("min_lanes", [1, 2])
@pytest.mark.parametrize("with_negatives", [False, True])
def test_chunking_does_not_change_the_steps(min_lanes, with_negatives):
    """Chunks of 1, 5 or 1000 steps concatenate to exactly the same step dicts (and the same negatives)."""
    sessions = random_sessions(np.random.default_rng(7), 90, max_len=8)
    sampler = negative_sampler() if with_negatives else None
    runs = {}
    for t in (1, 5, 1000):
        chunks = SessionParallelChunks(sessions, 4, min_lanes=min_lanes, steps_per_chunk=t, negatives=sampler, seed=11)
        chunks.set_epoch(3)
        assert len(chunks) == -(-chunks.num_steps // t)
        first = next(iter(chunks))
        assert first["ptr"].numel() == min(t, chunks.num_steps) + 1
        assert ("negatives" in first) == with_negatives
        if with_negatives:
            assert first["negatives"].shape == first["neg_log_q"].shape == (min(t, chunks.num_steps), 4)
        runs[t] = step_list(chunks)
    assert len(runs[1]) == SessionParallelChunks(sessions, 4, min_lanes=min_lanes).num_steps > 30
    assert_same_steps(runs[5], runs[1])
    assert_same_steps(runs[1000], runs[1])
    # and the steps are the plan's, one by one
    plan = SessionParallelChunks(sessions, 4, min_lanes=min_lanes).plan
    for t, step in enumerate(runs[1]):
        lo, hi = int(plan.ptr[t]), int(plan.ptr[t + 1])
        for key in ("inputs", "targets", "lanes", "reset"):
            assert torch.equal(step[key], getattr(plan, key)[lo:hi]), (t, key)


def test_negatives_of_a_step_are_those_of_step_negatives():
    sessions = random_sessions(np.random.default_rng(8), 60)
    sampler = negative_sampler(1, n_sample=3)
    chunks = SessionParallelChunks(sessions, 3, steps_per_chunk=7, negatives=sampler, seed=5)
    chunks.set_epoch(2)
    steps = step_list(chunks)
    negatives, log_q = StepNegatives(sampler, 5, 2).steps(0, len(steps))
    assert torch.equal(torch.stack([s["negatives"] for s in steps]), negatives)
    assert torch.equal(torch.stack([s["neg_log_q"] for s in steps]), log_q)
    # another epoch draws other negatives; the steps themselves are the same
    chunks.set_epoch(3)
    other = step_list(chunks)
    assert not torch.equal(torch.stack([s["negatives"] for s in other]), negatives)
    assert all(torch.equal(a["inputs"], b["inputs"]) for a, b in zip(steps, other, strict=True))
    # no sampler, or n_sample = 0: no negatives in the chunks
    assert "negatives" not in next(iter(SessionParallelChunks(sessions, 3, negatives=negative_sampler(1, 0))))


@pytest.mark.parametrize("min_lanes", [1, 2])
@pytest.mark.parametrize("steps_per_chunk", [1, 5, 1000])
def test_padded_ranks_yield_the_same_number_of_steps_whatever_the_chunking(min_lanes, steps_per_chunk):
    """Under a 2-rank split with pad_to_longest_rank every rank yields the same number of steps (and chunks); the
    padding steps at the end are empty (but still carry their negatives); the real steps are the rank's own."""
    sessions = random_sessions(np.random.default_rng(9), 45, max_len=12)
    sampler = negative_sampler(2, n_sample=2)
    per_rank = []
    for r in range(2):
        chunks = SessionParallelChunks(sessions, 3, rank=r, world_size=2, pad_to_longest_rank=True, min_lanes=min_lanes,
                                       steps_per_chunk=steps_per_chunk, negatives=sampler, seed=1)
        own = SessionParallelChunks(sessions.take(np.arange(r, 45, 2)), 3, min_lanes=min_lanes)
        steps = step_list(chunks)
        real = step_list(own)
        assert len(steps) == chunks.num_steps
        assert [as_rows(s) for s in steps[: len(real)]] == [as_rows(s) for s in real]
        for s in steps[len(real):]:
            assert all(s[k].numel() == 0 for k in ("inputs", "targets", "lanes", "reset"))
            assert s["negatives"].shape == (2,)
        per_rank.append((len(steps), len(chunks), len(real)))
    assert per_rank[0][:2] == per_rank[1][:2]  # same number of steps and chunks on every rank
    assert per_rank[0][2] != per_rank[1][2]  # this split's ranks have plans of different lengths: padding is exercised
    assert per_rank[0][0] == max(per_rank[0][2], per_rank[1][2])


def test_chunk_of_a_range_is_the_slice_of_the_pass():
    sessions = random_sessions(np.random.default_rng(10), 40)
    sampler = negative_sampler(3, n_sample=2)
    chunks = SessionParallelChunks(sessions, 4, negatives=sampler, seed=2)
    draws = StepNegatives(sampler, 2, 0)
    every = [s for s in session_steps(chunks.chunk(0, chunks.num_steps, draws))]
    middle = list(session_steps(chunks.chunk(10, 17, StepNegatives(sampler, 2, 0))))
    assert_same_steps(middle, every[10:17])
    # beyond the plan: empty padding steps
    padded = chunks.chunk(chunks.num_steps - 1, chunks.num_steps + 2)
    assert padded["ptr"].numel() == 4 and int(padded["ptr"][-1]) == int(padded["ptr"][1])
    with pytest.raises(ConfigError, match="steps_per_chunk"):
        SessionParallelChunks(sessions, 4, steps_per_chunk=0)


@pytest.mark.parametrize("world", [1, 2, 3])
def test_evaluation_chunks_name_every_event_by_session_and_position(world):
    """event_ids: each row's (session, position) is its input event in the whole split (whatever the rank), so
    ``items[offsets[s] + p]`` is the row's input and the next one its target; every next-item event once."""
    sessions = random_sessions(np.random.default_rng(3), 40, max_len=7)
    seen = []
    for rank in range(world):
        chunks = SessionParallelChunks(sessions, 3, rank=rank, world_size=world, steps_per_chunk=4, event_ids=True)
        for chunk in chunks:
            event = sessions.offsets[chunk["sessions"].numpy()] + chunk["positions"].numpy()
            assert np.array_equal(sessions.items[event], chunk["inputs"].numpy())
            assert np.array_equal(sessions.items[event + 1], chunk["targets"].numpy())
            assert np.array_equal(chunk["reset"].numpy(), chunk["positions"].numpy() == 0)
            assert (chunk["sessions"].numpy() % world == rank).all()
            seen += list(zip(chunk["sessions"].tolist(), chunk["positions"].tolist(), strict=True))
    expected = [(s, p) for s, n in enumerate(sessions.lengths.tolist()) for p in range(n - 1)]
    assert sorted(seen) == expected
    assert "sessions" not in next(iter(SessionParallelChunks(sessions, 3)))  # training chunks: no ids
