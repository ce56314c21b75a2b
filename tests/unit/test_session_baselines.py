"""Session baselines (MostPop, S-POP, Item-KNN) against brute-force per-session references."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch

from recsys.data.session_batches import SessionParallelChunks
from recsys.info import SessionInfo, SessionSequences
from recsys.models.session_baselines import ItemKNN, SessionMostPop, SessionPop, cooccurrence_neighbours

N = 12


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    lengths = rng.integers(2, 7, size=60)
    train = SessionSequences.from_lengths(lengths, rng.integers(0, N, size=int(lengths.sum())))
    t_len = rng.integers(1, 6, size=15)
    test = SessionSequences.from_lengths(t_len, rng.integers(0, N, size=int(t_len.sum())))
    support = torch.bincount(torch.from_numpy(train.items), minlength=N)
    info = SessionInfo(N, support, 8, 0, 0.0, train)
    return info, train, test


def evaluate(model, test: SessionSequences) -> dict[str, float]:
    model.eval()
    model.on_validation_epoch_start()
    for chunk in SessionParallelChunks(test, 4, steps_per_chunk=3):  # a chunk holds several steps
        model.validation_step(chunk, 0)
    return {k: v.item() for k, v in model.val_metrics.compute().items()}


def reference(test: SessionSequences, score_fn) -> dict[str, float]:
    ranks = []
    for seq in (s.tolist() for s in np.split(test.items, test.offsets)[1:-1]):  # one list per session
        for t in range(len(seq) - 1):
            scores = score_fn(seq[: t + 1])
            ranks.append(1 + sum(1 for j in range(N) if scores[j] > scores[seq[t + 1]]))
    r = np.array(ranks)
    return {f"{m}@{k}": float(np.mean(r <= k) if m == "recall" else np.mean(np.where(r <= k, 1 / r, 0)))
            for m in ("recall", "mrr") for k in (5, 10, 20)}


def assert_close(got, expected):
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-6), key


def test_most_pop(data):
    info, _, test = data
    pop = info.item_support.numpy()
    assert_close(evaluate(SessionMostPop(info), test), reference(test, lambda prefix: pop))


def test_spop_counts_the_session_then_breaks_ties_by_popularity(data):
    info, _, test = data
    pop = info.item_support.numpy().astype(float)

    def score(prefix):
        counts = Counter(prefix)
        return [counts.get(j, 0) + pop[j] / (pop[j] + 1) for j in range(N)]

    assert_close(evaluate(SessionPop(info), test), reference(test, score))


def official_item_knn_counts(sessions: list[list[int]], num_items: int) -> tuple[np.ndarray, np.ndarray]:
    """GRU4Rec's ``baselines.ItemKNN.fit`` counting loop transliterated: for every training event of item
    ``i``, ``iarray[items of that event's session] += 1`` — numpy's fancy-index ``+=`` adds once per distinct
    index, so a repeated click counts on the ``i`` side only; ``supp`` = events per item (``groupby.size``)."""
    counts = np.zeros((num_items, num_items))
    for i in range(num_items):
        iarray = np.zeros(num_items)
        for s in sessions:
            for item in s:
                if item == i:
                    iarray[np.array(s)] += 1
        iarray[i] = 0
        counts[i] = iarray
    supp = np.array([sum(s.count(i) for s in sessions) for i in range(num_items)], dtype=float)
    return counts, supp


def test_item_knn_counts_repeats_as_gru4rec_on_a_hand_computed_example():
    """Sessions [0, 0, 1] and [1, 2]: supp = (2, 2, 1); c(0,1) = 2 (two events of 0, each sees 1),
    c(1,0) = 1, c(1,2) = c(2,1) = 1, c(0,2) = 0. λ = 0, α = 0.5: sim(0,1) = 2/√(2·2) = 1,
    sim(1,0) = 1/2, sim(1,2) = sim(2,1) = 1/√2."""
    train = SessionSequences.from_lengths(np.array([3, 2]), np.array([0, 0, 1, 1, 2]))
    ids, vals = cooccurrence_neighbours(train, 3, neighbours=2, lmbd=0.0, alpha=0.5)
    got = {(i, int(j)): float(v) for i in range(3) for j, v in zip(ids[i], vals[i], strict=True) if v > 0}
    assert got == pytest.approx({(0, 1): 1.0, (1, 2): 2 ** -0.5, (1, 0): 0.5, (2, 1): 2 ** -0.5})
    assert [int(j) for j in ids[1]] == [2, 0]  # 0.707 before 0.5


def test_item_knn_counts_events_as_gru4recs_baseline(data):
    """Reference: :func:`official_item_knn_counts` (the official fit loop) on data with repeated clicks."""
    info, train, test = data
    sessions = [s.tolist() for s in np.split(train.items, train.offsets)[1:-1]]
    assert any(len(set(s)) < len(s) for s in sessions)  # the data has repeated clicks: the rule matters
    counts, supp = official_item_knn_counts(sessions, N)
    assert not np.allclose(counts, counts.T)  # repeats make it asymmetric
    lmbd, alpha, k = 2.0, 0.5, 4

    def sim(i, j):
        return counts[i, j] / ((supp[i] + lmbd) ** alpha * (supp[j] + lmbd) ** (1 - alpha)) if i != j else 0.0

    top = {}
    for i in range(N):
        ranked = sorted(((sim(i, j), -j) for j in range(N) if j != i and sim(i, j) > 0), reverse=True)[:k]
        top[i] = {-nj: s for s, nj in ranked}
    ids, vals = cooccurrence_neighbours(train, N, k, lmbd, alpha)
    for i in range(N):
        got = {int(a): float(b) for a, b in zip(ids[i], vals[i], strict=True) if b > 0}
        assert got.keys() == top[i].keys()
        for j in got:
            assert got[j] == pytest.approx(top[i][j], rel=1e-6)
    pop = info.item_support.numpy().astype(float)
    model = ItemKNN(info, neighbours=k, lmbd=lmbd, alpha=alpha)

    def score(prefix):
        return [top[prefix[-1]].get(j, 0.0) + 1e-6 * pop[j] / (pop[j] + 1) for j in range(N)]

    assert_close(evaluate(model, test), reference(test, score))
    assert math.isfinite(evaluate(ItemKNN(info, popularity_tiebreak=False, tie_mode="conservative"), test)["recall@5"])
