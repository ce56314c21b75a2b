"""UserItemCSR and GraphSplits against python-set / loop references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys.data.interactions import GraphSplits
from recsys.errors import DataError
from recsys.info import DatasetInfo, UserItemCSR


def random_pairs(seed: int, num_users: int, num_items: int, n: int):
    rng = np.random.default_rng(seed)
    return rng.integers(0, num_users, n), rng.integers(0, num_items, n)


def ref_sets(users, items, num_users):
    sets = [set() for _ in range(num_users)]
    for u, i in zip(users.tolist(), items.tolist(), strict=True):
        sets[u].add(i)
    return sets


def make_csr(users, items, num_users, num_items):
    return UserItemCSR.from_pairs(torch.as_tensor(users), torch.as_tensor(items), num_users, num_items)


# ---------------------------------------------------------------------------------------------- UserItemCSR
@pytest.mark.parametrize("seed", range(4))
def test_from_pairs_dedups_and_sorts(seed):
    num_users, num_items = 12, 9
    # many duplicates; the last user(s) may be empty
    users, items = random_pairs(seed, num_users - 2, num_items, 60)
    csr = make_csr(users, items, num_users, num_items)
    sets = ref_sets(users, items, num_users)
    assert csr.num_users == num_users and csr.num_items == num_items
    assert csr.indptr.shape == (num_users + 1,) and csr.indptr[0] == 0
    assert csr.indptr.dtype == torch.int64 and csr.indices.dtype == torch.int64
    assert csr.nnz == sum(len(s) for s in sets)
    assert csr.degrees.tolist() == [len(s) for s in sets]
    for u in range(num_users):
        row = csr.indices[csr.indptr[u] : csr.indptr[u + 1]].tolist()
        assert row == sorted(sets[u])
    pu, pi = csr.pairs()
    assert sorted(zip(pu.tolist(), pi.tolist(), strict=True)) == sorted((u, i) for u in range(num_users) for i in sets[u])
    keys = csr.keys()
    assert torch.all(keys[1:] > keys[:-1])  # strictly increasing
    assert keys.tolist() == sorted(u * num_items + i for u in range(num_users) for i in sets[u])


def test_from_pairs_unsorted_input_and_lists():
    csr = UserItemCSR.from_pairs(torch.tensor([2, 0, 2, 0, 2]), torch.tensor([3, 1, 0, 1, 3]), 3, 4)
    assert csr.indptr.tolist() == [0, 1, 1, 3]
    assert csr.indices.tolist() == [1, 0, 3]


@pytest.mark.parametrize("seed", range(3))
def test_contains_matches_python_sets(seed):
    num_users, num_items = 10, 15
    users, items = random_pairs(seed, num_users, num_items, 50)
    csr = make_csr(users, items, num_users, num_items)
    sets = ref_sets(users, items, num_users)
    # every (user, item) pair, as a broadcast (U, 1) x (1, I) query
    got = csr.contains(torch.arange(num_users)[:, None], torch.arange(num_items)[None, :])
    assert got.shape == (num_users, num_items)
    want = torch.tensor([[i in sets[u] for i in range(num_items)] for u in range(num_users)])
    assert torch.equal(got, want)
    # flat query with precomputed keys
    qu, qi = random_pairs(seed + 100, num_users, num_items, 200)
    got = csr.contains(torch.from_numpy(qu), torch.from_numpy(qi), csr.keys())
    assert got.tolist() == [int(i) in sets[int(u)] for u, i in zip(qu, qi, strict=True)]


def test_contains_edge_cases():
    # the last possible key and a query above every key must not index out of range
    csr = UserItemCSR.from_pairs(torch.tensor([0, 1]), torch.tensor([0, 4]), 3, 5)
    q_u = torch.tensor([1, 2, 2, 0])
    q_i = torch.tensor([4, 4, 0, 0])
    assert csr.contains(q_u, q_i).tolist() == [True, False, False, True]
    empty = UserItemCSR.from_pairs(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), 3, 5)
    assert not empty.contains(torch.tensor([0, 1]), torch.tensor([0, 4])).any()


@pytest.mark.parametrize("seed", range(3))
def test_gather_rows_matches_loop(seed):
    num_users, num_items = 11, 8
    users, items = random_pairs(seed, num_users - 1, num_items, 40)  # user 10 is empty
    csr = make_csr(users, items, num_users, num_items)
    sets = ref_sets(users, items, num_users)
    query = torch.tensor([3, 10, 3, 0, 7, 10, 1])  # repeats and empty rows
    rows, got_items = csr.gather_rows(query)
    want_rows, want_items = [], []
    for pos, u in enumerate(query.tolist()):
        for i in sorted(sets[u]):
            want_rows.append(pos)
            want_items.append(i)
    assert rows.tolist() == want_rows
    assert got_items.tolist() == want_items
    r0, i0 = csr.gather_rows(torch.zeros(0, dtype=torch.long))
    assert r0.numel() == 0 and i0.numel() == 0


def test_union_matches_set_union():
    num_users, num_items = 9, 7
    a_u, a_i = random_pairs(1, num_users, num_items, 20)
    b_u, b_i = random_pairs(2, num_users, num_items, 20)
    a, b = make_csr(a_u, a_i, num_users, num_items), make_csr(b_u, b_i, num_users, num_items)
    sa, sb = ref_sets(a_u, a_i, num_users), ref_sets(b_u, b_i, num_users)
    union = a.union(b)
    assert union.num_users == num_users and union.num_items == num_items
    for u in range(num_users):
        assert union.indices[union.indptr[u] : union.indptr[u + 1]].tolist() == sorted(sa[u] | sb[u])


def test_dataset_info_item_popularity():
    users, items = random_pairs(0, 6, 10, 30)
    csr = make_csr(users, items, 6, 10)
    info = DatasetInfo(num_users=6, num_items=10, train=csr)
    uniq = {(int(u), int(i)) for u, i in zip(users, items, strict=True)}
    want = [sum(1 for _, i in uniq if i == item) for item in range(10)]
    assert info.item_popularity.tolist() == want


# ---------------------------------------------------------------------------------------------- GraphSplits
def make_splits(with_ids: bool = True) -> GraphSplits:
    rng = np.random.default_rng(0)

    def split(n):
        return rng.integers(0, 5, n).astype(np.int64), rng.integers(0, 7, n).astype(np.int64)

    return GraphSplits(
        num_users=5,
        num_items=7,
        train=split(12),
        valid=split(4),
        test=split(0),  # an empty split survives the round trip
        user_ids=np.array(["u-a", "u-b", "ü-c", "42", "x y"]) if with_ids else None,
        item_ids=np.array([f"item{i}" for i in range(7)]) if with_ids else None,
        meta={"source": "unit", "seed": "3", "note": "ünïcode"} if with_ids else {},
    )


@pytest.mark.parametrize("with_ids", [True, False])
def test_graph_splits_round_trip(tmp_path, with_ids):
    s = make_splits(with_ids)
    path = tmp_path / "sub" / "splits.npz"
    s.save(path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["splits.npz"]  # no temp file left
    t = GraphSplits.load(path)
    assert (t.num_users, t.num_items) == (5, 7)
    for name in ("train", "valid", "test"):
        for a, b in zip(getattr(s, name), getattr(t, name), strict=True):
            np.testing.assert_array_equal(a, b)
            assert b.dtype == np.int64
    if with_ids:
        assert t.user_ids.tolist() == ["u-a", "u-b", "ü-c", "42", "x y"]
        assert t.item_ids.tolist() == [f"item{i}" for i in range(7)]
    else:
        assert t.user_ids is None and t.item_ids is None
    assert t.meta == s.meta
    t.validate()
    # the CSR view agrees with the pairs
    csr = t.csr("train")
    assert csr.nnz == len({(int(u), int(i)) for u, i in zip(*s.train, strict=True)})


def test_graph_splits_save_overwrites(tmp_path):
    path = tmp_path / "splits.npz"
    make_splits().save(path)
    s2 = make_splits(with_ids=False)
    s2.meta = {"v": "2"}
    s2.save(path)
    assert GraphSplits.load(path).meta == {"v": "2"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["splits.npz"]


@pytest.mark.parametrize(
    "split, users, items, match",
    [
        ("train", [0, 5], [0, 1], "user"),
        ("train", [0, -1], [0, 1], "user"),
        ("valid", [0, 1], [7, 1], "item"),
        ("test", [0], [-2], "item"),
        ("valid", [0, 1], [0], "valid"),
    ],
)
def test_validate_rejects_out_of_range(split, users, items, match):
    s = make_splits()
    setattr(s, split, (np.array(users, dtype=np.int64), np.array(items, dtype=np.int64)))
    with pytest.raises(DataError, match=match) as info:
        s.validate(origin="data/foo.csv")
    assert "data/foo.csv" in str(info.value)
    assert split in str(info.value)


def test_validate_rejects_empty_train():
    s = make_splits()
    s.train = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    with pytest.raises(DataError, match="empty"):
        s.validate()


def test_validate_accepts_boundary_ids():
    s = make_splits()
    s.valid = (np.array([0, 4]), np.array([0, 6]))
    s.validate()
