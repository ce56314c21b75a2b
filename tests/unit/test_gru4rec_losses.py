"""GRU4Rec losses (recsys.losses) against direct element-by-element formulas (algorithms.md §3.4)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recsys.losses import (
    bpr_max_loss,
    session_bpr_loss,
    session_xe_loss,
    softmax_over_negatives,
    top1_loss,
    top1_max_loss,
)


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def elu(x: float, a: float) -> float:
    return x if x > 0 else a * (math.exp(x) - 1.0)


@pytest.fixture
def scores() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(5, 9, generator=g, dtype=torch.float64) * 2


def neg_softmax(row: np.ndarray, b: int) -> np.ndarray:
    e = np.array([math.exp(v) if j != b else 0.0 for j, v in enumerate(row)])
    return e / e.sum()


def test_cross_entropy_with_and_without_logq(scores):
    o = scores.numpy()
    log_q = torch.log(torch.arange(1, 10, dtype=torch.float64))
    for logq in (0.0, 1.0, 0.5):
        got = session_xe_loss(scores, log_q, logq).numpy()
        for b in range(5):
            row = o[b] - logq * log_q.numpy()
            expected = -(row[b] - math.log(sum(math.exp(v) for v in row)))
            assert got[b] == pytest.approx(expected, rel=1e-10)


def test_bpr_max_with_bpreg_and_elu(scores):
    o = scores.numpy()
    for bpreg, elu_param in ((0.0, 0.0), (1.0, 0.0), (1.95, 0.5), (0.9, 1.0)):
        got = bpr_max_loss(scores, bpreg, elu_param).numpy()
        for b in range(5):
            row = np.array([elu(v, elu_param) for v in o[b]]) if elu_param > 0 else o[b]
            s = neg_softmax(row, b)
            ranked = sum(s[j] * sig(row[b] - row[j]) for j in range(9) if j != b)
            reg = sum(s[j] * row[j] ** 2 for j in range(9) if j != b)
            assert got[b] == pytest.approx(-math.log(ranked + 1e-24) + bpreg * reg, rel=1e-9)


def test_top1_bpr_top1max(scores):
    o = scores.numpy()
    c = o.shape[1]
    top1, bpr, top1max = top1_loss(scores).numpy(), session_bpr_loss(scores).numpy(), top1_max_loss(scores).numpy()
    for b in range(5):
        expected_top1 = sum(sig(o[b, j] - o[b, b]) + sig(o[b, j] ** 2) for j in range(c)) / c - sig(o[b, b] ** 2) / c
        assert top1[b] == pytest.approx(expected_top1, rel=1e-10)
        assert bpr[b] == pytest.approx(sum(-math.log(sig(o[b, b] - o[b, j])) for j in range(c)) / c, rel=1e-10)
        s = neg_softmax(o[b], b)
        expected_max = sum(s[j] * (sig(o[b, j] - o[b, b]) + sig(o[b, j] ** 2)) for j in range(c) if j != b)
        assert top1max[b] == pytest.approx(expected_max, rel=1e-10)


def test_softmax_over_negatives_leaves_the_positive_out(scores):
    s = softmax_over_negatives(scores)
    assert torch.allclose(s.sum(1), torch.ones(5, dtype=torch.float64))
    assert (s.diagonal() == 0).all()


def test_single_column_losses_are_zero_not_nan():
    one = torch.zeros(1, 1, requires_grad=True)
    for loss in (bpr_max_loss(one), top1_max_loss(one)):
        assert loss.item() == 0.0
        loss.sum().backward()


def test_losses_decrease_when_the_positive_rises(scores):
    better = scores.clone()
    better[torch.arange(5), torch.arange(5)] += 3.0
    for fn in (session_xe_loss, bpr_max_loss, top1_loss, session_bpr_loss, top1_max_loss):
        assert (fn(better) < fn(scores)).all(), fn.__name__
