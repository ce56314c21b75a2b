"""Negative samplers and the BPR epoch sampler (algorithms.md §1.4), against python-set references and
hand-computed chi-square statistics (no scipy)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import recsys.data.bpr_batches as bpr_batches
from recsys.data.bpr_batches import BPREpochSampler
from recsys.errors import ConfigError, DataError
from recsys.info import UserItemCSR
from recsys.sampling import (
    HardNegativeSampler,
    InBatchNegativeSampler,
    PopularityNegativeSampler,
    UniformNegativeSampler,
)


def random_graph(seed: int, num_users: int, num_items: int):
    """Every user has 1 .. num_items-1 distinct train items (so a negative always exists)."""
    rng = np.random.default_rng(seed)
    sets = []
    for _ in range(num_users):
        deg = int(rng.integers(1, num_items))
        sets.append({int(i) for i in rng.choice(num_items, size=deg, replace=False)})
    u = torch.tensor([uu for uu, s in enumerate(sets) for _ in s])
    i = torch.tensor([ii for s in sets for ii in sorted(s)])
    return UserItemCSR.from_pairs(u, i, num_users, num_items), sets


def csr_from_sets(sets, num_items):
    u = torch.tensor([uu for uu, s in enumerate(sets) for _ in s], dtype=torch.long)
    i = torch.tensor([ii for s in sets for ii in sorted(s)], dtype=torch.long)
    return UserItemCSR.from_pairs(u, i, len(sets), num_items)


def chi_square(counts: np.ndarray, expected: np.ndarray) -> float:
    return float(np.sum((counts - expected) ** 2 / expected))


def generous_critical(df: int) -> float:
    """mean + 7 standard deviations of χ²(df): far beyond the 0.999 quantile, far below a real bias."""
    return df + 7 * math.sqrt(2 * df)


# ---------------------------------------------------------------------------------------------- negatives
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("num_negatives", [1, 5])
def test_negatives_never_train_positives(seed, num_negatives):
    num_users, num_items = 15 + seed, 12 + 3 * seed
    train, sets = random_graph(seed, num_users, num_items)
    sampler = UniformNegativeSampler(num_negatives).bind(train)
    g = torch.Generator().manual_seed(seed)
    users = torch.randint(num_users, (400,), generator=g)
    neg = sampler.sample(users, g)
    assert neg.shape == (400, num_negatives)
    assert neg.dtype == torch.int64
    assert neg.min() >= 0 and neg.max() < num_items
    for u, row in zip(users.tolist(), neg.tolist(), strict=True):
        assert not set(row) & sets[u]


def test_negatives_for_nearly_full_user():
    # user 0 has every item but one: the only valid negative is item 7
    num_items = 20
    sets = [set(range(num_items)) - {7}, {0}]
    sampler = UniformNegativeSampler(3).bind(csr_from_sets(sets, num_items))
    neg = sampler.sample(torch.tensor([0, 0, 1]), torch.Generator().manual_seed(0))
    assert neg[:2].eq(7).all()
    assert not (neg[2] == 0).any()


def test_negatives_uniform_over_non_positives():
    num_items = 30
    positives = {0, 3, 4, 5, 11, 12, 20, 21, 22, 29}
    sets = [positives, {1, 2}, {5}]
    sampler = UniformNegativeSampler(2).bind(csr_from_sets(sets, num_items))
    draws = sampler.sample(torch.zeros(10_000, dtype=torch.long), torch.Generator().manual_seed(123)).reshape(-1)
    counts = np.bincount(draws.numpy(), minlength=num_items)
    assert counts[sorted(positives)].sum() == 0
    allowed = np.array(sorted(set(range(num_items)) - positives))
    observed = counts[allowed].astype(float)
    expected = np.full(len(allowed), draws.numel() / len(allowed))
    assert chi_square(observed, expected) < generous_critical(len(allowed) - 1)
    # total-variation distance to uniform, also small
    assert 0.5 * np.abs(observed / observed.sum() - 1 / len(allowed)).sum() < 0.03


def test_sample_before_bind_and_bad_config():
    with pytest.raises(RuntimeError):
        UniformNegativeSampler().sample(torch.tensor([0]), torch.Generator())
    with pytest.raises(ConfigError):
        UniformNegativeSampler(0)


def test_bind_rejects_user_with_every_item():
    sets = [{0, 1}, {0, 1, 2, 3}, {2}]
    with pytest.raises(DataError, match="user 1"):
        UniformNegativeSampler().bind(csr_from_sets(sets, 4))


# ---------------------------------------------------------------------------------------------- BPR epochs
def skewed_graph():
    """user 0: 50 items; users 1..9: one item each; user 10: none (never drawn)."""
    num_items = 60
    sets = [set(range(50))] + [{50 + u} for u in range(9)] + [set()]
    return csr_from_sets(sets, num_items), sets


def epoch_list(sampler: BPREpochSampler) -> list[dict[str, torch.Tensor]]:
    """The epoch's batches, in order, from the chunks the sampler yields."""
    chunks = list(iter(sampler))
    assert len(chunks) == len(sampler)
    assert all(1 <= len(chunk) <= sampler.steps_per_chunk for chunk in chunks)
    return [b for chunk in chunks for b in chunk]


