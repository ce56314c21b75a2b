"""TopKMetrics / rank_topk / topk_excluding / TopKRecommender.evaluate_batch against a brute-force numpy reference.

Reference protocol (algorithms.md §1.6): rank all items by (score desc, item id asc), masked items at −∞;
recall = hits/|T_u|, precision = hits/K, hit_rate = [hits>0], ndcg with IDCG over min(K, |T_u|),
mrr = 1/first hit rank (0 if none in top K); mean over users with |T_u| ≥ 1 only.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import recsys.models.ranking_module as ranking_module
from recsys.data.eval_batches import RankingEvalSet
from recsys.info import UserItemCSR
from recsys.metrics import METRIC_NAMES, TopKMetrics, rank_topk, topk_excluding
from recsys.models.ranking_module import TopKRecommender

KS = (1, 3, 5, 10)


# ---------------------------------------------------------------------------------------------- reference
def ref_ranking(scores: np.ndarray) -> np.ndarray:
    """Full ranking of every row: score descending, then item id ascending (np.lexsort: last key primary)."""
    n_items = scores.shape[1]
    ids = np.arange(n_items)
    return np.stack([np.lexsort((ids, -row)) for row in scores])


def ref_metrics(scores: np.ndarray, mask: np.ndarray, targets: list[set[int]], ks=KS) -> dict[str, float]:
    s = scores.astype(np.float64).copy()
    s[mask] = -np.inf
    ranking = ref_ranking(s)
    totals = {f"{m}@{k}": 0.0 for m in METRIC_NAMES for k in ks}
    n_users = 0
    for u, t in enumerate(targets):
        if not t:
            continue
        n_users += 1
        for k in ks:
            top = ranking[u, :k]
            hits = [int(i) in t for i in top]
            n_hit = sum(hits)
            totals[f"recall@{k}"] += n_hit / len(t)
            totals[f"precision@{k}"] += n_hit / k
            totals[f"hit_rate@{k}"] += 1.0 if n_hit else 0.0
            dcg = sum(1.0 / math.log2(r + 2) for r, h in enumerate(hits) if h)
            idcg = sum(1.0 / math.log2(r + 2) for r in range(min(k, len(t))))
            totals[f"ndcg@{k}"] += dcg / idcg
            first = next((r for r, h in enumerate(hits) if h), None)
            totals[f"mrr@{k}"] += 0.0 if first is None else 1.0 / (first + 1)
    assert n_users > 0
    return {key: v / n_users for key, v in totals.items()}


def random_problem(seed: int, n_users: int = 40, n_items: int = 30, tie_range: int | None = None):
    """Random scores, disjoint random mask (train) and target sets; some users without targets, some with
    fewer targets than K, some with more."""
    rng = np.random.default_rng(seed)
    if tie_range is None:
        scores = rng.standard_normal((n_users, n_items)).astype(np.float32)
    else:
        scores = rng.integers(0, tie_range, size=(n_users, n_items)).astype(np.float32)
    mask = np.zeros((n_users, n_items), dtype=bool)
    targets: list[set[int]] = []
    for u in range(n_users):
        perm = rng.permutation(n_items)
        n_mask = int(rng.integers(0, 12))
        mask[u, perm[:n_mask]] = True
        # 0 targets for ~1/6 of users, otherwise 1..15 (both < K=10 and > K)
        n_t = 0 if u % 6 == 0 else int(rng.integers(1, 16))
        targets.append({int(i) for i in perm[n_mask : n_mask + n_t]})
    return scores, mask, targets


def hits_from_ranking(top: np.ndarray, targets: list[set[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    hits = torch.tensor([[int(i) in targets[u] for i in row] for u, row in enumerate(top)], dtype=torch.bool)
    n_rel = torch.tensor([len(t) for t in targets])
    return hits, n_rel


def assert_metrics_close(got: dict[str, torch.Tensor], want: dict[str, float], atol: float = 1e-6) -> None:
    assert set(got) == set(want)
    for key, value in want.items():
        assert float(got[key]) == pytest.approx(value, abs=atol), key


# ---------------------------------------------------------------------------------------------- TopKMetrics
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("tie_range", [None, 3])
def test_topk_metrics_match_reference_given_reference_ranking(seed, tie_range):
    scores, mask, targets = random_problem(seed, tie_range=tie_range)
    s = scores.astype(np.float64)
    s[mask] = -np.inf
    top = ref_ranking(s)[:, : max(KS)]
    hits, n_rel = hits_from_ranking(top, targets)
    metric = TopKMetrics(KS)
    metric.update(hits, n_rel)
    assert int(metric.count) == sum(1 for t in targets if t)
    assert_metrics_close(metric.compute(), ref_metrics(scores, mask, targets))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("tie_range", [None, 2, 4])
def test_rank_topk_plus_metrics_match_reference(seed, tie_range):
    scores, mask, targets = random_problem(seed, tie_range=tie_range)
    s = torch.from_numpy(scores).clone()
    s[torch.from_numpy(mask)] = -torch.inf
    top = rank_topk(s, max(KS)).numpy()
    hits, n_rel = hits_from_ranking(top, targets)
    metric = TopKMetrics(KS)
    # several updates (batches) accumulate
    for lo in range(0, len(targets), 7):
        metric.update(hits[lo : lo + 7], n_rel[lo : lo + 7])
    assert_metrics_close(metric.compute(), ref_metrics(scores, mask, targets))


def test_metrics_hand_computed_example():
    # one user, targets {items at ranks 2 and 4}, |T|=3 (third target outside the list)
    hits = torch.tensor([[False, True, False, True, False]])
    metric = TopKMetrics((1, 3, 5))
    metric.update(hits, torch.tensor([3]))
    out = metric.compute()
    d = [1 / math.log2(r + 1) for r in range(1, 6)]
    assert float(out["recall@1"]) == 0.0
    assert float(out["recall@3"]) == pytest.approx(1 / 3)
    assert float(out["recall@5"]) == pytest.approx(2 / 3)
    assert float(out["precision@5"]) == pytest.approx(2 / 5)
    assert float(out["hit_rate@1"]) == 0.0 and float(out["hit_rate@3"]) == 1.0
    assert float(out["mrr@1"]) == 0.0 and float(out["mrr@3"]) == pytest.approx(0.5)
    assert float(out["ndcg@3"]) == pytest.approx(d[1] / (d[0] + d[1] + d[2]))
    assert float(out["ndcg@5"]) == pytest.approx((d[1] + d[3]) / (d[0] + d[1] + d[2]))


def test_users_without_relevant_items_are_excluded():
    hits = torch.tensor([[True, False], [False, False], [False, False]])
    metric = TopKMetrics((1, 2))
    metric.update(hits, torch.tensor([1, 0, 2]))
    out = metric.compute()
    assert int(metric.count) == 2
    # user 0: recall@1 = 1; user 2: 0 → mean over 2 users (not 3)
    assert float(out["recall@1"]) == pytest.approx(0.5)
    assert float(out["hit_rate@2"]) == pytest.approx(0.5)
    # a batch with only zero-target users changes nothing
    metric.update(torch.tensor([[True, True]]), torch.tensor([0]))
    assert int(metric.count) == 2
    assert float(metric.compute()["recall@1"]) == pytest.approx(0.5)


def test_catalogue_smaller_than_k():
    rng = np.random.default_rng(5)
    n_users, n_items = 12, 7
    scores = rng.integers(0, 3, size=(n_users, n_items)).astype(np.float32)
    mask = np.zeros_like(scores, dtype=bool)
    mask[:, 0] = True
    targets = [{int(i) for i in rng.choice(np.arange(1, n_items), size=int(rng.integers(1, 5)), replace=False)}
               for _ in range(n_users)]
    s = torch.from_numpy(scores).clone()
    s[torch.from_numpy(mask)] = -torch.inf
    top = rank_topk(s, 10)
    assert top.shape == (n_users, n_items)
    hits, n_rel = hits_from_ranking(top.numpy(), targets)
    metric = TopKMetrics(KS)
    metric.update(hits, n_rel)
    assert_metrics_close(metric.compute(), ref_metrics(scores, mask, targets))


def test_metric_subset_and_names():
    metric = TopKMetrics((20, 5, 5), metrics=("recall", "mrr"))
    assert metric.ks == [5, 20]
    metric.update(torch.zeros(2, 20, dtype=torch.bool), torch.tensor([1, 1]))
    assert set(metric.compute()) == {"recall@5", "recall@20", "mrr@5", "mrr@20"}
    with pytest.raises(ValueError):
        TopKMetrics((10,), metrics=("recall", "auc"))
    with pytest.raises(ValueError):
        TopKMetrics((0, 10))


def test_update_has_no_floating_point_cumsum():
    """A floating-point cumsum has no deterministic CUDA kernel: it raises under trainer.deterministic=true."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class NoFloatCumsum(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.overloadpacket is torch.ops.aten.cumsum:
                assert not args[0].is_floating_point(), "floating-point cumsum"
            return func(*args, **(kwargs or {}))

    g = torch.Generator().manual_seed(0)
    hits = torch.rand(20, 10, generator=g) < 0.3
    metric = TopKMetrics((3, 10))
    with NoFloatCumsum():
        metric.update(hits, torch.randint(0, 4, (20,), generator=g))
    assert float(metric.count) > 0


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_summed_states_merge_like_ddp():
    scores, mask, targets = random_problem(11, n_users=50)
    s = torch.from_numpy(scores).clone()
    s[torch.from_numpy(mask)] = -torch.inf
    hits, n_rel = hits_from_ranking(rank_topk(s, max(KS)).numpy(), targets)

    full = TopKMetrics(KS)
    full.update(hits, n_rel)
    a, b = TopKMetrics(KS), TopKMetrics(KS)
    # rank 0 gets users 0::2, rank 1 gets 1::2 (the RankingEvalSet sharding), in two batches each
    for part, metric in ((slice(0, None, 2), a), (slice(1, None, 2), b)):
        h, n = hits[part], n_rel[part]
        metric.update(h[:10], n[:10])
        metric.update(h[10:], n[10:])
    merged = TopKMetrics(KS)
    merged.sums = a.sums + b.sums
    merged.count = a.count + b.count
    assert float(merged.count) == float(full.count)
    torch.testing.assert_close(merged.sums, full.sums, rtol=0, atol=1e-12)
    got = merged.compute()
    want = ref_metrics(scores, mask, targets)
    assert_metrics_close(got, want)
    # torchmetrics' own state merge (uses dist_reduce_fx="sum") agrees
    if hasattr(a, "merge_state"):
        a.merge_state(b)
        assert_metrics_close(a.compute(), want)


