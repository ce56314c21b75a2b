"""bpr_loss and the L2 regulariser (embedding_l2_sq) against direct numpy formulas (algorithms.md §1.3)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recsys.losses import bpr_loss, embedding_l2_sq


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


@pytest.mark.parametrize("n_neg", [1, 3])
def test_embedding_l2_matches_formula(n_neg):
    rng = np.random.default_rng(10 + n_neg)
    b, d = 6, 5
    u = rng.standard_normal((b, d))
    i = rng.standard_normal((b, d))
    j = rng.standard_normal((b, n_neg, d))
    tu, ti, tj = torch.from_numpy(u), torch.from_numpy(i), torch.from_numpy(j)
    # the module's call: per-row squared norms, the negatives' averaged over the row's negatives
    got = embedding_l2_sq(tu.pow(2).sum(-1), ti.pow(2).sum(-1), tj.pow(2).sum(-1).mean(1))
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
    got = embedding_l2_sq(u.pow(2).sum(-1), i.pow(2).sum(-1), j.pow(2).sum(-1).mean(1))
    assert float(got) == pytest.approx(21 / 4)
