"""GRU4Rec network, optimiser, training step and next-item evaluation against direct references."""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import pytest
import torch

from recsys.data.session_batches import SessionParallelChunks
from recsys.errors import ConfigError
from recsys.info import SessionInfo, SessionSequences
from recsys.metrics import TopKMetrics, next_item_ranks
from recsys.models.components.gru4rec import GRU4RecNet
from recsys.models.gru4rec_module import GRU4Rec
from recsys.optim import AdagradM
from recsys.sampling import SessionNegativeSampler, StepNegatives, UniformNegativeSampler

N = 30


def make_info(n_sample: int = 0, alpha: float = 0.5, batch_size: int = 4, seed: int = 0) -> SessionInfo:
    rng = np.random.default_rng(seed)
    support = torch.from_numpy(rng.integers(1, 50, size=N))
    train = SessionSequences.from_lengths(np.array([3, 2]), np.array([0, 1, 2, 3, 4]))
    return SessionInfo(N, support, batch_size, n_sample, alpha, train)


def make_model(**kwargs) -> GRU4Rec:
    info = kwargs.pop("info", None) or make_info(kwargs.pop("n_sample", 0), kwargs.pop("alpha", 0.5))
    torch.manual_seed(0)
    return GRU4Rec(info, partial(AdagradM, lr=0.05), **kwargs)


# -- network -------------------------------------------------------------------------------------
@pytest.mark.parametrize("embedding", ["shared", "onehot", 7])
@pytest.mark.parametrize("layers", [[8], [8, 6]])
def test_network_shapes_and_parameters(embedding, layers):
    net = GRU4RecNet(N, layers, embedding)
    hidden = net.init_hidden(3)
    out, new = net(torch.tensor([1, 2, 3]), hidden)
    assert out.shape == (3, layers[-1]) and [h.shape[1] for h in new] == layers
    scores, _ = net.train_scores(torch.tensor([1, 2, 3]), hidden, torch.tensor([4, 5]))
    assert scores.shape == (3, 2)
    assert net.score_all(out).shape == (3, N)
    names = {n for n, _ in net.named_parameters()}
    assert ("input_embedding" in names) == isinstance(embedding, int)
    assert any(n.startswith("onehot.") for n in names) == (embedding == "onehot")


def test_shared_embedding_reuses_the_output_matrix():
    net = GRU4RecNet(N, [8], "shared")
    out, _ = net(torch.tensor([5]), net.init_hidden(1))
    out.sum().backward()
    grad = net.output_weight.grad
    assert grad[5].abs().sum() > 0 and grad[torch.arange(N) != 5].abs().sum() == 0  # only the input row


def test_onehot_layer_matches_the_gru_formula():
    net = GRU4RecNet(N, [4], "onehot")
    layer = net.onehot
    with torch.no_grad():
        layer.bias.uniform_(-0.5, 0.5)
    h = torch.randn(2, 4)
    items = torch.tensor([3, 7])
    got = layer(items, h)
    for b in range(2):
        wx = layer.input_weight[items[b]] + layer.bias
        x_h, x_r, x_z = wx[:4], wx[4:8], wx[8:]
        r = torch.sigmoid(x_r + h[b] @ layer.gate_weight[:, :4])
        z = torch.sigmoid(x_z + h[b] @ layer.gate_weight[:, 4:])
        cand = torch.tanh(x_h + (r * h[b]) @ layer.candidate_weight)
        assert torch.allclose(got[b], (1 - z) * h[b] + z * cand, atol=1e-6)


