"""Preprocessing: de-duplication, threshold, k-core fixed point, the five splits and the validation carve-out,
each checked against a brute-force Python reference."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import pytest

from recsys.data.preprocess import (
    TEST,
    TRAIN,
    VALID,
    Interactions,
    PreprocessConfig,
    carve_validation,
    drop_duplicates,
    kcore_filter,
    preprocess,
    split_global_temporal,
    split_leave_one_out,
    split_random,
    split_temporal,
)
from recsys.errors import ConfigError, DataError


def random_interactions(seed: int = 0, n: int = 4000, users: int = 120, items: int = 90, times: bool = True):
    rng = np.random.default_rng(seed)
    u = (rng.zipf(1.6, n) % users).astype(np.int64)
    i = (rng.zipf(1.4, n) % items).astype(np.int64)
    t = rng.permutation(n).astype(np.float64) if times else None
    return Interactions.from_ids(u * 7 + 3, i * 5 + 1, ratings=rng.integers(1, 6, n).astype(float), times=t)


def kcore_reference(pairs: set[tuple[int, int]], mu: int, mi: int) -> set[tuple[int, int]]:
    while True:
        cu = Counter(u for u, _ in pairs)
        ci = Counter(i for _, i in pairs)
        kept = {(u, i) for u, i in pairs if cu[u] >= mu and ci[i] >= mi}
        if kept == pairs:
            return kept
        pairs = kept


def as_pairs(inter: Interactions) -> set[tuple[int, int]]:
    return set(zip(inter.user_ids[inter.users].tolist(), inter.item_ids[inter.items].tolist(), strict=True))


def test_drop_duplicates_keeps_earliest_by_time():
    inter = Interactions.from_ids(np.array([1, 1, 1, 2]), np.array([5, 5, 6, 5]), times=np.array([9.0, 3.0, 1.0, 2.0]),
                                  ratings=np.array([1.0, 2.0, 3.0, 4.0]))
    out = drop_duplicates(inter)
    assert len(out) == 3
    kept = dict(zip(zip(out.user_ids[out.users].tolist(), out.item_ids[out.items].tolist(), strict=True),
                    out.times.tolist(), strict=True))
    assert kept == {(1, 5): 3.0, (1, 6): 1.0, (2, 5): 2.0}


@pytest.mark.parametrize(("mu", "mi"), [(5, 5), (10, 3), (2, 8), (8, 6)])
def test_kcore_reaches_the_reference_fixed_point(mu, mi):
    inter = drop_duplicates(random_interactions(seed=mu * 31 + mi))
    out = kcore_filter(inter, mu, mi)
    assert as_pairs(out) == kcore_reference(as_pairs(inter), mu, mi)
    assert 0 < len(out) < len(inter)
    # a fixed point: every remaining user/item meets its minimum, and filtering again changes nothing
    assert np.bincount(out.users)[np.unique(out.users)].min() >= mu
    assert np.bincount(out.items)[np.unique(out.items)].min() >= mi
    assert len(kcore_filter(out, mu, mi)) == len(out)


def test_kcore_that_empties_the_data_names_the_filter():
    inter = drop_duplicates(random_interactions(n=300))
    with pytest.raises(DataError, match=r"k-core filter \(data.source.min_user_interactions=1000, "
                                        r"data.source.min_item_interactions=1\) removed all .*no user has >= "):
        kcore_filter(inter, 1000, 1)


def test_threshold_emptying_the_data_names_the_filter_and_missing_ratings_is_config_error():
    inter = random_interactions(n=100)
    with pytest.raises(DataError, match=r"rating filter \(data.source.rating_threshold=6\) removed all 100"):
        preprocess(inter, PreprocessConfig(split="random", rating_threshold=6))
    no_ratings = Interactions.from_ids(np.array([1, 2]), np.array([1, 2]))
    with pytest.raises(ConfigError, match="rating_threshold=4 is set but .* has no rating column"):
        preprocess(no_ratings, PreprocessConfig(split="random", rating_threshold=4))


def _by_user(inter: Interactions, part: np.ndarray) -> dict[int, dict[int, list[int]]]:
    out: dict[int, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    for row, (u, p) in enumerate(zip(inter.users.tolist(), part.tolist(), strict=True)):
        out[u][p].append(row)
    return out


def test_random_split_is_per_user_proportional_disjoint_and_seeded():
    inter = drop_duplicates(random_interactions())
    part = split_random(inter, (0.8, 0.1, 0.1), seed=3)
    assert np.array_equal(part, split_random(inter, (0.8, 0.1, 0.1), seed=3))
    assert not np.array_equal(part, split_random(inter, (0.8, 0.1, 0.1), seed=4))
    for rows in _by_user(inter, part).values():
        n = sum(len(r) for r in rows.values())
        n_train = max(int(np.floor(n * 0.8 + 0.5)), 1)
        n_valid = max(int(np.floor(n * 0.9 + 0.5)), n_train) - n_train
        assert len(rows[TRAIN]) == n_train and len(rows[VALID]) == n_valid
        assert len(rows[TEST]) == n - n_train - n_valid


def test_temporal_split_orders_time_within_each_user():
    inter = drop_duplicates(random_interactions())
    part = split_temporal(inter, (0.6, 0.2, 0.2))
    for rows in _by_user(inter, part).values():
        t = {p: inter.times[r] for p, r in rows.items() if r}
        if TRAIN in t and VALID in t:
            assert t[TRAIN].max() < t[VALID].min()
        if VALID in t and TEST in t:
            assert t[VALID].max() < t[TEST].min()
        if TRAIN in t and TEST in t:
            assert t[TRAIN].max() < t[TEST].min()


def test_leave_one_out_picks_the_latest_and_the_one_before():
    inter = drop_duplicates(random_interactions())
    part = split_leave_one_out(inter)
    for rows in _by_user(inter, part).values():
        all_rows = sorted((r for rs in rows.values() for r in rs), key=lambda r: inter.times[r])
        if len(all_rows) >= 2:
            assert rows[TEST] == [all_rows[-1]]
        if len(all_rows) >= 3:
            assert rows[VALID] == [all_rows[-2]]
        assert len(rows[TRAIN]) == len(all_rows) - (len(all_rows) >= 2) - (len(all_rows) >= 3)


def test_global_temporal_split_is_one_time_cut():
    inter = drop_duplicates(random_interactions())
    part = split_global_temporal(inter, (0.7, 0.1, 0.2))
    assert inter.times[part == TRAIN].max() < inter.times[part == VALID].min()
    assert inter.times[part == VALID].max() < inter.times[part == TEST].min()
    assert abs((part == TRAIN).mean() - 0.7) < 1e-3 and abs((part == TEST).mean() - 0.2) < 1e-3


def test_temporal_splits_need_times():
    inter = drop_duplicates(random_interactions(times=False))
    for split in ("temporal", "leave_one_out", "global_temporal"):
        with pytest.raises(ConfigError, match=f"split={split} needs timestamps"):
            preprocess(inter, PreprocessConfig(split=split))
    with pytest.raises(ConfigError, match="split=given needs a source with its own train/test"):
        preprocess(inter, PreprocessConfig(split="given"))


def test_preprocess_reindexes_densely_and_keeps_original_ids():
    inter = random_interactions()
    s = preprocess(inter, PreprocessConfig(split="random", min_user_interactions=3, min_item_interactions=3,
                                           unseen_items="keep"))
    all_u = np.concatenate([s.train[0], s.valid[0], s.test[0]])
    all_i = np.concatenate([s.train[1], s.valid[1], s.test[1]])
    assert set(all_u.tolist()) == set(range(s.num_users)) and set(all_i.tolist()) == set(range(s.num_items))
    expected = kcore_reference(as_pairs(drop_duplicates(inter)), 3, 3)
    got = {(int(s.user_ids[u]), int(s.item_ids[i])) for u, i in zip(all_u.tolist(), all_i.tolist(), strict=True)}
    assert got == expected
    # splits are disjoint
    keys = [set((u * s.num_items + i).tolist()) for u, i in (s.train, s.valid, s.test)]
    assert not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and not (keys[1] & keys[2])


def test_carve_validation_per_user_fraction_and_seed():
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(50), rng.integers(1, 40, 50))
    items = rng.permutation(len(users))
    (tu, ti), (vu, vi) = carve_validation(users, items, 0.2, seed=1)
    assert len(tu) + len(vu) == len(users)
    assert set(zip(tu.tolist(), ti.tolist(), strict=True)).isdisjoint(zip(vu.tolist(), vi.tolist(), strict=True))
    deg = np.bincount(users, minlength=50)
    vdeg = np.bincount(vu, minlength=50)
    expected = np.minimum(np.floor(deg * 0.2 + 0.5), deg - 1)  # every user keeps a train item
    assert np.array_equal(vdeg, expected)
    (tu2, _), (vu2, vi2) = carve_validation(users, items, 0.2, seed=1)
    assert np.array_equal(vi, vi2)


def test_config_validation():
    with pytest.raises(ConfigError, match="split='weird'"):
        PreprocessConfig(split="weird")
    with pytest.raises(ConfigError, match="split_ratios"):
        PreprocessConfig(split="random", split_ratios=(0.5, 0.1, 0.1))
    with pytest.raises(ConfigError, match="unseen_items"):
        PreprocessConfig(unseen_items="maybe")
    assert PreprocessConfig(split_ratios=(0.9, 0.1)).split_ratios == (0.9, 0.0, 0.1)
