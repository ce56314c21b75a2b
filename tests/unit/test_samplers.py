"""The four negative-sampling strategies (issue 5): uniform, popularity, in_batch, hard.

References are independent: hand-computed chi-square / total-variation statistics against the intended
distribution (no scipy), python-set brute force for rejection and in-batch masks, a python loop for the
hard-negative arg-max, dense formulas for the masked BPR loss and regulariser.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

import recsys.data.bpr_batches as bpr_batches
import recsys.sampling as sampling
from recsys.data.bpr_batches import BPREpochSampler
from recsys.errors import ConfigError, DataError
from recsys.info import DatasetInfo, UserItemCSR
from recsys.losses import bpr_loss, embedding_l2
from recsys.models.components.lightgcn import LightGCNEncoder
from recsys.models.graph_module import (
    GraphRecommender,
    batch_negative_scores,
    l2_row_weights,
    select_hard_negatives,
)
from recsys.sampling import (
    HardNegativeSampler,
    InBatchNegativeSampler,
    NegativeSampler,
    PopularityNegativeSampler,
    SessionNegativeSampler,
    StepNegatives,
    UniformNegativeSampler,
    sampling_generator,
)

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "sampler"


# ---------------------------------------------------------------------------------------------- helpers
def csr_from_sets(sets: list[set[int]], num_items: int) -> UserItemCSR:
    u = torch.tensor([uu for uu, s in enumerate(sets) for _ in s], dtype=torch.long)
    i = torch.tensor([ii for s in sets for ii in sorted(s)], dtype=torch.long)
    return UserItemCSR.from_pairs(u, i, len(sets), num_items)


def random_sets(seed: int, num_users: int, num_items: int, max_frac: float = 1.0) -> list[set[int]]:
    """Random train sets, degrees 1 .. num_items-1 (some users nearly full), skewed item popularity."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, num_items + 1) ** 0.8
    weights /= weights.sum()
    sets = []
    for _ in range(num_users):
        deg = int(rng.integers(1, max(2, int(max_frac * (num_items - 1)) + 1)))
        sets.append({int(i) for i in rng.choice(num_items, size=deg, replace=False, p=weights)})
    return sets


def chi_square(observed: np.ndarray, expected: np.ndarray) -> float:
    return float(np.sum((observed - expected) ** 2 / expected))


def generous_critical(df: int) -> float:
    """mean + 7 standard deviations of χ²(df): far beyond the 0.999 quantile, far below a real bias."""
    return df + 7 * math.sqrt(2 * df)


def assert_distribution(draws: torch.Tensor, probs: np.ndarray, tv_bound: float = 0.02) -> None:
    """Chi-square (over items with positive probability) and total variation against ``probs``."""
    n = draws.numel()
    counts = np.bincount(draws.numpy(), minlength=probs.size).astype(float)
    assert counts[probs == 0].sum() == 0, "an item with probability 0 was drawn"
    support = probs > 0
    assert chi_square(counts[support], n * probs[support]) < generous_critical(int(support.sum()) - 1)
    assert 0.5 * np.abs(counts / n - probs).sum() < tv_bound


def batch_sets(batch: dict[str, torch.Tensor]) -> list[tuple[int, int]]:
    return list(zip(batch["users"].tolist(), batch["pos_items"].tolist(), strict=True))


SKEWED_COUNTS = [{0, 1, 2, 3, 4, 5, 6, 7}, {0, 1, 2, 3}, {0, 1}, {0}, {8}, {9, 10}, {0, 11}, set()]
NUM_ITEMS_SKEWED = 14  # items 12, 13 have count 0


def skewed_train() -> tuple[UserItemCSR, np.ndarray]:
    train = csr_from_sets(SKEWED_COUNTS, NUM_ITEMS_SKEWED)
    counts = np.bincount(train.indices.numpy(), minlength=NUM_ITEMS_SKEWED).astype(float)
    return train, counts


