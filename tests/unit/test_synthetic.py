"""generate_synthetic_graph: determinism, split structure, activity bounds, popularity skew, bad configs."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from recsys.data.synthetic import generate_synthetic_graph
from recsys.errors import ConfigError

PARAMS = dict(num_users=300, num_items=250, min_interactions=5, max_interactions=40, split=(0.7, 0.1, 0.2))


@pytest.fixture(scope="module")
def graph():
    return generate_synthetic_graph(**PARAMS, seed=0)


def per_user(pairs):
    out = defaultdict(list)
    for u, i in zip(pairs[0].tolist(), pairs[1].tolist(), strict=True):
        out[u].append(i)
    return out


def test_deterministic_for_a_seed(graph):
    again = generate_synthetic_graph(**PARAMS, seed=0)
    for name in ("train", "valid", "test"):
        for a, b in zip(getattr(graph, name), getattr(again, name), strict=True):
            np.testing.assert_array_equal(a, b)
    other = generate_synthetic_graph(**PARAMS, seed=1)
    assert not (
        len(other.train[0]) == len(graph.train[0])
        and np.array_equal(other.train[0], graph.train[0])
        and np.array_equal(other.train[1], graph.train[1])
    )
    assert graph.meta["seed"] == "0" and other.meta["seed"] == "1"


def test_ids_in_range_and_validate(graph):
    assert (graph.num_users, graph.num_items) == (300, 250)
    graph.validate()
    for name in ("train", "valid", "test"):
        u, i = getattr(graph, name)
        assert len(u) == len(i)
        assert u.min() >= 0 and u.max() < 300 and i.min() >= 0 and i.max() < 250


def test_splits_disjoint_and_sizes_follow_ratios(graph):
    tr, va, te = per_user(graph.train), per_user(graph.valid), per_user(graph.test)
    for u in range(graph.num_users):
        a, b, c = tr[u], va[u], te[u]
        # no duplicate inside a split, no overlap across splits
        assert len(set(a)) == len(a) and len(set(b)) == len(b) and len(set(c)) == len(c)
        assert not (set(a) & set(b) or set(a) & set(c) or set(b) & set(c))
        n = len(a) + len(b) + len(c)
        assert PARAMS["min_interactions"] <= n <= PARAMS["max_interactions"]
        # rounded ratios: |n_split - n * ratio| <= 1/2
        assert abs(len(c) - 0.2 * n) <= 0.5 + 1e-6, (u, n, len(c))
        assert abs(len(b) - 0.1 * n) <= 0.5 + 1e-6, (u, n, len(b))
        assert len(a) == n - len(b) - len(c)
        assert len(a) >= 1


def test_activity_is_heavy_tailed_and_clipped(graph):
    n = np.bincount(np.concatenate([graph.train[0], graph.valid[0], graph.test[0]]), minlength=graph.num_users)
    assert n.min() >= PARAMS["min_interactions"]
    assert n.max() <= PARAMS["max_interactions"]
    # a Pareto tail: many users at the minimum-ish level, a few heavy ones
    assert np.median(n) < 0.5 * PARAMS["max_interactions"]
    assert (n == PARAMS["max_interactions"]).any() or n.max() > 3 * PARAMS["min_interactions"]


def test_item_popularity_is_skewed(graph):
    items = np.concatenate([graph.train[1], graph.valid[1], graph.test[1]])
    counts = np.sort(np.bincount(items, minlength=graph.num_items))[::-1]
    top = counts[: graph.num_items // 10].sum()
    assert top / counts.sum() > 0.3  # uniform would give about 0.1


def test_max_interactions_equal_to_catalogue():
    g = generate_synthetic_graph(num_users=20, num_items=12, min_interactions=12, max_interactions=12, seed=3)
    n = np.bincount(np.concatenate([g.train[0], g.valid[0], g.test[0]]), minlength=20)
    assert np.all(n == 12)
    for u, items in per_user((np.concatenate([g.train[0], g.valid[0], g.test[0]]),
                              np.concatenate([g.train[1], g.valid[1], g.test[1]]))).items():
        assert sorted(items) == list(range(12)), u


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(min_interactions=0),
        dict(min_interactions=10, max_interactions=5),
        dict(num_items=30, max_interactions=31),
        dict(split=(0.5, 0.1, 0.1)),
        dict(split=(1.2, -0.1, -0.1)),
        dict(split=(0.8, 0.2)),
    ],
)
def test_impossible_parameters_raise_config_error(kwargs):
    base = dict(num_users=10, num_items=30, min_interactions=2, max_interactions=10)
    base.update(kwargs)
    with pytest.raises(ConfigError):
        generate_synthetic_graph(**base)
