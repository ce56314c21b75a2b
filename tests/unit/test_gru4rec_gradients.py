"""GRU4Rec's gradients written out (``GRU4RecNet.train_step``, ``GRU4Rec.batch_gradients``) against autograd through
the network's own forward (``nn.GRUCell``, ``score_columns``) and the losses of ``recsys.losses``."""

from __future__ import annotations

import io
from functools import partial

import numpy as np
import pytest
import torch

from recsys.data.session_data import SessionSequences
from recsys.data.session_datamodule import SessionInfo
from recsys.losses import (
    SESSION_LOSSES,
    bpr_max_loss,
    bpr_max_loss_and_grad,
    session_xe_loss,
    weighted_xe_loss_and_grad,
)
from recsys.models.components.gru4rec import gru_cell_backward, gru_cell_forward
from recsys.models.gru4rec_module import GRU4Rec
from recsys.models.session_recommender import one_step_chunk
from recsys.optim import AdagradM

N = 40


def test_gru_cell_forward_and_backward_equal_nn_grucell_with_autograd():
    torch.manual_seed(0)
    cell = torch.nn.GRUCell(7, 5).double()
    x = torch.randn(4, 7, dtype=torch.float64, requires_grad=True)
    h = torch.randn(4, 5, dtype=torch.float64)
    upstream = torch.randn(4, 5, dtype=torch.float64)
    want = cell(x, h)
    (want * upstream).sum().backward()
    with torch.no_grad():
        got, saved = gru_cell_forward(cell, x.detach(), h)
        g_x, grads = gru_cell_backward(cell, upstream, saved)
    torch.testing.assert_close(got, want.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g_x, x.grad, rtol=1e-12, atol=1e-12)
    assert set(grads) == set(cell.parameters())
    for p, g in grads.items():
        torch.testing.assert_close(g, p.grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("logq", [0.0, 1.0])
def test_weighted_cross_entropy_equals_the_column_softmax_with_duplicates(logq):
    """Candidates with multiplicities and logQ weights give session_xe_loss over the columns (duplicates, a target
    drawn again as a negative) and its autograd gradient summed per candidate; a candidate of weight 0 with the
    highest score and score spreads far beyond exp's range change nothing."""
    g = torch.Generator().manual_seed(1)
    b, k = 3, 6
    scores = torch.randn(b, k, generator=g, dtype=torch.float64) * 3
    scores[0, 5] = 500.0  # candidate 5: no column (an input-only row), far above the others
    scores[1, 4] = -300.0  # a column far below the row's best one
    column_candidate = torch.tensor([2, 0, 4, 1, 2, 2, 3, 0])  # targets 2, 0, 4, then the negatives
    log_q = torch.rand(column_candidate.numel(), generator=g, dtype=torch.float64) * 4
    columns = scores[:, column_candidate].clone().requires_grad_()
    want = session_xe_loss(columns, log_q, logq)
    want.sum().backward()
    want_grad = torch.zeros_like(scores).index_add_(1, column_candidate, columns.grad)
    weights = torch.zeros(k, dtype=torch.float64).index_add_(0, column_candidate, torch.exp(-logq * log_q))
    got, grad = weighted_xe_loss_and_grad(scores.clone(), weights.log(), column_candidate[:b], logq * log_q[:b])
    torch.testing.assert_close(got, want.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, want_grad, rtol=1e-12, atol=1e-12)
    assert torch.isfinite(got).all() and grad[:, 5].abs().max() == 0


@pytest.mark.parametrize("elu_param", [0.0, 0.5])
@pytest.mark.parametrize("bpreg", [0.0, 1.95])
def test_bpr_max_over_candidates_equals_the_column_loss_with_duplicates(elu_param, bpreg):
    """BPR-max over candidates with multiplicities gives bpr_max_loss over the columns (a target drawn again as a
    negative, duplicate negatives, a target whose only column is its own) and its autograd gradient summed per
    candidate, also when a candidate without a column or a row's own target scores far above its negatives."""
    g = torch.Generator().manual_seed(3)
    b, k = 3, 6
    scores = torch.randn(b, k, generator=g, dtype=torch.float64) * 3
    scores[0, 5] = 500.0  # candidate 5: no column (an input-only row), far above the others
    scores[2, 4] = 300.0  # row 2's target: its own column is its only one, far above its negatives
    scores[1, 3] = -300.0  # a negative far below the row's best one
    column_candidate = torch.tensor([2, 0, 4, 1, 2, 2, 3, 0])  # targets 2, 0, 4, then the negatives
    columns = scores[:, column_candidate].clone().requires_grad_()
    want = bpr_max_loss(columns, bpreg, elu_param)
    (want.sum() * 0.25).backward()
    want_grad = torch.zeros_like(scores).index_add_(1, column_candidate, columns.grad)
    multiplicities = torch.zeros(k, dtype=torch.float64).index_add_(
        0, column_candidate, torch.ones(column_candidate.numel(), dtype=torch.float64))
    got, grad = bpr_max_loss_and_grad(scores.clone(), multiplicities, column_candidate[:b], bpreg, elu_param, 0.25)
    torch.testing.assert_close(got, want.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, want_grad, rtol=1e-12, atol=1e-12)
    assert torch.isfinite(got).all() and grad[:, 5].abs().max() == 0


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


def one_lane(step: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: (v[:1] if k in ("inputs", "targets", "lanes", "reset") else v) for k, v in step.items()}


FLOAT32_CASES = [CASES[0], CASES[2], CASES[5], CASES[7]]  # dense and sparse, shared and separate, three losses


@pytest.mark.parametrize(("loss", "embedding", "layers", "n_sample", "sparse", "kwargs", "dtype", "lanes"),
                         [(*c, torch.float64, 5) for c in CASES] + [(*c, torch.float32, 5) for c in FLOAT32_CASES]
                         + [(*CASES[0], torch.float64, 1), (*CASES[5], torch.float32, 1)])
def test_batch_gradients_equal_autograd_through_batch_loss(loss, embedding, layers, n_sample, sparse, kwargs, dtype,
                                                           lanes):
    """Loss, every parameter's gradient (dense or row-sparse with the same rows), the lanes' new hidden states and
    the dropout draws: the same as ``batch_loss(step).backward()``, step after step (float64: to 1e-10; float32:
    to its rounding, the sums run in another order; also with a single lane)."""
    tol = {"rtol": 1e-10, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-6}
    manual = make_model(loss, embedding, layers, n_sample, sparse, dtype, **kwargs)
    reference = make_model(loss, embedding, layers, n_sample, sparse, dtype, **kwargs)
    assert manual.net.sparse == (sparse == "true")
    manual.on_train_epoch_start(), reference.on_train_epoch_start()
    for step in steps(n_sample):
        step = step if lanes > 1 else one_lane(step)
        torch.manual_seed(7)
        (got,) = manual.batch_gradients(step)
        rng_after = torch.get_rng_state()
        torch.manual_seed(7)
        (want,) = reference.batch_loss(step)
        reference.zero_grad()
        want.backward()
        assert torch.equal(torch.get_rng_state(), rng_after)  # the same draws
        torch.testing.assert_close(got, want.detach(), **tol)
        for (name, p), q in zip(manual.named_parameters(), reference.parameters(), strict=True):
            assert p.grad is not None and p.grad.is_sparse == q.grad.is_sparse, name
            assert p.grad.dtype == p.dtype, name
            if p.grad.is_sparse:  # the same rows (the official updates touch exactly these)
                assert torch.equal(p.grad.coalesce().indices(), q.grad.coalesce().indices()), name
            torch.testing.assert_close(p.grad.to_dense(), q.grad.to_dense(), **tol,
                                       msg=lambda m, name=name: f"{name}: {m}")
        for h, r in zip(manual._train_state.tensors, reference._train_state.tensors, strict=True):
            torch.testing.assert_close(h, r, **tol)


@pytest.mark.parametrize("mark_factor", [0, 10**9])  # always sort / always mark the (T · N) table
@pytest.mark.parametrize("with_items", [True, False])
def test_chunk_candidates_are_each_steps_sorted_distinct_items_either_way(monkeypatch, mark_factor, with_items):
    """Per step: the distinct items of its targets, negatives (and inputs) in order, every id's index among them;
    the flat column positions address the same rows; a step without events keeps its negatives' rows."""
    from recsys.models.components import step_candidates

    monkeypatch.setattr(step_candidates, "CANDIDATE_MARK_FACTOR", mark_factor)
    g = torch.Generator().manual_seed(3)
    ptr = torch.tensor([0, 3, 3, 8, 10])  # step 1 is empty (DDP padding)
    targets, inputs = torch.randint(N, (10,), generator=g), torch.randint(N, (10,), generator=g)
    negatives = torch.randint(N, (4, 6), generator=g)
    negatives[2, :2] = targets[3]  # a target drawn again as a negative
    got = step_candidates.chunk_candidates(N, ptr, targets, negatives, inputs if with_items else None)
    for t in range(4):
        lo, hi = int(ptr[t]), int(ptr[t + 1])
        ids = torch.cat([targets[lo:hi], negatives[t]] + ([inputs[lo:hi]] if with_items else []))
        step = got.step(t)
        assert step.rows.tolist() == sorted(set(ids.tolist()))
        assert torch.equal(step.rows[step.targets], targets[lo:hi])
        assert torch.equal(step.rows[step.negatives], negatives[t])
        assert torch.equal(step.rows[step.columns], torch.cat([targets[lo:hi], negatives[t]]))
        assert (step.items is None) != with_items
        if with_items:
            assert torch.equal(step.rows[step.items], inputs[lo:hi])
    columns = torch.cat([targets, negatives.view(-1)])
    assert torch.equal(got.rows[got.flat_columns], columns)
    assert got.size == sum(got.step(t).rows.numel() for t in range(4))


@pytest.mark.parametrize("loss", ["cross-entropy", "bpr-max"])
def test_chunk_steps_equal_the_steps_taken_one_by_one(loss):
    """A chunk's steps with their candidates and column weights prepared at once train as the same steps one by
    one (each its own chunk of one): the same losses and parameters, bit for bit (BPR-max ignores logq)."""
    chunk = {k: torch.cat([a[k], b[k]]) for a, b in [steps(8)] for k in ("inputs", "targets", "lanes", "reset")}
    first, second = steps(8)
    chunk.update(ptr=torch.tensor([0, 5, 9]), negatives=torch.stack([first["negatives"], second["negatives"]]),
                 neg_log_q=torch.stack([first["neg_log_q"], second["neg_log_q"]]))

    def train(model: GRU4Rec, batches) -> list[torch.Tensor]:
        model.on_train_epoch_start()
        optimizer = model.configure_optimizers()
        torch.manual_seed(5)
        losses = []
        for step in batches:
            losses.append(model.batch_gradients(step)[0])
            optimizer.step()
        return losses

    chunked, single = (make_model(loss, "shared", [6], 8, "false", logq=1.0, dropout_embed=0.2) for _ in range(2))
    assert train(chunked, chunked.with_candidates(chunk)) == train(single, steps(8))
    for p, q in zip(chunked.parameters(), single.parameters(), strict=True):
        assert torch.equal(p, q)


def test_cross_entropy_weights_do_not_underflow_in_half_precision():
    """With supports of ~10⁸ and logq 1 the column weights 1/supp underflow float16 (to 0): they are formed in
    float32, so a 16-true step's loss and gradient match float64's to half precision."""
    step = steps(8)[0]
    got = make_model("cross-entropy", "shared", [6], 8, "false", torch.float16, support_max=10**8, logq=1.0)
    want = make_model("cross-entropy", "shared", [6], 8, "false", torch.float64, support_max=10**8, logq=1.0)
    got.on_train_epoch_start(), want.on_train_epoch_start()
    step["neg_log_q"] = step["neg_log_q"] + 17.0  # every column's weight under 6e-8
    step16, step64 = (next(m.with_candidates(one_step_chunk(step))) for m in (got, want))
    scores = torch.randn(5, step16["candidates"].rows.numel(), generator=torch.Generator().manual_seed(0),
                         dtype=torch.float64)
    loss16, grad16 = got._loss_and_grad(scores.half(), step16)
    loss64, grad64 = want._loss_and_grad(scores.clone(), step64)
    assert grad16.dtype == torch.float16 and loss16.item() > 0
    torch.testing.assert_close(loss16.double(), loss64, rtol=1e-2, atol=1e-3)
    torch.testing.assert_close(grad16.double(), grad64, rtol=1e-2, atol=1e-3)


def test_batch_gradients_leave_the_one_hot_layer_and_autocast_to_autograd():
    onehot = make_model("cross-entropy", "onehot", [6], 8, "false")
    onehot.on_train_epoch_start()
    assert onehot.batch_gradients(steps(8)[0]) is None
    model = make_model("cross-entropy", "shared", [6], 8, "false").float()
    model.on_train_epoch_start()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model.batch_gradients(steps(8)[0]) is None
    padding = {"inputs": torch.zeros(0, dtype=torch.long), "targets": torch.zeros(0, dtype=torch.long),
               "lanes": torch.zeros(0, dtype=torch.long), "reset": torch.zeros(0, dtype=torch.bool)}
    assert model.batch_gradients(padding) is None


@pytest.mark.parametrize("sparse", ["false", "true"])
def test_written_out_steps_mix_with_autograd_and_optimiser_steps(sparse):
    """``train_step`` runs in inference mode (dense) or under no_grad (row-sparse): what it leaves behind — lane
    states, gradients, the loss — works with autograd steps, ``AdagradM`` (dense and row-sparse updates) and a
    checkpoint afterwards; no inference tensor ends up in the module's or the optimiser's state."""
    model = make_model("cross-entropy", "shared", [6], 8, sparse, torch.float32, logq=1.0)
    optimizer = model.configure_optimizers()
    model.on_train_epoch_start()
    first, second = steps(8)
    losses = []
    for step in (first, second, first):
        losses.append(model.batch_gradients(step)[0])
        optimizer.step()
        optimizer.zero_grad()
        model.batch_loss(second)[0].backward()
        optimizer.step()
    assert torch.isfinite(torch.stack(losses)).all()
    assert not any(t.is_inference() for t in model._train_state.tensors)
    assert not any(v.is_inference() for state in optimizer.state.values() for v in state.values())
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, buffer)
    assert buffer.tell() > 0


def test_written_out_gradients_are_cleared_before_autograd_accumulates():
    """Dense written-out gradients are inference tensors (read-only outside inference mode): the chunk-size probe,
    which runs autograd on a model that may hold them (a second fit), clears them first."""
    from recsys.utils.chunk_size import StepsPerChunk

    model = make_model("cross-entropy", "shared", [6], 8, "false", torch.float32, logq=1.0)
    optimizer = model.configure_optimizers()
    model.on_train_epoch_start()
    first, second = steps(8)
    model.batch_gradients(first)
    optimizer.step()
    assert all(p.grad is not None and p.grad.is_inference() for p in model.parameters())
    assert StepsPerChunk(repeats=1).step_seconds(model, one_step_chunk(second)) > 0
    assert all(p.grad is None for p in model.parameters())