# ---------------------------------------------------------------------------------------------- proposal
def test_uniform_proposal_frequencies():
    train, _ = skewed_train()
    sampler = UniformNegativeSampler().bind(train)
    draws = sampler.propose(200_000, torch.Generator().manual_seed(0))
    assert draws.dtype == torch.int64 and draws.shape == (200_000,)
    assert_distribution(draws, np.full(NUM_ITEMS_SKEWED, 1 / NUM_ITEMS_SKEWED))


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_popularity_proposal_frequencies(alpha):
    train, counts = skewed_train()
    sampler = PopularityNegativeSampler(alpha=alpha).bind(train)
    probs = counts**alpha if alpha > 0 else np.ones_like(counts)
    probs /= probs.sum()
    draws = sampler.propose(200_000, torch.Generator().manual_seed(1))
    assert_distribution(draws, probs)
    np.testing.assert_allclose(sampler.proposal_weights().numpy() / sampler.proposal_weights().sum().item(), probs)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_popularity_rejection_is_the_conditional_distribution(alpha):
    """Rejection sampling for user 1 = the proposal restricted to the complement of its positives."""
    train, counts = skewed_train()
    sampler = PopularityNegativeSampler(num_negatives=4, alpha=alpha).bind(train)
    draws = sampler.sample(torch.full((50_000,), 1), torch.Generator().manual_seed(2)).reshape(-1)
    probs = counts**alpha if alpha > 0 else np.ones_like(counts)
    probs[sorted(SKEWED_COUNTS[1])] = 0
    probs /= probs.sum()
    assert_distribution(draws, probs)


def test_bind_with_item_counts_only():
    """The session path: no CSR, proposal from item counts; sample() needs a CSR."""
    counts = torch.tensor([5, 0, 1, 2, 8])
    sampler = PopularityNegativeSampler(alpha=0.5, n_sample=7).bind(item_counts=counts)
    assert sampler.num_items == 5 and sampler.n_sample == 7 and sampler.alpha == 0.5
    probs = counts.double().pow(0.5).numpy()
    assert_distribution(sampler.propose(100_000, torch.Generator().manual_seed(3)), probs / probs.sum())
    with pytest.raises(RuntimeError):
        sampler.sample(torch.tensor([0]), torch.Generator())
    uniform = UniformNegativeSampler().bind(num_items=9)
    assert uniform.propose(1000, torch.Generator().manual_seed(0)).max() < 9
    with pytest.raises(DataError):
        PopularityNegativeSampler(alpha=1.0).bind(num_items=9)
    with pytest.raises(DataError):
        PopularityNegativeSampler().bind(item_counts=torch.zeros(4))
    with pytest.raises(DataError):
        NegativeSampler().bind()


def test_bad_config_values():
    for bad in (lambda: UniformNegativeSampler(0), lambda: PopularityNegativeSampler(alpha=-1.0),
                lambda: HardNegativeSampler(candidates=0), lambda: InBatchNegativeSampler(num_negatives=0),
                lambda: UniformNegativeSampler(n_sample=-1)):
        with pytest.raises(ConfigError):
            bad()


def test_bind_rejects_users_without_a_possible_negative():
    # uniform: user 1 has every item
    with pytest.raises(DataError, match="user 1"):
        UniformNegativeSampler().bind(csr_from_sets([{0}, {0, 1, 2}], 3))
    # popularity (alpha > 0): user 0 has every item with a positive count (item 3 has count 0)
    with pytest.raises(DataError, match="user 0"):
        PopularityNegativeSampler(alpha=1.0).bind(csr_from_sets([{0, 1, 2}, {1}], 4))
    # alpha = 0 proposes every item, so the same data is fine
    PopularityNegativeSampler(alpha=0.0).bind(csr_from_sets([{0, 1, 2}, {1}], 4))


# ---------------------------------------------------------------------------------------------- rejection
def make_sampler(name: str, num_negatives: int = 2, n_sample: int = 0) -> NegativeSampler:
    return {
        "uniform": lambda: UniformNegativeSampler(num_negatives, n_sample=n_sample),
        "pop05": lambda: PopularityNegativeSampler(num_negatives, alpha=0.5, n_sample=n_sample),
        "pop1": lambda: PopularityNegativeSampler(num_negatives, alpha=1.0, n_sample=n_sample),
        "hard": lambda: HardNegativeSampler(num_negatives, candidates=3, n_sample=n_sample),
        "hard_pop": lambda: HardNegativeSampler(num_negatives, candidates=3, alpha=0.75, n_sample=n_sample),
        "in_batch": lambda: InBatchNegativeSampler(n_sample=n_sample, alpha=0.5),
    }[name]()