@pytest.mark.parametrize("layers", [[6], [6, 5]])
def test_onehot_first_layer_output_gets_dropout_embed_as_the_official_code(layers):
    """Official GRU4Rec without embedding: ``E = GRUEmbedding(X, H0)``, ``E = DE(E)`` (dropout_p_embed),
    ``H0 = E``; dropout_p_hidden only on the later layers. With dropout_hidden=0 and dropout_embed=0.5 the
    first layer's new hidden state is the eval-mode one with about half the entries zeroed, the rest × 2."""
    torch.manual_seed(0)
    net = GRU4RecNet(N, layers, "onehot", dropout_embed=0.5, dropout_hidden=0.0)
    items = torch.arange(N).repeat(20)
    hidden = net.init_hidden(items.numel())
    net.eval()
    _, clean = net(items, hidden)
    net.train()
    _, dropped = net(items, hidden)
    first, ref = dropped[0], clean[0]
    zero = first == 0
    assert 0.35 < zero.float().mean().item() < 0.65
    assert torch.allclose(first[~zero], 2.0 * ref[~zero], atol=1e-6)
    net.dropout_embed.p = 0.0
    _, undropped = net(items, hidden)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(undropped, clean, strict=True))


def test_init_is_glorot_uniform_per_gate_block_and_biases_are_zero():
    net = GRU4RecNet(200, [50], "shared")
    cell = net.cells[0]
    assert cell.weight_ih.abs().max() <= math.sqrt(6 / (50 + 50))
    assert cell.weight_ih.abs().max() > 0.9 * math.sqrt(6 / (50 + 50))
    assert net.output_weight.abs().max() <= math.sqrt(6 / (200 + 50))
    assert (cell.bias_ih == 0).all() and (net.output_bias == 0).all()


def test_bad_network_config_is_a_config_error():
    with pytest.raises(ConfigError, match="model.embedding"):
        GRU4RecNet(N, [8], "dense")
    with pytest.raises(ConfigError, match="model.layers"):
        GRU4RecNet(N, [], "shared")
    with pytest.raises(ConfigError, match="dropout_hidden"):
        GRU4RecNet(N, [8], "shared", dropout_hidden=1.0)
    with pytest.raises(ConfigError, match="model.loss"):
        make_model(loss="hinge")
    with pytest.raises(ConfigError, match="tie_mode"):
        make_model(tie_mode="random")


# -- optimiser -----------------------------------------------------------------------------------
def test_adagradm_dense_step_matches_the_formula():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = AdagradM([p], lr=0.1, momentum=0.0, eps=1e-6)
    acc = np.zeros(2)
    w = np.array([1.0, -2.0])
    for g in ([0.5, 0.0], [0.1, -0.3]):
        p.grad = torch.tensor(g)
        opt.step()
        acc += np.square(g)
        w -= 0.1 * np.array(g) / np.sqrt(acc + 1e-6)
    np.testing.assert_allclose(p.detach().numpy(), w, rtol=1e-6)


def test_adagradm_sparse_updates_touch_only_their_rows_even_with_momentum():
    torch.manual_seed(0)
    base = torch.randn(6, 3)
    dense_p = torch.nn.Parameter(base.clone())
    sparse_p = torch.nn.Parameter(base.clone())
    opt_d = AdagradM([dense_p], lr=0.1)
    opt_s = AdagradM([sparse_p], lr=0.1)
    for rows in ([0, 2], [2, 5]):
        idx = torch.tensor(rows)
        (torch.nn.functional.embedding(idx, dense_p).sum() * 2).backward()
        (torch.nn.functional.embedding(idx, sparse_p, sparse=True).sum() * 2).backward()
        assert sparse_p.grad.is_sparse
        opt_d.step(), opt_s.step()
        opt_d.zero_grad(), opt_s.zero_grad()
    assert torch.allclose(dense_p, sparse_p)  # without momentum: zero-gradient rows do not move either way
    # with momentum, rows without a gradient keep their momentum but do not move (official sparse semantics)
    p = torch.nn.Parameter(base.clone())
    opt = AdagradM([p], lr=0.1, momentum=0.5)
    torch.nn.functional.embedding(torch.tensor([1]), p, sparse=True).sum().backward()
    opt.step(), opt.zero_grad()
    moved = p.detach().clone()
    torch.nn.functional.embedding(torch.tensor([3]), p, sparse=True).sum().backward()
    opt.step()
    assert torch.equal(p[1], moved[1]) and not torch.equal(p[3], moved[3])
    upd = 1.0 / math.sqrt(1.0 + 1e-6)
    assert torch.allclose(moved[1], base[1] - 0.1 * upd)