# ---------------------------------------------------------------------------------------------- rank_topk
@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("k", [1, 4, 10, 25])
def test_rank_topk_equals_lexsort_on_ties(seed, k):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 3, size=(20, 25)).astype(np.float32)
    # some rows with -inf entries, one row entirely -inf, one row constant
    scores[rng.random(scores.shape) < 0.2] = -np.inf
    scores[3] = -np.inf
    scores[4] = 1.0
    got = rank_topk(torch.from_numpy(scores), k).numpy()
    want = ref_ranking(scores)[:, :k]
    np.testing.assert_array_equal(got, want)


def test_rank_topk_k_larger_than_items_and_dtype():
    scores = torch.tensor([[0.5, 2.0, 2.0, -torch.inf], [1.0, 1.0, 1.0, 1.0]], dtype=torch.float64)
    top = rank_topk(scores, 10)
    assert top.shape == (2, 4)
    assert top.tolist() == [[1, 2, 0, 3], [0, 1, 2, 3]]
    assert top.dtype == torch.int64


def test_rank_topk_random_continuous_scores_match_argsort():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(30, 100, generator=g)
    got = rank_topk(scores, 17)
    want = torch.from_numpy(np.argsort(-scores.numpy(), axis=1, kind="stable")[:, :17])
    assert torch.equal(got, want)