@pytest.mark.parametrize("name", ["uniform", "pop05", "pop1", "hard", "hard_pop"])
@pytest.mark.parametrize("seed", range(8))
def test_no_positive_is_ever_returned(name, seed):
    """Property test over random graphs (some users nearly full: exercises the exact fallback)."""
    num_items = 6 + 2 * seed
    sets = random_sets(seed, 12 + seed, num_items)
    # two extra users holding the even / odd items: every item has count >= 1, so under alpha > 0 every
    # user (degree <= num_items - 1) still has a proposable negative
    sets += [set(range(0, num_items, 2)), set(range(1, num_items, 2))]
    num_users = len(sets)
    train = csr_from_sets(sets, num_items)
    sampler = make_sampler(name, n_sample=5).bind(train)
    g = torch.Generator().manual_seed(seed)
    users = torch.randint(num_users, (300,), generator=g)
    users = users[train.degrees[users] > 0]
    pos = torch.tensor([min(sets[u]) for u in users.tolist()], dtype=torch.long)
    out = sampler.batch_negatives(users, pos, g)
    per_row = out["neg_candidates"].flatten(1) if "neg_candidates" in out else out["neg_items"]
    assert per_row.shape == (users.numel(), 2 * (3 if name.startswith("hard") else 1))
    for u, row in zip(users.tolist(), per_row.tolist(), strict=True):
        assert not set(row) & sets[u]
    # shared extras: masked exactly where they are the row's positives
    shared, mask = out["neg_shared"], out["neg_shared_mask"]
    ref = [[item not in sets[u] for item in shared.tolist()] for u in users.tolist()]
    assert mask.tolist() == ref


def test_exact_fallback_for_nearly_full_users(monkeypatch):
    """With no rejection rounds at all, the dense fallback alone must return the only negative."""
    monkeypatch.setattr(sampling, "MAX_REJECTION_ROUNDS", 0)
    num_items = 25
    sets = [set(range(num_items)) - {7}, set(range(num_items)) - {3, 19}, {0}]
    sampler = PopularityNegativeSampler(num_negatives=3, alpha=0.0).bind(csr_from_sets(sets, num_items))
    neg = sampler.sample(torch.tensor([0, 1, 2] * 200), torch.Generator().manual_seed(0))
    assert neg[0::3].eq(7).all()
    assert set(neg[1::3].reshape(-1).tolist()) == {3, 19}
    assert not neg[2::3].eq(0).any()


# ---------------------------------------------------------------------------------------------- in_batch
def in_batch_reference(users, pos, extras, sets, keep=None):
    """Brute force: row b may use column j (j < B: another row's positive; j ≥ B: an extra) iff j is not b,
    (for j < B) j is among the kept other rows, and the item is not one of user b's train positives."""
    shared = list(pos) + list(extras)
    b = len(users)
    return [
        [
            (j != r) and (j >= b or keep is None or j in keep[r]) and shared[j] not in sets[users[r]]
            for j in range(len(shared))
        ]
        for r in range(b)
    ]


@pytest.mark.parametrize("n_sample", [0, 6])
@pytest.mark.parametrize("seed", range(4))
def test_in_batch_mask_matches_brute_force(seed, n_sample):
    num_users, num_items = 9, 15
    sets = random_sets(seed + 10, num_users, num_items, max_frac=0.5)
    train = csr_from_sets(sets, num_items)
    sampler = InBatchNegativeSampler(n_sample=n_sample, alpha=1.0).bind(train)
    g = torch.Generator().manual_seed(seed)
    users = torch.randint(num_users, (13,), generator=g)  # repeated users and repeated items on purpose
    pos = torch.tensor([sorted(sets[u])[k % len(sets[u])] for k, u in enumerate(users.tolist())])
    out = sampler.batch_negatives(users, pos, g)
    assert set(out) == {"neg_shared", "neg_shared_mask"}
    shared, mask = out["neg_shared"], out["neg_shared_mask"]
    assert shared.shape == (13 + n_sample,) and mask.shape == (13, 13 + n_sample)
    assert torch.equal(shared[:13], pos)
    ref = in_batch_reference(users.tolist(), pos.tolist(), shared[13:].tolist(), sets)
    assert mask.tolist() == ref
    # collisions exist in this batch, so masking is exercised
    assert not all(all(row[:r] + row[r + 1 : 13]) for r, row in enumerate(ref))