class ReferenceAdagradM:
    """The formula, one tensor at a time in numpy float64: ``acc += g²``; ``u = g / sqrt(acc + eps)``; without
    momentum ``p −= lr u``, with it ``m = μ m − lr u``, ``p += m``. A parameter without a gradient is skipped."""

    def __init__(self, values: list[np.ndarray], lr: float, momentum: float, eps: float) -> None:
        self.p = [v.astype(np.float64).copy() for v in values]
        self.acc = [np.zeros_like(v) for v in self.p]
        self.mom = [np.zeros_like(v) for v in self.p]
        self.lr, self.momentum, self.eps = lr, momentum, eps

    def step(self, grads: list[np.ndarray | None]) -> None:
        for k, g in enumerate(grads):
            if g is None:
                continue
            self.acc[k] = self.acc[k] + g * g
            u = g / np.sqrt(self.acc[k] + self.eps)
            if self.momentum > 0:
                self.mom[k] = self.momentum * self.mom[k] - self.lr * u
                self.p[k] = self.p[k] + self.mom[k]
            else:
                self.p[k] = self.p[k] - self.lr * u


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("momentum", [0.0, 0.3])
def test_adagradm_dense_update_matches_the_per_tensor_formula(momentum, dtype):
    """Several dense parameters of different shapes (updated together: torch's fused Adagrad kernel without momentum,
    its foreach one for a non-contiguous parameter, tensor by tensor with momentum), several steps, one parameter without a gradient
    at some steps, some gradients non-contiguous (the fused kernel reads memory linearly): every tensor equals the
    per-tensor reference."""
    g = torch.Generator().manual_seed(0)
    shapes = [(5, 3), (7,), (2, 4, 3), (1,), (3, 6)]
    params = [torch.nn.Parameter(torch.randn(s, generator=g, dtype=dtype)) for s in shapes]
    params[4] = torch.nn.Parameter(torch.randn(6, 3, generator=g, dtype=dtype).T)  # not contiguous
    tol = 1e-6 if dtype == torch.float32 else 1e-12  # a few float32 ulps
    ref = ReferenceAdagradM([p.detach().double().numpy() for p in params], lr=0.07, momentum=momentum, eps=1e-6)
    opt = AdagradM(params, lr=0.07, momentum=momentum, eps=1e-6)
    for step in range(6):
        grads = []
        for k, p in enumerate(params):
            if k == 2 and step in (1, 4):  # no gradient this step: neither moved nor accumulated
                p.grad = None
                grads.append(None)
                continue
            grad = torch.randn(p.shape, generator=g, dtype=dtype) * (0.1 + k)
            if k == 0 and step % 2:  # the same values in a transposed layout
                grad = grad.T.contiguous().T
            p.grad = grad
            grads.append(grad.double().numpy())
        opt.step()
        ref.step(grads)
        for k, p in enumerate(params):
            np.testing.assert_allclose(p.detach().double().numpy(), ref.p[k], rtol=tol, atol=tol)
            np.testing.assert_allclose(opt.state[p]["sum"].double().numpy(), ref.acc[k] + 1e-6, rtol=1e-6, atol=1e-7)
            if momentum > 0:
                np.testing.assert_allclose(opt.state[p]["mom"].double().numpy(), ref.mom[k], rtol=1e-6, atol=1e-7)
    assert all(p.dtype == dtype for p in params)