def collect(sampler: BPREpochSampler) -> dict[str, torch.Tensor]:
    batches = epoch_list(sampler)
    return {k: torch.cat([b[k] for b in batches]) for k in ("users", "pos_items", "neg_items")}


def test_users_uniform_over_active_users_not_degree():
    train, sets = skewed_graph()
    neg = UniformNegativeSampler().bind(train)
    sampler = BPREpochSampler(train, neg, batch_size=4096, seed=3, num_samples=20_000)
    users = collect(sampler)["users"].numpy()
    counts = np.bincount(users, minlength=len(sets))
    assert counts[10] == 0  # user without train items
    observed = counts[:10].astype(float)
    expected = np.full(10, len(users) / 10)
    assert chi_square(observed, expected) < generous_critical(9)
    # degree-proportional sampling would give user 0 about 50/59 of the draws
    assert counts[0] / len(users) < 0.15


def test_positives_are_train_positives_and_uniform_within_user():
    train, sets = skewed_graph()
    neg = UniformNegativeSampler(2).bind(train)
    sampler = BPREpochSampler(train, neg, batch_size=1000, seed=0, num_samples=30_000)
    ep = collect(sampler)
    for u, p, n in zip(ep["users"].tolist(), ep["pos_items"].tolist(), ep["neg_items"].tolist(), strict=True):
        assert p in sets[u]
        assert not set(n) & sets[u]
    assert ep["neg_items"].shape == (30_000, 2)
    pos0 = ep["pos_items"][ep["users"] == 0].numpy()
    counts = np.bincount(pos0, minlength=50)[:50].astype(float)
    assert chi_square(counts, np.full(50, len(pos0) / 50)) < generous_critical(49)


@pytest.mark.parametrize("batch_size", [1, 7, 64, 1000])
def test_epoch_size_and_len(batch_size):
    train, sets = random_graph(2, 25, 17)
    neg = UniformNegativeSampler().bind(train)
    sampler = BPREpochSampler(train, neg, batch_size=batch_size, seed=1)
    batches = epoch_list(sampler)
    assert len(sampler) == sampler.num_batches() == math.ceil(train.nnz / batch_size) == len(batches)
    assert sum(b["users"].numel() for b in batches) == train.nnz
    assert all(b["users"].numel() == batch_size for b in batches[:-1])
    for b in batches:
        assert set(b) == {"users", "pos_items", "neg_items"}
        assert b["neg_items"].shape == (b["users"].numel(), 1)
        for u, p in zip(b["users"].tolist(), b["pos_items"].tolist(), strict=True):
            assert p in sets[u]


def test_determinism_in_seed_and_epoch():
    train, _ = random_graph(4, 20, 15)

    def make(seed):
        return BPREpochSampler(train, UniformNegativeSampler().bind(train), batch_size=16, seed=seed)

    a, b = make(5), make(5)
    a.set_epoch(3)
    b.set_epoch(3)
    ea, eb = epoch_list(a), epoch_list(b)
    assert len(ea) == len(eb)
    for x, y in zip(ea, eb, strict=True):
        for k in x:
            assert torch.equal(x[k], y[k])
    # iterating twice in the same epoch gives the same epoch
    assert all(torch.equal(x["users"], y["users"]) for x, y in zip(ea, epoch_list(a), strict=True))
    b.set_epoch(4)
    assert not torch.equal(collect(a)["users"], collect(b)["users"])
    c = make(6)
    c.set_epoch(3)
    assert not torch.equal(collect(a)["users"], collect(c)["users"])