def test_in_batch_with_k_negatives_keeps_k_other_rows():
    num_users, num_items = 40, 400
    sets = random_sets(3, num_users, num_items, max_frac=0.01)
    sampler = InBatchNegativeSampler(num_negatives=5).bind(csr_from_sets(sets, num_items))
    g = torch.Generator().manual_seed(0)
    users = torch.arange(32)
    pos = torch.tensor([min(sets[u]) for u in range(32)])
    mask = sampler.batch_negatives(users, pos, g)["neg_shared_mask"]
    # the kept other rows are (b + s) mod B for 5 distinct shifts shared by the batch
    shifts = {(int(j) - 0) % 32 for j in mask[0].nonzero().squeeze(1)}
    keep = [{(r + s) % 32 for s in shifts} for r in range(32)]
    ref = in_batch_reference(users.tolist(), pos.tolist(), [], sets, keep=keep)
    assert mask.tolist() == ref
    assert 0 not in shifts and len(shifts) <= 5
    assert int(mask.sum(1).max()) == 5


def test_in_batch_single_row_batch_has_no_negatives():
    sets = [{0}, {1}]
    sampler = InBatchNegativeSampler().bind(csr_from_sets(sets, 4))
    out = sampler.batch_negatives(torch.tensor([0]), torch.tensor([0]), torch.Generator())
    assert out["neg_shared_mask"].shape == (1, 1) and not out["neg_shared_mask"].any()


# ---------------------------------------------------------------------------------------------- hard
def test_hard_selection_is_argmax_under_stub_scorer():
    """1-d embeddings with user = 1: the score of an item is its own stub value."""
    g = torch.Generator().manual_seed(0)
    stub = torch.randperm(50, generator=g).double()  # distinct scores
    user_emb, item_emb = torch.ones(4, 1, dtype=torch.float64), stub[:, None]
    users = torch.tensor([0, 3, 1])
    cands = torch.randint(50, (3, 2, 7), generator=g)
    got = select_hard_negatives(user_emb[users], item_emb, cands)
    ref = [[max(row, key=lambda i: stub[i].item()) for row in per_b] for per_b in cands.tolist()]
    assert got.tolist() == ref


def test_hard_selection_random_embeddings_and_no_gradient():
    g = torch.Generator().manual_seed(1)
    user_emb = torch.randn(6, 4, generator=g, requires_grad=True)
    item_emb = torch.randn(30, 4, generator=g, requires_grad=True)
    users = torch.tensor([5, 0, 0, 2])
    cands = torch.randint(30, (4, 3, 5), generator=g)
    got = select_hard_negatives(user_emb[users], item_emb, cands)
    assert not got.requires_grad and got.shape == (4, 3)
    ue, ie = user_emb.detach().numpy(), item_emb.detach().numpy()
    for b, u in enumerate(users.tolist()):
        for n in range(3):
            scores = [float(ue[u] @ ie[c]) for c in cands[b, n].tolist()]
            assert got[b, n].item() == cands[b, n, int(np.argmax(scores))].item()


def test_hard_ties_go_to_first_candidate():
    user_emb, item_emb = torch.ones(1, 1), torch.tensor([[1.0], [1.0], [0.0]])
    got = select_hard_negatives(user_emb[torch.tensor([0])], item_emb, torch.tensor([[[2, 1, 0]]]))
    assert got.item() == 1


