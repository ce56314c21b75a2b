"""bpr_loss and the L2 regulariser (embedding_l2) against direct numpy formulas (algorithms.md §1.3)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recsys.losses import bpr_loss, embedding_l2
from recsys.models.graph_module import l2_row_weights


def np_softplus(x):
    return np.logaddexp(0.0, x)


@pytest.mark.parametrize("n_neg", [1, 4])
def test_bpr_loss_matches_formula(n_neg):
    rng = np.random.default_rng(n_neg)
    pos = rng.standard_normal(7)
    neg = rng.standard_normal((7, n_neg))
    got = bpr_loss(torch.from_numpy(pos), torch.from_numpy(neg))
    # -ln σ(pos - neg), averaged over the batch and over the negatives
    want = np.mean([[-math.log(1.0 / (1.0 + math.exp(-(pos[b] - neg[b, j])))) for j in range(n_neg)] for b in range(7)])
    assert float(got) == pytest.approx(want, rel=1e-10)
    assert got.shape == ()


def test_bpr_loss_averages_over_negatives_not_sums():
    pos = torch.tensor([0.0])
    neg = torch.tensor([[0.0, 0.0, 0.0]])
    assert float(bpr_loss(pos, neg)) == pytest.approx(math.log(2.0))


def test_bpr_loss_is_numerically_stable_and_has_correct_gradient():
    pos = torch.tensor([100.0, -100.0], dtype=torch.float64, requires_grad=True)
    neg = torch.tensor([[-100.0], [100.0]], dtype=torch.float64, requires_grad=True)
    loss = bpr_loss(pos, neg)
    assert torch.isfinite(loss)
    assert float(loss.detach()) == pytest.approx(np.mean(np_softplus(np.array([-200.0, 200.0]))))
    loss.backward()
    # d/dpos softplus(neg - pos) / B = -σ(neg - pos) / B
    sig = 1 / (1 + np.exp(-np.array([-200.0, 200.0])))
    np.testing.assert_allclose(pos.grad.numpy(), -sig / 2, atol=1e-12)
    np.testing.assert_allclose(neg.grad.numpy()[:, 0], sig / 2, atol=1e-12)


def _l2_of_rows(u, i, j, n_neg):
    """The module's call on a table stacking the batch's rows: users, then positives, then negatives."""
    b = u.shape[0]
    table = torch.cat([u, i, j.reshape(-1, u.shape[1])])
    local = {"users": torch.arange(b), "pos_items": torch.arange(b, 2 * b),
             "neg_items": torch.arange(2 * b, 2 * b + b * n_neg).view(b, n_neg)}
    return embedding_l2(table, l2_row_weights(table.shape[0], local, dtype=table.dtype), b)


@pytest.mark.parametrize("n_neg", [1, 3])
def test_embedding_l2_matches_formula(n_neg):
    rng = np.random.default_rng(10 + n_neg)
    b, d = 6, 5
    u = rng.standard_normal((b, d))
    i = rng.standard_normal((b, d))
    j = rng.standard_normal((b, n_neg, d))
    got = _l2_of_rows(torch.from_numpy(u), torch.from_numpy(i), torch.from_numpy(j), n_neg)
    # ½ Σ_b (‖e_u‖² + ‖e_i‖² + mean_j ‖e_j‖²) / B, written row by row
    total = 0.0
    for r in range(b):
        total += 0.5 * (u[r] @ u[r] + i[r] @ i[r] + np.mean([j[r, k] @ j[r, k] for k in range(n_neg)]))
    assert float(got) == pytest.approx(total / b, rel=1e-10)
    # the same as ½(‖U‖²_F + ‖I‖²_F + ‖J‖²_F / n) / B (the batch-level form)
    frobenius = 0.5 * (np.sum(u**2) + np.sum(i**2) + np.sum(j**2) / n_neg) / b
    assert float(got) == pytest.approx(frobenius, rel=1e-10)


def test_embedding_l2_one_negative_is_lightgcn_regulariser():
    u = torch.tensor([[1.0, 2.0], [0.0, 1.0]])
    i = torch.tensor([[0.0, 3.0], [1.0, 1.0]])
    j = torch.tensor([[[2.0, 0.0]], [[0.0, 0.0]]])
    # ½ (5 + 1 + 9 + 2 + 4 + 0) / 2 = 21/4
    assert float(_l2_of_rows(u, i, j, 1)) == pytest.approx(21 / 4)


def test_embedding_l2_counts_a_row_once_per_use():
    """A table row's weight counts its uses, by hand: node 0 is the user of two batch rows and the negative of a
    third (3), node 1 three positives and a negative (4), node 2 a user and a negative (2)."""
    table = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]])
    local = {"users": torch.tensor([0, 0, 2]), "pos_items": torch.tensor([1, 1, 1]),
             "neg_items": torch.tensor([[2], [1], [0]])}
    w = l2_row_weights(3, local)
    assert w.tolist() == [3.0, 4.0, 2.0]
    # ½ (3·1 + 4·4 + 2·9) / 3
    assert float(embedding_l2(table, w, 3)) == pytest.approx(0.5 * (3 + 16 + 18) / 3)


def test_embedding_l2_gradient_is_the_autograd_one():
    """Its gradient (2 w_r e_r / 2B) against numerical differentiation and the formula by hand."""
    g = torch.Generator().manual_seed(3)
    table = torch.randn(7, 4, generator=g, dtype=torch.float64, requires_grad=True)
    weights = torch.rand(7, generator=g, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: embedding_l2(t, weights, 3), (table,))
    embedding_l2(table, weights, 3).backward()
    reference = table.detach().clone().requires_grad_()
    (0.5 * (weights @ reference.pow(2).sum(-1)) / 3).backward()
    torch.testing.assert_close(table.grad, reference.grad, rtol=1e-12, atol=1e-12)


def test_embedding_l2_stays_float32_under_autocast():
    """Under bf16 autocast (what ``precision=bf16-mixed`` wraps the step in) the penalty is still a float32 sum:
    a bfloat16 dot product of thousands of squared norms would keep ~3 significant digits."""
    g = torch.Generator().manual_seed(4)
    table = torch.randn(5000, 64, generator=g, requires_grad=True)
    weights = torch.rand(5000, generator=g)
    exact = embedding_l2(table.double(), weights.double(), 2048)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = embedding_l2(table, weights, 2048)
    assert got.dtype == torch.float32
    assert float(got) == pytest.approx(float(exact), rel=1e-6)
    got.backward()
    torch.testing.assert_close(table.grad, (table * weights[:, None] / 2048).detach(), rtol=1e-6, atol=1e-9)