def _pairs(ep: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.stack([ep["users"], ep["pos_items"]], 1)


def _sorted_rows(rows: torch.Tensor) -> np.ndarray:
    arr = rows.numpy()
    return arr[np.lexsort(arr.T[::-1])]


@pytest.mark.parametrize("num_samples", [None, 101])
def test_ddp_sharding(monkeypatch, num_samples):
    """Every rank draws the same epoch of (user, positive) and keeps the slice rank::2; negatives are drawn
    per rank (sampling_generator(seed, epoch, rank)), so only their validity is checked across ranks."""
    train, sets = random_graph(6, 30, 20)
    neg = UniformNegativeSampler(2).bind(train)
    sampler = BPREpochSampler(train, neg, batch_size=8, seed=2, num_samples=num_samples)
    sampler.set_epoch(1)
    n = num_samples or train.nnz
    full = collect(sampler)
    full_pairs = _pairs(full)
    assert full_pairs.shape[0] == n

    lengths, shard_pairs = [], []
    for rank in (0, 1):
        monkeypatch.setattr(bpr_batches, "distributed_rank_and_world", lambda rank=rank: (rank, 2))
        lengths.append(len(sampler))
        batches = epoch_list(sampler)
        assert len(batches) == lengths[-1] == sampler.num_batches()
        ep = {k: torch.cat([b[k] for b in batches]) for k in ("users", "pos_items", "neg_items")}
        assert ep["neg_items"].shape == (ep["users"].numel(), 2)
        for u, row in zip(ep["users"].tolist(), ep["neg_items"].tolist(), strict=True):
            assert not set(row) & sets[u]
        shard_pairs.append(_pairs(ep))
    # each rank keeps the disjoint index slice rank::2 of the same epoch
    assert torch.equal(shard_pairs[0], full_pairs[0::2])
    assert torch.equal(shard_pairs[1], full_pairs[1::2])
    assert shard_pairs[0].shape[0] + shard_pairs[1].shape[0] == n
    assert lengths == [math.ceil(len(range(r, n, 2)) / 8) for r in (0, 1)]
    # the union (as a multiset of (user, positive)) is the single-process epoch
    np.testing.assert_array_equal(_sorted_rows(torch.cat(shard_pairs)), _sorted_rows(full_pairs))


def test_epoch_sampler_errors():
    train, _ = random_graph(0, 5, 6)
    neg = UniformNegativeSampler().bind(train)
    with pytest.raises(ConfigError):
        BPREpochSampler(train, neg, batch_size=0)
    with pytest.raises(ConfigError):
        BPREpochSampler(train, neg, batch_size=4, steps_per_chunk=0)
    empty = UserItemCSR.from_pairs(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), 3, 4)
    with pytest.raises(DataError):
        BPREpochSampler(empty, UniformNegativeSampler().bind(empty), batch_size=4)