def test_hard_candidates_shape():
    sets = random_sets(0, 10, 40, max_frac=0.3)
    sampler = HardNegativeSampler(num_negatives=2, candidates=5).bind(csr_from_sets(sets, 40))
    out = sampler.batch_negatives(torch.arange(10), torch.tensor([min(s) for s in sets]), torch.Generator())
    assert set(out) == {"neg_candidates"} and out["neg_candidates"].shape == (10, 2, 5)


# ---------------------------------------------------------------------------------------------- epochs, DDP
ALL = ["uniform", "pop1", "in_batch", "hard"]


def epoch_batches(name, train, seed=0, epoch=0, batch_size=16, num_samples=None):
    sampler = BPREpochSampler(train, make_sampler(name, n_sample=3).bind(train), batch_size, seed, num_samples)
    sampler.set_epoch(epoch)
    chunks = list(iter(sampler))
    assert all(len(chunk) == 1 for chunk in chunks)  # steps_per_chunk=1: one batch per chunk
    return [chunk[0] for chunk in chunks]


@pytest.mark.parametrize("name", ALL)
def test_determinism_for_fixed_seed(name):
    train = csr_from_sets(random_sets(5, 25, 30, max_frac=0.4), 30)
    a, b = epoch_batches(name, train, seed=7, epoch=2), epoch_batches(name, train, seed=7, epoch=2)
    assert len(a) == len(b) > 1
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        assert all(torch.equal(x[k], y[k]) for k in x)
    c = epoch_batches(name, train, seed=7, epoch=3)
    neg_key = next(k for k in a[0] if k.startswith("neg_") and not k.endswith("mask"))
    assert not all(torch.equal(x[neg_key], y[neg_key]) for x, y in zip(a, c, strict=False))


def test_sampling_generator_depends_on_every_word():
    def first(*args):
        return torch.randint(1 << 30, (4,), generator=sampling_generator(*args)).tolist()

    base = first(1, 2, 0)
    assert base == first(1, 2, 0)
    assert len({tuple(base), tuple(first(2, 2, 0)), tuple(first(1, 3, 0)), tuple(first(1, 2, 1))}) == 4


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("world", [2, 3])
def test_ddp_shards_are_disjoint_and_cover_the_epoch(monkeypatch, name, world):
    sets = random_sets(8, 30, 40, max_frac=0.3)
    train = csr_from_sets(sets, 40)
    sampler = BPREpochSampler(train, make_sampler(name, n_sample=3).bind(train), batch_size=8, seed=4)
    sampler.set_epoch(2)
    full = sampler.draw_epoch()
    n = full["users"].numel()
    shards = []
    for rank in range(world):
        monkeypatch.setattr(bpr_batches, "distributed_rank_and_world", lambda rank=rank: (rank, world))
        chunks = list(iter(sampler))
        batches = [b for chunk in chunks for b in chunk]
        assert len(chunks) == len(batches) == len(sampler) == sampler.num_batches()
        assert all(0 < b["users"].numel() <= 8 for b in batches)
        shard = {k: torch.cat([b[k] for b in batches]) for k in ("users", "pos_items")}
        # the shard is the index slice rank::world of the common epoch: disjoint, and together they cover it
        assert torch.equal(shard["users"], full["users"][rank::world])
        assert torch.equal(shard["pos_items"], full["pos_items"][rank::world])
        shards.append(shard["users"].numel())
        # the negatives come from the (seed, epoch, rank) generator, consumed batch after batch
        g = sampling_generator(4, 2, rank)
        for b in batches:
            again = sampler.negative_sampler.batch_negatives(b["users"], b["pos_items"], g)
            assert again.keys() == b.keys() - {"users", "pos_items"}
            assert all(torch.equal(again[k], b[k]) for k in again)
        for b in batches:  # per-rank negatives are still valid
            if "neg_items" in b:
                for u, row in zip(b["users"].tolist(), b["neg_items"].tolist(), strict=True):
                    assert not set(row) & sets[u]
    assert sum(shards) == n