def test_adagradm_mixes_dense_and_sparse_parameters_and_param_groups():
    """A sparse embedding next to dense weights, two groups with their own lr: each tensor follows its formula
    (rows without a gradient stay untouched on the sparse side)."""
    torch.manual_seed(1)
    table = torch.nn.Parameter(torch.randn(6, 3, dtype=torch.float64))
    w = torch.nn.Parameter(torch.randn(3, 2, dtype=torch.float64))
    b = torch.nn.Parameter(torch.randn(2, dtype=torch.float64))
    opt = AdagradM([{"params": [table, w]}, {"params": [b], "lr": 0.2}], lr=0.05, momentum=0.0)
    dense_ref = ReferenceAdagradM([table.detach().numpy(), w.detach().numpy()], lr=0.05, momentum=0.0, eps=1e-6)
    b_ref = ReferenceAdagradM([b.detach().numpy()], lr=0.2, momentum=0.0, eps=1e-6)
    for rows in ([0, 2], [2, 5], [1]):
        idx = torch.tensor(rows)
        out = torch.nn.functional.embedding(idx, table, sparse=True) @ w + b
        out.pow(2).sum().backward()
        grads = [table.grad.to_dense().numpy(), w.grad.numpy(), b.grad.numpy()]
        opt.step()
        opt.zero_grad()
        dense_ref.step(grads[:2])  # untouched rows have a zero gradient: no move, no accumulation, as sparse
        b_ref.step(grads[2:])
        np.testing.assert_allclose(table.detach().numpy(), dense_ref.p[0], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(w.detach().numpy(), dense_ref.p[1], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(b.detach().numpy(), b_ref.p[0], rtol=1e-10, atol=1e-12)


# -- training step -------------------------------------------------------------------------------
def step_batch(inputs, targets, lanes, reset):
    return {"inputs": torch.tensor(inputs), "targets": torch.tensor(targets), "lanes": torch.tensor(lanes),
            "reset": torch.tensor(reset)}


def test_training_step_carries_detached_hidden_state_and_resets_by_mask():
    model = make_model(layers=[6])
    model.on_train_epoch_start()
    b1 = step_batch([1, 2, 3], [4, 5, 6], [0, 1, 2], [True, True, True])
    model.batch_loss(b1)
    h1 = [h.clone() for h in model._train_state.tensors]
    assert not any(h.requires_grad for h in h1)
    with torch.no_grad():
        _, ref = model.net(b1["inputs"], model.net.init_hidden(3))
    assert torch.allclose(h1[0], ref[0])
    # step 2: lane 1 starts a new session (reset), lane 2 is gone (the batch shrinks)
    b2 = step_batch([4, 9], [7, 8], [0, 1], [False, True])
    model.batch_loss(b2)
    with torch.no_grad():
        _, ref2 = model.net(b2["inputs"], [torch.stack([h1[0][0], torch.zeros(6)])])
    assert torch.allclose(model._train_state.tensors[0][:2], ref2[0], atol=1e-6)
    assert torch.equal(model._train_state.tensors[0][2], h1[0][2])  # an idle lane keeps its state


def test_loss_is_summed_over_lanes_and_divided_by_the_configured_batch_size():
    info = make_info(n_sample=5, batch_size=10)
    model = make_model(info=info, layers=[6], loss="bpr-max", bpreg=0.5, elu_param=1.0)
    model.on_train_epoch_start()
    batch = step_batch([1, 2, 3], [4, 5, 6], [0, 1, 2], [True, True, True])
    negatives, log_q = StepNegatives(SessionNegativeSampler(5, 0.5).bind(item_counts=info.item_support), 0, 0).steps(0, 1)
    batch["negatives"], batch["neg_log_q"] = negatives[0], log_q[0]  # a step of a training chunk
    negatives = negatives[0]
    (loss,) = model.batch_loss(batch)
    assert negatives.numel() == 5
    with torch.no_grad():
        out, _ = model.net(batch["inputs"], model.net.init_hidden(3))  # the GRU itself: tested above
    columns = torch.cat([batch["targets"], negatives]).numpy()
    weight = model.net.output_weight.detach().double().numpy()
    bias = model.net.output_bias.detach().double().numpy()[:, 0]
    scores = out.double().numpy() @ weight[columns].T + bias[columns]  # O = h Wy[cols]ᵀ + by[cols], (3, 3 + 5)
    expected = sum(brute_bpr_max(row, b, bpreg=0.5, elu_param=1.0) for b, row in enumerate(scores)) / 10  # not / 3
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def brute_bpr_max(row, b: int, bpreg: float, elu_param: float) -> float:
    """BPR-max of one score row with the positive in column ``b`` (algorithms.md §3.4), in plain Python:
    ELU, softmax ``s`` over the negatives, ``−log Σ_j s_j σ(o_b − o_j) + bpreg Σ_j s_j o_j²``."""
    o = [x if x > 0 else elu_param * (math.exp(x) - 1.0) for x in row]
    neg = [j for j in range(len(o)) if j != b]
    top = max(o[j] for j in neg)
    z = sum(math.exp(o[j] - top) for j in neg)
    s = {j: math.exp(o[j] - top) / z for j in neg}
    ranked = sum(s[j] / (1.0 + math.exp(-(o[b] - o[j]))) for j in neg)
    return -math.log(ranked) + bpreg * sum(s[j] * o[j] ** 2 for j in neg)


def test_logq_uses_support_for_in_batch_columns_and_support_pow_alpha_for_samples():
    info = make_info(n_sample=4, alpha=0.25)
    model = make_model(info=info, loss="cross-entropy", logq=1.0, layers=[5])
    sampler = SessionNegativeSampler(n_sample=4, alpha=0.25).bind(item_counts=info.item_support)
    draws, log_q = StepNegatives(sampler, seed=0, epoch=0).steps(0, 1)  # what the training loader puts in a step
    targets, negatives = torch.tensor([3, 8]), draws[0]
    step = next(model.chunk_steps({"inputs": targets, "targets": targets, "lanes": torch.arange(2),
                                   "reset": torch.ones(2, dtype=torch.bool), "ptr": torch.tensor([0, 2]),
                                   "negatives": draws, "neg_log_q": log_q}))
    scores = torch.zeros(2, step["candidates"].numel())  # the step's distinct column items
    got = model.step_loss(scores, step)
    q = torch.cat([info.item_support[targets].double(), info.item_support[negatives].double() ** 0.25])
    logits = -torch.log(q)
    expected = -(logits - torch.logsumexp(logits, 0))[:2]
    assert torch.allclose(got.double(), expected, atol=1e-5)


def test_negatives_come_from_the_bound_sampler_in_bulk():
    info = make_info(n_sample=64, alpha=1.0)
    sampler = SessionNegativeSampler(n_sample=64, alpha=1.0).bind(item_counts=info.item_support)
    negatives, _ = StepNegatives(sampler, seed=0, epoch=0).steps(0, 50)
    assert negatives.shape == (50, 64)
    draws = negatives.reshape(-1)
    counts = torch.bincount(draws, minlength=N).double()
    expected = info.item_support.double() / info.item_support.sum() * draws.numel()
    assert ((counts - expected).abs() / expected.sqrt().clamp_min(1)).max() < 6  # ∝ supp^1
    # without extras the training chunks carry none (the model scores the other lanes' targets only)
    sessions = SessionSequences.from_lengths(np.array([3, 4, 2]), np.arange(9) % N)
    no_extras = SessionNegativeSampler(n_sample=0).bind(item_counts=info.item_support)
    chunk = next(iter(SessionParallelChunks(sessions, 2, negatives=no_extras)))
    assert "negatives" not in chunk and "neg_log_q" not in chunk


def test_uniform_sampler_gives_alpha_zero():
    from recsys.data.session_datamodule import SessionDataModule
    from recsys.data.sources.session_synthetic import SyntheticSessionSource

    source = SyntheticSessionSource(num_items=40, num_sessions=300, num_days=5)
    dm = SessionDataModule(source, batch_size=4, negative_sampler=UniformNegativeSampler(n_sample=8),
                           validate_on_test=True)
    dm.setup()
    info = dm.info
    assert info.n_sample == 8 and info.sample_alpha == 0.0 and info.batch_size == 4


def test_sparse_gradients_auto_follow_the_optimiser():
    model = make_model(layers=[4])  # 30 items > 2 x (4 lanes + 0 samples)
    model.configure_optimizers()
    assert model.net.sparse
    small = make_model(info=make_info(n_sample=20), layers=[4])
    small.configure_optimizers()
    assert not small.net.sparse  # more columns per step than items: dense Adagrad is the same and faster
    momentum = GRU4Rec(make_info(n_sample=20), partial(AdagradM, lr=0.05, momentum=0.3), layers=[4])
    momentum.configure_optimizers()
    assert momentum.net.sparse  # the official semantics need row-sparse updates with momentum
    adam = GRU4Rec(make_info(), partial(torch.optim.Adam, lr=1e-3), layers=[4])
    adam.configure_optimizers()
    assert not adam.net.sparse
    forced = GRU4Rec(make_info(), partial(torch.optim.Adam, lr=1e-3), layers=[4], sparse_gradients="true")
    with pytest.raises(ConfigError, match="sparse_gradients=false"):
        forced.configure_optimizers()


def test_no_sparse_gradients_under_ddp():
    """DDP reduces dense buckets only (a sparse gradient fails in the first backward), even with one process."""
    import pytorch_lightning as pl

    momentum = partial(AdagradM, lr=0.05, momentum=0.3)  # auto would choose sparse without DDP
    for strategy, sparse in (("auto", True), ("ddp", False)):
        model = GRU4Rec(make_info(), momentum, layers=[4])
        model.trainer = pl.Trainer(accelerator="cpu", devices=1, strategy=strategy, logger=False)
        model.configure_optimizers()
        assert model.net.sparse is sparse
    forced = GRU4Rec(make_info(), momentum, layers=[4], sparse_gradients="true")
    forced.trainer = pl.Trainer(accelerator="cpu", devices=1, strategy="ddp", logger=False)
    with pytest.raises(ConfigError, match="sparse_gradients=false"):
        forced.configure_optimizers()


class _OtherRankAdds:
    """A strategy whose sum-reduction adds another rank's (loss sum, steps)."""

    def __init__(self, other: tuple[float, float]) -> None:
        self.other, self.calls = torch.tensor(other), 0

    def reduce(self, tensor: torch.Tensor, reduce_op: str) -> torch.Tensor:
        assert reduce_op == "sum"
        self.calls += 1
        return tensor + self.other


@pytest.mark.parametrize(("local", "other", "expected"), [
    ((0.0, 0), (6.0, 3.0), 2.0),  # this rank had only padding steps: it still joins the reduction
    ((4.0, 1), (6.0, 3.0), 2.5),  # the mean over all real steps, not the mean of the ranks' means (2.75)
    ((0.0, 0), (0.0, 0.0), None),  # no real step anywhere: nothing logged
])
def test_epoch_loss_is_reduced_over_every_rank(local, other, expected):
    model = GRU4Rec(make_info(), partial(AdagradM, lr=0.05), layers=[4])
    strategy = _OtherRankAdds(other)
    model._trainer = type("FakeTrainer", (), {"strategy": strategy})()
    logged = {}
    model.log = lambda name, value, **kwargs: logged.update({name: float(value)})
    model._loss_sums = torch.tensor([local[0], float(local[1])]) if local[1] else None  # (Σ loss, steps)
    model.on_train_epoch_end()
    assert strategy.calls == 1
    assert logged.get("train/loss") == (pytest.approx(expected) if expected is not None else None)


# -- evaluation ----------------------------------------------------------------------------------
def brute_force_rank(scores: np.ndarray, target: int, mode: str) -> float:
    """Sort, then take the first / last / mean position (1-based) of the block tied with the target."""
    order = sorted(range(len(scores)), key=lambda j: -scores[j])
    tied = [pos + 1 for pos, j in enumerate(order) if scores[j] == scores[target]]
    return {"standard": tied[0], "conservative": tied[-1], "median": sum(tied) / len(tied)}[mode]


@pytest.mark.parametrize("mode", ["standard", "conservative", "median"])
def test_ranks_with_ties_against_brute_force(mode):
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 4, size=(50, 12)).astype(np.float32)  # many ties
    targets = rng.integers(0, 12, size=50)
    got = next_item_ranks(torch.from_numpy(scores), torch.from_numpy(targets), mode)
    expected = [brute_force_rank(scores[b], int(targets[b]), mode) for b in range(50)]
    assert got.tolist() == expected
    assert mode != "median" or any(r != int(r) for r in expected)  # fractional ranks occur
    metric = TopKMetrics([5, 10], ["recall", "mrr", "ndcg"])
    metric.update(ranks=got)
    values = metric.compute()
    exp = np.array(expected)
    assert values["recall@5"].item() == pytest.approx(np.mean(exp <= 5), abs=1e-6)
    assert values["mrr@10"].item() == pytest.approx(np.mean(np.where(exp <= 10, 1.0 / exp, 0.0)), abs=1e-6)
    assert values["ndcg@10"].item() == pytest.approx(np.mean(np.where(exp <= 10, 1.0 / np.log2(exp + 1), 0.0)), abs=1e-6)


def brute_single_target_metrics(rank: float, k: int) -> dict[str, float]:
    """One relevant item at 1-based ``rank`` (|T| = 1, IDCG = 1), written per metric in plain Python."""
    hit = rank <= k
    return {"recall": float(hit), "ndcg": 1.0 / math.log2(rank + 1.0) if hit else 0.0,
            "precision": 1.0 / k if hit else 0.0, "hit_rate": float(hit), "mrr": 1.0 / rank if hit else 0.0}


@pytest.mark.parametrize("fractional", [False, True])
def test_update_ranks_and_one_hot_hit_rows_match_brute_force(fractional):
    """Both update paths against a per-row Python reference (all five metrics); fractional ranks are what the
    ``median`` tie rule produces (ranks path only: a hit row cannot hold them)."""
    ks = (1, 5, 20, 30)
    g = torch.Generator().manual_seed(3)
    ranks = torch.randint(1, 40, (200,), generator=g).double()  # some beyond the widest cut-off
    if fractional:
        ranks = ranks + 0.5 * (torch.rand(200, generator=g) < 0.5)
    want = {f"{m}@{k}": sum(brute_single_target_metrics(float(r), k)[m] for r in ranks.tolist()) / 200
            for m in ("recall", "ndcg", "precision", "hit_rate", "mrr") for k in ks}
    paths = {"ranks": TopKMetrics(ks)}
    paths["ranks"].update(ranks=ranks)
    if not fractional:
        hits = torch.arange(1, 31)[None, :] == ranks[:, None]  # (200, 30): the item at rank r is the relevant one
        paths["rows"] = TopKMetrics(ks)
        paths["rows"].update(hits, torch.ones(200, dtype=torch.long))
    for path, metric in paths.items():
        assert float(metric.count) == 200, path
        got = metric.compute()
        assert set(got) == set(want), path
        for key, value in want.items():
            assert float(got[key]) == pytest.approx(value, abs=1e-6), (path, key)


@pytest.mark.filterwarnings("error:The ``compute`` method")  # torchmetrics: compute() before any update()
def test_rank_updates_go_through_torchmetrics_bookkeeping():
    metric = TopKMetrics((5,), ["recall"])
    metric.update(ranks=torch.tensor([1, 9]))
    assert metric.compute()["recall@5"].item() == pytest.approx(0.5)
    metric.update(ranks=torch.tensor([2, 3]))  # invalidates the cached compute() value
    assert metric.compute()["recall@5"].item() == pytest.approx(0.75)


@pytest.mark.parametrize("embedding", ["shared", "onehot"])
def test_session_parallel_evaluation_equals_per_session_reference(embedding):
    rng = np.random.default_rng(2)
    lengths = rng.integers(1, 7, size=23)
    test = SessionSequences.from_lengths(lengths, rng.integers(0, N, size=int(lengths.sum())))
    model = make_model(layers=[8, 5], embedding=embedding, tie_mode="conservative", topk=[5, 10, 20],
                       dropout_hidden=0.3, dropout_embed=0.3)
    model.eval()
    model.on_validation_epoch_start()
    for chunk in SessionParallelChunks(test, 4, steps_per_chunk=5):  # several steps per evaluation batch
        model.validation_step(chunk, 0)
    got = {k: v.item() for k, v in model.val_metrics.compute().items()}
    # reference: every test session alone, hidden state from zero, all items scored at every event but the last
    ranks = []
    with torch.no_grad():
        for seq in np.split(test.items, test.offsets)[1:-1]:  # one array per session
            hidden = model.net.init_hidden(1)
            for x, y in zip(seq[:-1], seq[1:], strict=True):
                scores, hidden = model(torch.tensor([x]), hidden)
                ranks.append(brute_force_rank(scores[0].numpy(), y, "conservative"))
    r = np.array(ranks)
    assert len(r) == test.num_steps
    for k in (5, 10, 20):
        assert got[f"recall@{k}"] == pytest.approx(np.mean(r <= k), abs=1e-6)
        assert got[f"mrr@{k}"] == pytest.approx(np.mean(np.where(r <= k, 1.0 / r, 0.0)), abs=1e-6)


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("embedding", ["shared", 5])
def test_candidate_scores_picked_by_column_equal_the_column_slice(sparse, embedding):
    """train_scores: each column's score (its candidate's), the new hidden state and every gradient equal the
    network's forward and ``h Wy[c]ᵀ + by[c]`` by hand (duplicate columns and an input item among the candidates
    included), dense or row-sparse gradients, shared or separate input embedding."""
    torch.manual_seed(0)
    net = GRU4RecNet(30, [6], embedding)
    net.set_sparse(sparse)
    ref = GRU4RecNet(30, [6], embedding)
    ref.load_state_dict(net.state_dict())
    items, hidden = torch.tensor([3, 0, 21, 3]), [torch.randn(4, 6)]
    columns = torch.tensor([3, 7, 7, 0, 29, 12, 3, 18, 25, 1, 2, 4, 5, 6, 8, 9, 10, 11])
    candidates, column_item = torch.unique(columns, return_inverse=True)
    scores, new = net.train_scores(items, hidden, candidates)
    assert scores.shape[1] == 16  # the distinct items
    got = scores[:, column_item]
    (got * torch.arange(got.numel(), dtype=got.dtype).view_as(got)).sum().backward()
    h, want_new = ref(items, hidden)
    want = h @ ref.output_weight[columns].T + ref.output_bias[columns, 0]
    (want * torch.arange(want.numel(), dtype=want.dtype).view_as(want)).sum().backward()
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(new[0], want_new[0])
    for (name, p), q in zip(net.named_parameters(), ref.parameters(), strict=True):
        assert p.grad.is_sparse == (sparse and name in ("output_weight", "output_bias", "input_embedding")), name
        torch.testing.assert_close(p.grad.to_dense(), q.grad, rtol=1e-6, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")