def _same_batches(a: list[dict[str, torch.Tensor]], b: list[dict[str, torch.Tensor]]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        assert all(torch.equal(x[k], y[k]) for k in x)


@pytest.mark.parametrize("negatives", ["uniform", "in_batch"])
@pytest.mark.parametrize("steps_per_chunk", [2, 5, 1000])
def test_chunks_hold_the_same_batches_in_the_same_order(negatives, steps_per_chunk):
    """The draws do not depend on the chunking: chunks of T batches concatenate to the T = 1 epoch (and to
    ``batches()``); ``len()`` counts chunks."""
    train, _ = random_graph(7, 30, 25)

    def make(t):
        neg = (UniformNegativeSampler(2, n_sample=3) if negatives == "uniform" else InBatchNegativeSampler(n_sample=2))
        sampler = BPREpochSampler(train, neg.bind(train), batch_size=9, seed=3, steps_per_chunk=t)
        sampler.set_epoch(2)
        return sampler

    one, chunked = make(1), make(steps_per_chunk)
    reference = epoch_list(one)
    assert len(reference) == one.num_batches() == chunked.num_batches() > 5
    assert len(chunked) == math.ceil(one.num_batches() / steps_per_chunk)
    chunks = list(iter(chunked))
    assert all(len(c) == steps_per_chunk for c in chunks[:-1])
    _same_batches([b for c in chunks for b in c], reference)
    _same_batches(list(chunked.batches()), reference)


def test_chunks_under_ddp_hold_the_same_batches(monkeypatch):
    train, _ = random_graph(8, 30, 25)
    for rank in (0, 1):
        monkeypatch.setattr(bpr_batches, "distributed_rank_and_world", lambda rank=rank: (rank, 2))
        samplers = [BPREpochSampler(train, UniformNegativeSampler().bind(train), batch_size=4, seed=1,
                                    steps_per_chunk=t) for t in (1, 3)]
        _same_batches(epoch_list(samplers[1]), epoch_list(samplers[0]))


def _device_samplers():
    return {
        "uniform+extras": UniformNegativeSampler(2, n_sample=3),
        "popularity": PopularityNegativeSampler(1, alpha=0.75, n_sample=2),
        "in_batch": InBatchNegativeSampler(n_sample=2),
        "in_batch k=2": InBatchNegativeSampler(num_negatives=2),
        "hard": HardNegativeSampler(1, candidates=4),
    }


@pytest.mark.parametrize("name", list(_device_samplers()))
def test_epoch_drawn_on_its_device_creates_nothing_elsewhere(name):
    """``BPREpochSampler(device=d)`` draws on ``d``: with torch's default device set to ``meta``, every tensor
    created without an explicit device would be a meta tensor and the first op mixing it with the sampler's
    tensors would fail. On the CPU the batches equal those of the default sampler, bit for bit (the same streams).
    On a GPU: tests/unit/test_gpu.py."""
    train, sets = random_graph(11, 40, 30)

    def epoch(neg, device):
        sampler = BPREpochSampler(train, neg, batch_size=16, seed=5, steps_per_chunk=3, device=device)
        sampler.set_epoch(1)
        return [b for chunk in sampler for b in chunk]

    reference = epoch(_device_samplers()[name].bind(train), None)
    bound = _device_samplers()[name].bind(train)  # (binding is set-up, on the CPU)
    torch.set_default_device("meta")
    try:
        drawn = epoch(bound, "cpu")
    finally:
        torch.set_default_device(None)
    assert all(t.device.type == "cpu" for b in drawn for t in b.values())
    _same_batches(drawn, reference)
    for b in drawn:  # and they are proper draws: never a train positive of the row
        negs = b.get("neg_items", b.get("neg_candidates"))
        if negs is not None:
            for u, row in zip(b["users"].tolist(), negs.reshape(len(b["users"]), -1).tolist(), strict=True):
                assert not set(row) & sets[u]


def test_negative_sampler_to_device_is_a_copy():
    """``to(device)`` moves every table of a copy (checked with the meta device) and leaves the original alone;
    already there, it is the object itself."""
    train, _ = random_graph(3, 10, 12)
    neg = PopularityNegativeSampler(1, alpha=0.5).bind(train)
    assert neg.to(None) is neg and neg.to("cpu") is neg
    assert train.to("cpu") is train and train.to(None) is train
    moved = neg.to("meta")
    assert moved is not neg and type(moved) is type(neg) and moved.alpha == neg.alpha
    for name in ("_keys", "_weights", "_cdf"):
        assert getattr(moved, name).device.type == "meta" and getattr(neg, name).device.type == "cpu", name
    assert moved.train.indptr.device.type == "meta" and moved.train.indices.device.type == "meta"
    assert neg.train is train and train.indptr.device.type == "cpu"
    assert moved.train.num_items == train.num_items


@pytest.mark.parametrize(("num_items", "zero_fraction", "buckets"), [(2933, 0.0, 1 << 16), (50, 0.3, 1 << 10), (997, 0.1, 64)])
def test_guided_inverse_cdf_is_the_binary_search_exactly(num_items, zero_fraction, buckets):
    """The guide table's answers equal ``searchsorted(cdf, u, right=True)`` bit for bit: random draws, the CDF's
    own values and their float64 neighbours, the slice edges and their neighbours, 0 and the total; items of
    weight 0 (flat runs of the CDF) are never drawn. A few slices hold a step (the binary-search fallback runs)."""
    from recsys.sampling import cdf_guide, inverse_cdf

    g = torch.Generator().manual_seed(num_items)
    weights = torch.rand(num_items, dtype=torch.float64, generator=g) ** 3
    weights[torch.rand(num_items, generator=g) < zero_fraction] = 0.0
    cdf = weights.cumsum(0)
    guide = cdf_guide(cdf, buckets)
    assert 0 < int((guide < 0).sum()) <= 2 * num_items
    edges = torch.arange(buckets + 1, dtype=torch.float64) * (cdf[-1] / buckets)
    down, up = torch.tensor(0.0, dtype=torch.float64), torch.tensor(float(cdf[-1]), dtype=torch.float64)
    special = torch.cat([cdf, edges, torch.nextafter(cdf, down), torch.nextafter(cdf, up), torch.nextafter(edges, down),
                         torch.nextafter(edges, up), torch.tensor([0.0, float(cdf[-1])], dtype=torch.float64)])
    for u in (torch.rand(200_000, generator=g, dtype=torch.float64) * cdf[-1], special.clamp(0.0, float(cdf[-1]))):
        got = inverse_cdf(cdf, u, guide)
        assert torch.equal(got, torch.searchsorted(cdf, u, right=True))
    drawn = inverse_cdf(cdf, torch.rand(200_000, generator=g, dtype=torch.float64) * cdf[-1], guide)
    assert (weights[drawn.clamp(max=num_items - 1)] > 0).all()