# ---------------------------------------------------------------------------------------------- losses
def test_masked_bpr_loss_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    pos, neg = torch.randn(5, generator=g), torch.randn(5, 4, generator=g)
    mask = torch.rand(5, 4, generator=g) > 0.4
    terms = [math.log1p(math.exp(neg[b, j] - pos[b])) for b in range(5) for j in range(4) if mask[b, j]]
    assert float(bpr_loss(pos, neg, mask)) == pytest.approx(sum(terms) / len(terms), rel=1e-6)
    every = [math.log1p(math.exp(neg[b, j] - pos[b])) for b in range(5) for j in range(4)]
    assert float(bpr_loss(pos, neg, torch.ones(5, 4, dtype=torch.bool))) == pytest.approx(sum(every) / 20, rel=1e-6)
    assert float(bpr_loss(pos, neg, torch.zeros(5, 4, dtype=torch.bool))) == 0.0


def test_l2_row_weights_match_the_row_by_row_formula():
    """embedding_l2 with l2_row_weights equals ½ Σ_b (‖e_u‖² + ‖e_i‖² + mean over the row's valid negatives
    ‖e_j‖²) / B, the squared norms summed element by element in Python: per-row and masked shared negatives
    together, a row with no valid shared negative, and repeated nodes."""
    g = torch.Generator().manual_seed(0)
    table = torch.randn(9, 3, generator=g, dtype=torch.float64)
    users, pos = torch.tensor([0, 1, 1, 2, 3, 0]), torch.tensor([4, 5, 4, 6, 7, 8])
    per_row = torch.randint(9, (6, 2), generator=g)
    shared = torch.tensor([4, 5, 6, 8])
    smask = torch.rand(6, 4, generator=g) > 0.5
    smask[2] = False
    rows = table.tolist()
    sq = lambda r: sum(x * x for x in rows[r])  # noqa: E731
    for keys in (("neg_items",), ("neg_shared",), ("neg_items", "neg_shared")):
        local = {"users": users, "pos_items": pos}
        if "neg_items" in keys:
            local["neg_items"] = per_row
        if "neg_shared" in keys:
            local["neg_shared"] = shared
        total = 0.0
        for b in range(6):
            negs = per_row[b].tolist() if "neg_items" in keys else []
            if "neg_shared" in keys:
                negs += [s for s, ok in zip(shared.tolist(), smask[b].tolist(), strict=True) if ok]
            neg_term = sum(sq(j) for j in negs) / len(negs) if negs else 0.0
            total += 0.5 * (sq(int(users[b])) + sq(int(pos[b])) + neg_term)
        got = embedding_l2(table, l2_row_weights(9, local, smask if "neg_shared" in keys else None, table.dtype), 6)
        assert float(got) == pytest.approx(total / 6, rel=1e-12), keys
    # hand case: B = 2, squared norms (1, 4, 9) and (0, 2, 5) on rows of their own → ½ (1 + 4 + 9 + 0 + 2 + 5) / 2
    hand = torch.tensor([[1.0], [0.0], [2.0], [2.0**0.5], [3.0], [5.0**0.5]])
    local = {"users": torch.tensor([0, 1]), "pos_items": torch.tensor([2, 3]), "neg_items": torch.tensor([[4], [5]])}
    assert float(embedding_l2(hand, l2_row_weights(6, local), 2)) == pytest.approx(21 / 4)


def test_batch_negative_scores_matches_dense_reference():
    g = torch.Generator().manual_seed(2)
    ue, ie = torch.randn(7, 4, generator=g), torch.randn(20, 4, generator=g)
    users = torch.tensor([0, 3, 3, 6])
    per_row = torch.randint(20, (4, 2), generator=g)
    shared = torch.randint(20, (5,), generator=g)
    smask = torch.rand(4, 5, generator=g) > 0.5
    smask[0] = False
    scores, mask = batch_negative_scores(ue[users], ie[per_row], ie[shared], smask)
    items = torch.cat([per_row, shared.expand(4, -1)], 1)
    full_mask = torch.cat([torch.ones(4, 2, dtype=torch.bool), smask], 1)
    for b in range(4):
        for j in range(7):
            assert float(scores[b, j]) == pytest.approx(float(ue[users[b]] @ ie[items[b, j]]), abs=1e-5)
    assert torch.equal(mask, full_mask)
    # in-batch only: the mask passes through
    scores, mask = batch_negative_scores(ue[users], shared=ie[shared], shared_mask=smask)
    assert scores.shape == (4, 5) and torch.equal(mask, smask)
    # per-row only: no mask
    scores, mask = batch_negative_scores(ue[users], ie[per_row])
    assert mask is None and torch.allclose(scores, (ue[users][:, None] * ie[per_row]).sum(-1))
    with pytest.raises(KeyError):
        batch_negative_scores(ue[users])