@pytest.mark.parametrize("seed", range(3))
def test_topk_excluding_equals_the_reference_over_the_allowed_items(seed):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 4, size=(12, 9)).astype(np.float32)
    banned = rng.random(scores.shape) < 0.4
    banned[0] = True  # a row with nothing allowed: every column filled at −∞
    rows, cols = np.nonzero(banned)
    top, top_scores = topk_excluding(torch.from_numpy(scores.copy()), 5, (torch.from_numpy(rows), torch.from_numpy(cols)))
    masked = np.where(banned, -np.inf, scores)
    want = ref_ranking(masked)[:, :5]
    np.testing.assert_array_equal(top.numpy(), want)
    np.testing.assert_array_equal(top_scores.numpy(), np.take_along_axis(masked, want, 1))
    assert np.isneginf(top_scores[0].numpy()).all()


def test_topk_excluding_clamps_k_to_the_items_and_masks_in_place():
    scores = torch.tensor([[3.0, 1.0, 2.0]])
    top, top_scores = topk_excluding(scores, 10, (torch.tensor([0]), torch.tensor([0])))
    assert top.tolist() == [[2, 1, 0]] and top_scores.tolist() == [[2.0, 1.0, -math.inf]]
    assert scores[0, 0] == -math.inf  # the caller's buffer is the one masked (no copy of a B × N block)
    assert topk_excluding(torch.tensor([[1.0, 5.0]]), 1)[0].tolist() == [[1]]


