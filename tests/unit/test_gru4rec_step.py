"""GRU4Rec's training step (``GRU4Rec.batch_loss``: the step's distinct column items scored once, cross-entropy
over them with column weights) against the column formulation written without it: all items scored by the
network's own forward, the C columns picked, and the losses of ``recsys.losses`` over them."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch

from recsys.info import SessionInfo, SessionSequences
from recsys.losses import (
    SESSION_LOSSES,
    bpr_max_loss,
    session_bpr_loss,
    session_xe_loss,
    top1_loss,
    top1_max_loss,
    weighted_bpr_max_loss,
    weighted_xe_loss,
)
from recsys.models.gru4rec_module import GRU4Rec
from recsys.optim import AdagradM

N = 40


def make_model(loss: str, embedding: str | int, layers: list[int], n_sample: int, sparse: str,
               dtype: torch.dtype = torch.float64, support_max: int = 50, **kwargs) -> GRU4Rec:
    rng = np.random.default_rng(0)
    support = torch.from_numpy(rng.integers(1, support_max, size=N))
    train = SessionSequences.from_lengths(np.array([3, 2]), np.array([0, 1, 2, 3, 4]))
    info = SessionInfo(N, support, 5, n_sample, 0.5, train)
    torch.manual_seed(0)
    model = GRU4Rec(info, partial(AdagradM, lr=0.05), loss=loss, embedding=embedding, layers=layers,
                    sparse_gradients=sparse, **kwargs).to(dtype)
    model.configure_optimizers()
    return model


def steps(n_sample: int) -> list[dict[str, torch.Tensor]]:
    """Two session-parallel steps: 5 lanes starting sessions (a repeated input item, a target that is also an
    input), then 4 lanes, one reset."""
    g = torch.Generator().manual_seed(2)
    first = {"inputs": torch.tensor([3, 7, 3, 11, 20]), "targets": torch.tensor([7, 9, 3, 12, 33]),
             "lanes": torch.arange(5), "reset": torch.ones(5, dtype=torch.bool)}
    second = {"inputs": torch.tensor([7, 9, 5, 12]), "targets": torch.tensor([8, 9, 6, 39]),
              "lanes": torch.tensor([0, 1, 3, 4]), "reset": torch.tensor([False, False, True, False])}
    for step in (first, second):
        if n_sample:
            step["negatives"] = torch.randint(N, (n_sample,), generator=g)
            step["neg_log_q"] = torch.rand(n_sample, generator=g) * 3
    return [first, second]


CASES = [  # loss, embedding, layers, n_sample (0: in-batch only; 30: columns cover most items), sparse, kwargs
    ("cross-entropy", "shared", [6], 30, "false", {"logq": 1.0, "dropout_embed": 0.3}),
    ("cross-entropy", "shared", [6], 0, "true", {}),
    ("cross-entropy", 4, [6, 5], 8, "true", {"logq": 0.5, "dropout_hidden": 0.25}),
    ("cross-entropy", 4, [6, 5], 8, "false", {"dropout_embed": 0.2, "dropout_hidden": 0.25}),
    ("bpr-max", "shared", [6], 30, "false", {"bpreg": 0.5, "elu_param": 0.5, "dropout_embed": 0.2}),
    ("bpr-max", "shared", [6, 5], 8, "true", {"bpreg": 1.0}),
    ("top1", "shared", [6], 8, "false", {}),
    ("bpr", 4, [6], 30, "true", {"dropout_hidden": 0.3}),
    ("top1-max", "shared", [6], 0, "false", {}),
]
assert {c[0] for c in CASES} == set(SESSION_LOSSES)


def column_loss(model: GRU4Rec, step: dict[str, torch.Tensor]) -> torch.Tensor:
    """The step's loss over its C columns, every item scored (``score_all``), without the candidates."""
    hidden = model._train_state.gather(step["lanes"], step["reset"])
    output, new_hidden = model.net(step["inputs"], hidden)
    model._train_state.scatter(step["lanes"], new_hidden)
    negatives = step.get("negatives")
    columns = step["targets"] if negatives is None else torch.cat([step["targets"], negatives])
    scores = model.net.score_all(output)[:, columns]
    if model.loss_name == "cross-entropy":
        log_q = model.log_support[step["targets"]]  # log Q: the support of the in-batch targets, the extras' proposal
        if "neg_log_q" in step:
            log_q = torch.cat([log_q.to(step["neg_log_q"].dtype), step["neg_log_q"]])
        rows = session_xe_loss(scores, log_q, model.logq)
    else:
        rows = {"bpr-max": partial(bpr_max_loss, bpreg=model.bpreg, elu_param=model.elu_param), "top1": top1_loss,
                "bpr": session_bpr_loss, "top1-max": top1_max_loss}[model.loss_name](scores)
    return rows.sum() / model.batch_size