def test_hard_batch_loss_scores_the_arg_max_candidate_and_regularises_it():
    """GraphRecommender.batch_loss with neg_candidates equals the loss of the batch whose negatives are the
    arg-max candidates chosen by hand from the final embeddings."""
    sets = random_sets(3, 12, 30, max_frac=0.3)
    train = csr_from_sets(sets, 30)
    info = DatasetInfo(12, 30, train)
    torch.manual_seed(0)
    model = GraphRecommender(info, encoder=functools.partial(LightGCNEncoder), optimizer=functools.partial(torch.optim.Adam),
                             embedding_dim=4, num_layers=2)
    users = torch.tensor([0, 3, 3, 7, 11])
    pos = torch.tensor([min(sets[u]) for u in users.tolist()])
    cands = torch.randint(30, (5, 1, 6), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ue, ie = model()
    chosen = cands[torch.arange(5), 0, (ue[users][:, None, :] * ie[cands[:, 0]]).sum(-1).argmax(-1)]
    hard = model.batch_loss({"users": users, "pos_items": pos, "neg_candidates": cands})
    plain = model.batch_loss({"users": users, "pos_items": pos, "neg_items": chosen[:, None]})
    torch.testing.assert_close(torch.stack(hard), torch.stack(plain))


# ---------------------------------------------------------------------------------------------- end to end
def tiny_info(seed: int = 0) -> DatasetInfo:
    sets = random_sets(seed, 60, 50, max_frac=0.15)
    return DatasetInfo(60, 50, csr_from_sets(sets, 50))


@pytest.mark.parametrize("name", ["uniform", "pop1", "in_batch", "hard"])
def test_graph_recommender_trains_with_every_strategy(monkeypatch, name):
    torch.manual_seed(0)
    info = tiny_info()
    model = GraphRecommender(
        info,
        encoder=functools.partial(LightGCNEncoder),
        optimizer=functools.partial(torch.optim.Adam, lr=0.02),
        reg_weight=1e-4,
        embedding_dim=16,
        num_layers=2,
    )
    monkeypatch.setattr(model, "log", lambda *a, **k: None)
    opt = model.configure_optimizers()
    sampler = BPREpochSampler(info.train, make_sampler(name, num_negatives=2).bind(info.train), batch_size=64)
    losses = []
    for epoch in range(40):
        sampler.set_epoch(epoch)
        batch = next(iter(sampler))[0]
        loss, _ = model.batch_loss(batch)
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])


# ---------------------------------------------------------------------------------------------- configs
@pytest.mark.parametrize(
    "name, cls",
    [("uniform", UniformNegativeSampler), ("popularity", PopularityNegativeSampler),
     ("in_batch", InBatchNegativeSampler), ("hard", HardNegativeSampler)],
)
def test_sampler_configs_instantiate(name, cls):
    cfg = OmegaConf.load(CONFIG_DIR / f"{name}.yaml")
    sampler = instantiate(cfg)
    assert type(sampler) is cls
    assert sampler.n_sample == 0 and isinstance(sampler.alpha, float)
    if name == "popularity":
        assert sampler.alpha == 1.0
    if name == "hard":
        assert sampler.candidates >= 2
    if name == "in_batch":
        assert sampler.num_negatives is None


def test_gru4rec_sampler_config_is_the_session_sampler():
    sampler = instantiate(OmegaConf.load(CONFIG_DIR / "gru4rec.yaml"))
    assert type(sampler) is SessionNegativeSampler
    assert sampler.n_sample == 2048 and sampler.alpha == 0.5
    # its proposal is ∝ supp^alpha over the session items
    counts = torch.tensor([4, 0, 1, 9, 16])
    sampler = SessionNegativeSampler(n_sample=8, alpha=0.5).bind(item_counts=counts)
    np.testing.assert_allclose(sampler.proposal_weights().numpy(), counts.double().sqrt().numpy())
    # for session data only (graph data with it is refused by recsys.validation, tested there)
    assert SessionNegativeSampler.data_kind == "session" and getattr(UniformNegativeSampler, "data_kind", None) is None