# ---------------------------------------------------------------------------------------------- full pipeline
class FixedScores(TopKRecommender):
    def __init__(self, scores: torch.Tensor, topk=KS) -> None:
        super().__init__(topk)
        self.save_hyperparameters({"num_items": scores.shape[1]}, logger=False)
        self.fixed = scores

    def score_users(self, users: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        return self.fixed[users].clone() if out is None else out.copy_(self.fixed[users])


@pytest.mark.parametrize("score_block", [128, 3])  # one block per batch of 8 users, or three blocks (3 + 3 + 2)
@pytest.mark.parametrize("tie_range", [None, 3])
def test_evaluate_batch_matches_reference_and_masks(monkeypatch, tie_range, score_block):
    n_users, n_items = 45, 30
    scores, mask, targets = random_problem(7, n_users=n_users, n_items=n_items, tie_range=tie_range)
    # masked (train) items get the best raw scores, so a missing mask would change the metrics
    scores = scores.copy()
    scores[mask] = 100.0
    mu, mi = np.nonzero(mask)
    tu = np.array([u for u, t in enumerate(targets) for _ in t])
    ti = np.array([i for t in targets for i in sorted(t)])
    mask_csr = UserItemCSR.from_pairs(torch.from_numpy(mu), torch.from_numpy(mi), n_users, n_items)
    target_csr = UserItemCSR.from_pairs(torch.from_numpy(tu), torch.from_numpy(ti), n_users, n_items)
    eval_set = RankingEvalSet(mask_csr, target_csr, batch_size=8)
    assert eval_set.users.tolist() == [u for u, t in enumerate(targets) if t]

    rankings = []
    real_topk_excluding = ranking_module.topk_excluding

    def spy(s, k, exclude):
        out = real_topk_excluding(s, k, exclude)
        rankings.append(out[0])
        return out

    monkeypatch.setattr(ranking_module, "topk_excluding", spy)
    model = FixedScores(torch.from_numpy(scores))
    model.score_block_elements = score_block * n_items
    for idx in range(len(eval_set)):
        batch = eval_set[idx]
        before = len(rankings)
        model.evaluate_batch(batch, model.val_metrics)
        # masked items never appear in the ranking (every user keeps >= 10 unmasked items)
        top = torch.cat(rankings[before:])
        for row, u in enumerate(batch["users"].tolist()):
            assert not set(top[row].tolist()) & set(np.nonzero(mask[u])[0].tolist())
        assert len(rankings) - before == math.ceil(batch["users"].numel() / score_block)
    assert len(eval_set) == math.ceil(len(eval_set.users) / 8)
    assert_metrics_close(model.val_metrics.compute(), ref_metrics(scores, mask, targets))
    # the model's own score table is not modified by masking
    assert torch.equal(model.fixed, torch.from_numpy(scores))


def test_eval_set_sharding_disjoint_and_complete():
    n_users, n_items = 23, 10
    rng = np.random.default_rng(0)
    tu = rng.integers(0, n_users, 40)
    ti = rng.integers(0, n_items, 40)
    target = UserItemCSR.from_pairs(torch.from_numpy(tu), torch.from_numpy(ti), n_users, n_items)
    empty = UserItemCSR.from_pairs(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), n_users, n_items)
    shards = [RankingEvalSet(empty, target, 4, rank=r, world_size=3).users.tolist() for r in range(3)]
    flat = [u for s in shards for u in s]
    assert len(flat) == len(set(flat))
    assert sorted(flat) == sorted(set(tu.tolist()))