@pytest.mark.parametrize(("loss", "embedding", "layers", "n_sample", "sparse", "kwargs"), CASES)
def test_batch_loss_over_distinct_candidates_equals_the_column_loss(loss, embedding, layers, n_sample, sparse, kwargs):
    """Loss and every parameter's gradient (float64, to 1e-10; row-sparse gradients on the rows the step reads),
    step after step, dropout draws included."""
    got_model = make_model(loss, embedding, layers, n_sample, sparse, **kwargs)
    ref_model = make_model(loss, embedding, layers, n_sample, "false", **kwargs)
    assert got_model.net.sparse == (sparse == "true")
    got_model.on_train_epoch_start(), ref_model.on_train_epoch_start()
    for step in steps(n_sample):
        torch.manual_seed(7)
        (got,) = got_model.batch_loss(step)
        torch.manual_seed(7)
        want = column_loss(ref_model, step)
        got_model.zero_grad(), ref_model.zero_grad()
        got.backward(), want.backward()
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
        for (name, p), q in zip(got_model.named_parameters(), ref_model.parameters(), strict=True):
            torch.testing.assert_close(p.grad.to_dense(), q.grad, rtol=1e-10, atol=1e-12,
                                       msg=lambda m, name=name: f"{name}: {m}")
        for h, r in zip(got_model._train_state.tensors, ref_model._train_state.tensors, strict=True):
            torch.testing.assert_close(h, r, rtol=1e-10, atol=1e-12)


def test_weighted_xe_loss_groups_the_columns_of_an_item():
    """Cross-entropy over C columns with duplicate items (and per-column log Q) equals the weighted form over the
    distinct items: ``w_k = Σ_{columns of k} exp(−logq · log Q_j)``; numbers written out by hand for one row."""
    g = torch.Generator().manual_seed(0)
    columns = torch.tensor([4, 1, 4, 0, 1, 1, 7])  # rows 0..2 have targets 4, 1, 4
    item_scores = torch.randn(3, 8, generator=g, dtype=torch.float64)
    log_q = torch.rand(7, generator=g, dtype=torch.float64) * 2
    logq = 0.7
    want = session_xe_loss(item_scores[:, columns], log_q, logq)
    items, column_item = torch.unique(columns, return_inverse=True)
    weights = torch.zeros(items.numel(), dtype=torch.float64).index_add_(0, column_item, (-logq * log_q).exp())
    got = weighted_xe_loss(item_scores[:, items], weights.log(), column_item[:3], logq * log_q[:3])
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    s = item_scores[0, columns] - logq * log_q  # row 0 by hand: −log softmax at its own column 0
    assert float(got[0]) == pytest.approx(float(torch.log(s.exp().sum()) - s[0]), rel=1e-12)


@pytest.mark.parametrize("elu_param", [0.0, 0.5])
def test_weighted_bpr_max_loss_groups_the_columns_of_an_item(elu_param):
    """BPR-max over C columns with duplicate items (a target drawn again as a negative, an item in three columns,
    a target in no other column) equals the form over the distinct items with each row's own column left out of its
    counts: the losses and their gradients."""
    g = torch.Generator().manual_seed(1)
    columns = torch.tensor([4, 1, 4, 0, 1, 1, 7, 4])  # rows 0..3 have targets 4, 1, 4, 0 (0 in its own column only)
    item_scores = (torch.randn(4, 8, generator=g, dtype=torch.float64) * 2).requires_grad_()
    want = bpr_max_loss(item_scores[:, columns], 1.5, elu_param)
    (want_grad,) = torch.autograd.grad(want.sum(), item_scores)
    items, column_item = torch.unique(columns, return_inverse=True)
    counts = torch.bincount(column_item)
    got = weighted_bpr_max_loss(item_scores[:, items], counts, column_item[:4], 1.5, elu_param)
    (got_grad,) = torch.autograd.grad(got.sum(), item_scores)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-12, atol=1e-12)
    assert bool(torch.isfinite(got_grad).all())


def test_step_columns_of_a_chunk_equal_each_steps_own_distinct_items():
    """StepColumns groups the columns of every step of a chunk at once (steps of 3, 0 and 5 lanes, duplicates
    within and across steps): per step, the candidates and column indices of ``torch.unique`` over its columns."""
    from recsys.models.session_recommender import StepColumns

    g = torch.Generator().manual_seed(3)
    sizes, n = [3, 0, 5], 4
    targets = torch.randint(N, (sum(sizes),), generator=g)
    negatives = torch.randint(N, (len(sizes), n), generator=g)
    ptr = torch.tensor([0, 3, 3, 8])
    for negs in (negatives, None):  # None: in-batch negatives only
        cols = StepColumns.of({"ptr": ptr, "targets": targets} | ({} if negs is None else {"negatives": negs}), N)
        for t in range(len(sizes)):
            columns = targets[ptr[t]:ptr[t + 1]] if negs is None else torch.cat([targets[ptr[t]:ptr[t + 1]], negs[t]])
            want_cand, want_inverse = torch.unique(columns, return_inverse=True)
            got_cand = cols.candidates[cols.cand_ptr[t]:cols.cand_ptr[t + 1]]
            assert torch.equal(got_cand, want_cand) and got_cand.dtype == torch.int64
            assert torch.equal(cols.step_column_items()[t], want_inverse)
            assert torch.equal(cols.candidates[cols.column_candidate], torch.cat([targets] + ([] if negs is None else [negs.reshape(-1)])))