# ---------------------------------------------------------------------------------------------- session steps
SESSION_COUNTS = torch.tensor([30, 0, 1, 4, 9, 16, 25, 2, 0, 7, 50, 3])


def step_sampler(n_sample: int = 5, alpha: float = 0.75) -> SessionNegativeSampler:
    return SessionNegativeSampler(n_sample=n_sample, alpha=alpha).bind(item_counts=SESSION_COUNTS)


def test_step_negatives_do_not_depend_on_how_the_steps_are_requested():
    sampler = step_sampler()
    whole, whole_q = StepNegatives(sampler, seed=3, epoch=1).steps(0, 200)
    assert whole.shape == whole_q.shape == (200, 5) and whole.dtype == torch.int64
    # one instance asked for consecutive ranges, and one asked out of order (blocks drawn again on demand)
    same = StepNegatives(sampler, seed=3, epoch=1)
    parts = [same.steps(0, 70), same.steps(70, 130), same.steps(130, 200)]
    assert torch.equal(torch.cat([p[0] for p in parts]), whole)
    assert torch.equal(torch.cat([p[1] for p in parts]), whole_q)
    shuffled = StepNegatives(sampler, seed=3, epoch=1)
    later, first = shuffled.steps(130, 200), shuffled.steps(0, 70)
    assert torch.equal(later[0], whole[130:]) and torch.equal(first[0], whole[:70])
    for lo, hi in ((63, 65), (64, 128), (5, 6), (199, 200)):  # across and at block boundaries
        assert torch.equal(StepNegatives(sampler, 3, 1).steps(lo, hi)[0], whole[lo:hi])
    # a fresh instance draws the same; another epoch, seed or rank draws others
    assert torch.equal(StepNegatives(sampler, seed=3, epoch=1).steps(0, 200)[0], whole)
    for other in (StepNegatives(sampler, 3, 2), StepNegatives(sampler, 4, 1), StepNegatives(sampler, 3, 1, rank=1)):
        assert not torch.equal(other.steps(0, 200)[0], whole)
    # block k is one proposal of BLOCK_STEPS × n_sample ids from the (seed, epoch, rank, 6, k) generator
    block = StepNegatives.BLOCK_STEPS
    g = sampling_generator(3, 1, 0, 6, 1)
    assert torch.equal(whole[block : 2 * block], sampler.propose(block * 5, g).view(block, 5))


def test_step_negatives_log_q_is_the_log_proposal_weight():
    sampler = step_sampler(alpha=0.75)
    ids, log_q = StepNegatives(sampler, seed=0, epoch=0).steps(0, 300)
    weights = SESSION_COUNTS.double().pow(0.75)  # supp^alpha, written independently of the sampler
    assert (weights[ids] > 0).all()  # items without support are never drawn
    torch.testing.assert_close(log_q.double(), weights[ids].log(), rtol=1e-6, atol=1e-6)
    uniform = SessionNegativeSampler(n_sample=4, alpha=0.0).bind(item_counts=SESSION_COUNTS)
    ids, log_q = StepNegatives(uniform, seed=0, epoch=0).steps(0, 10)
    assert torch.equal(log_q, torch.zeros(10, 4))  # log 1: the same for every item


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_step_negatives_follow_the_proposal(alpha):
    """Chi-square and total variation of all the draws of an epoch against ``supp^alpha`` (0 = uniform)."""
    sampler = step_sampler(n_sample=20, alpha=alpha)
    ids, _ = StepNegatives(sampler, seed=1, epoch=0).steps(0, 6400)
    weights = np.ones(len(SESSION_COUNTS)) if alpha == 0 else SESSION_COUNTS.double().pow(alpha).numpy()
    assert_distribution(ids.reshape(-1), weights / weights.sum())