# ---------------------------------------------------------------------------------------------- kept rows
@pytest.mark.parametrize("tie_range", [None, 3])
def test_kept_rows_are_the_reference_per_user_values_and_average_to_compute(tie_range):
    """keep_rows: one row per user with a relevant item (named by row_ids), each the reference metric of that user;
    their column means are compute()'s values; reset() forgets them."""
    scores, mask, targets = random_problem(4, tie_range=tie_range)
    s = scores.astype(np.float64)
    s[mask] = -np.inf
    top = ref_ranking(s)[:, : max(KS)]
    hits, n_rel = hits_from_ranking(top, targets)
    metric = TopKMetrics(KS, metrics=("recall", "ndcg", "mrr"), keep_rows=True)
    users = torch.arange(len(targets)) + 100
    for lo in range(0, len(targets), 9):
        metric.update(hits[lo : lo + 9], n_rel[lo : lo + 9], row_ids=users[lo : lo + 9])
    ids, values = metric.rows()
    kept = [u for u, t in enumerate(targets) if t]
    assert ids.shape == (len(kept), 1) and ids[:, 0].tolist() == [u + 100 for u in kept]
    assert metric.row_columns == [f"{m}@{k}" for m in ("recall", "ndcg", "mrr") for k in KS]
    for row, u in enumerate(kept):
        want = ref_metrics(scores[u : u + 1], mask[u : u + 1], [targets[u]])
        np.testing.assert_allclose(values[row].numpy(), [want[c] for c in metric.row_columns], atol=1e-12)
    means = dict(zip(metric.row_columns, values.mean(0).tolist(), strict=True))
    assert_metrics_close(metric.compute(), means)
    metric.reset()
    assert metric.rows()[0].shape[0] == 0 and metric.rows()[1].shape == (0, len(metric.row_columns))
    plain = TopKMetrics(KS)
    plain.update(hits, n_rel, row_ids=users)
    assert plain.rows()[0].shape[0] == 0  # rows are kept only when asked


def test_kept_rows_from_ranks():
    metric = TopKMetrics((1, 5), metrics=("recall", "mrr"), keep_rows=True)
    metric.update(ranks=torch.tensor([1, 3, 9]), row_ids=torch.tensor([[0, 0], [0, 1], [4, 0]]))
    ids, values = metric.rows()
    assert ids.tolist() == [[0, 0], [0, 1], [4, 0]]
    # columns recall@1, recall@5, mrr@1, mrr@5
    np.testing.assert_allclose(values.numpy(), [[1, 1, 1, 1], [0, 1, 0, 1 / 3], [0, 0, 0, 0]])


def test_gather_rows_of_one_process_sorts_by_ids():
    from types import SimpleNamespace

    from recsys.utils.per_user import gather_rows

    ids = torch.tensor([[2, 1], [0, 3], [2, 0], [0, 1]])
    values = torch.arange(8, dtype=torch.float64).view(4, 2)
    got_ids, got_values = gather_rows(SimpleNamespace(world_size=1), ids, values)
    assert got_ids.tolist() == [[0, 1], [0, 3], [2, 0], [2, 1]]
    assert got_values[:, 0].tolist() == [6.0, 2.0, 4.0, 0.0]
