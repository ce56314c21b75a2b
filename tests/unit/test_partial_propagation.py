"""A BPR step computed at the batch's rows only equals the full-propagation step (issue 13, item 2).

``GraphRecommender.batch_loss`` propagates the last layer only at the nodes a batch reads (its users, positives
and negatives: ``adj.rows(R) @ x``) unless they cover more than ``GraphRecommender.full_pass_fraction`` of the graph. The
reference is the same module with the fraction forced to 0 (the whole graph propagated, then gathered): the
loss and every parameter gradient must agree to 1e-6, for MF, LightGCN and NGCF (every normalisation, with and
without dropout; dropout draws from the global RNG, seeded identically before each of the two computations)
and for the batches of every negative sampler.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from recsys.data.bpr_batches import BPREpochSampler
from recsys.info import DatasetInfo, UserItemCSR
from recsys.models.components.lightgcn import LightGCNEncoder
from recsys.models.components.ngcf import NGCFEncoder
from recsys.models.graph_module import GraphRecommender
from recsys.sampling import (
    HardNegativeSampler,
    InBatchNegativeSampler,
    PopularityNegativeSampler,
    UniformNegativeSampler,
)

M, N = 20, 25


def small_graph() -> UserItemCSR:
    """A random bipartite graph; every user has 1..6 items (a negative always exists), some items are isolated."""
    rng = np.random.default_rng(0)
    pairs = sorted({(u, int(i)) for u in range(M) for i in rng.choice(N - 3, size=int(rng.integers(1, 7)),
                                                                      replace=False)})
    users, items = (torch.tensor(x) for x in zip(*pairs, strict=True))
    return UserItemCSR.from_pairs(users, items, M, N)


MODELS = {
    "mf": dict(encoder=LightGCNEncoder, num_layers=0),
    "lightgcn2": dict(encoder=LightGCNEncoder, num_layers=2),
    "lightgcn3": dict(encoder=LightGCNEncoder, num_layers=3),
    "lightgcn2_learned": dict(encoder=LightGCNEncoder, num_layers=2, layer_weights="learned"),
    "lightgcn2_edge_dropout": dict(encoder=LightGCNEncoder, num_layers=2, edge_dropout=0.3),
    **{
        f"ngcf_{norm}_{mode}": dict(
            encoder=NGCFEncoder, layer_sizes=[6, 5], adj_norm=norm, eval_mode=mode == "eval",
            node_dropout=0.0 if mode == "no_dropout" else 0.2,
            message_dropout=0.0 if mode == "no_dropout" else [0.3, 0.25],
        )
        for norm in ("sym", "sym_self_loop", "rw_self_loop")
        for mode in ("no_dropout", "eval", "train_dropout")
    },
}

SAMPLERS = {
    "uniform": lambda: UniformNegativeSampler(),
    "popularity": lambda: PopularityNegativeSampler(alpha=1.0),
    "in_batch": lambda: InBatchNegativeSampler(n_sample=3),
    "hard": lambda: HardNegativeSampler(candidates=4),
    "uniform_shared": lambda: UniformNegativeSampler(n_sample=3),
}


def make_model(name: str, train: UserItemCSR) -> GraphRecommender:
    kwargs = dict(MODELS[name])
    encoder, eval_mode = kwargs.pop("encoder"), kwargs.pop("eval_mode", False)
    torch.manual_seed(0)
    model = GraphRecommender(DatasetInfo(M, N, train), encoder=encoder,
                             optimizer=functools.partial(torch.optim.Adam, lr=1e-3), reg_weight=0.1,
                             embedding_dim=8, **kwargs)
    if kwargs.get("layer_weights") == "learned":  # away from uniform, so the logits' gradient is not trivial
        with torch.no_grad():
            model.encoder.layer_logits.copy_(torch.tensor([0.3, -0.2, 0.5]))
    return model.eval() if eval_mode else model.train()


def loss_and_grads(model: GraphRecommender, batch: dict[str, torch.Tensor], fraction: float, seed: int,
                   monkeypatch: pytest.MonkeyPatch) -> tuple[torch.Tensor, dict[str, torch.Tensor], list[bool]]:
    """``(loss, bpr)``, the gradient of every parameter, and whether the encoder was asked for rows only."""
    model.full_pass_fraction = fraction
    calls: list[bool] = []
    forward = type(model.encoder).forward

    def spy(enc, adj, rows=None):
        calls.append(rows is not None)
        return forward(enc, adj, rows)

    monkeypatch.setattr(type(model.encoder), "forward", spy)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # the dropout masks of both computations come from the same global-RNG state
    loss, bpr = model.batch_loss(batch)
    loss.backward()
    monkeypatch.setattr(type(model.encoder), "forward", forward)
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
    return torch.stack([loss.detach(), bpr.detach()]), grads, calls


@pytest.mark.parametrize("sampler", list(SAMPLERS))
@pytest.mark.parametrize("model_name", list(MODELS))
def test_rows_path_equals_full_propagation(monkeypatch, model_name, sampler):
    train = small_graph()
    model = make_model(model_name, train)
    negatives = SAMPLERS[sampler]().bind(train)
    epoch = BPREpochSampler(train, negatives, batch_size=6, seed=3)
    batches = list(epoch.batches())[:3]
    if sampler == "hard":
        assert "neg_candidates" in batches[0]
    for k, batch in enumerate(batches):
        full, full_grads, full_calls = loss_and_grads(model, batch, 0.0, seed=100 + k, monkeypatch=monkeypatch)
        rows, rows_grads, rows_calls = loss_and_grads(model, batch, 1.0, seed=100 + k, monkeypatch=monkeypatch)
        assert full_calls == [False] and rows_calls == [True]  # the two paths were taken
        torch.testing.assert_close(rows, full, rtol=1e-6, atol=1e-6)
        assert rows_grads.keys() == full_grads.keys() == {n for n, _ in model.named_parameters()}
        for name, grad in full_grads.items():
            assert grad.abs().max() > 0 or name.startswith("encoder.layers.0.b")  # a real gradient flows
            torch.testing.assert_close(rows_grads[name], grad, rtol=1e-6, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("model_name", ["lightgcn2_edge_dropout", "ngcf_sym_train_dropout",
                                        "ngcf_rw_self_loop_train_dropout"])
def test_dropout_is_active_in_the_compared_training_steps(monkeypatch, model_name):
    """The dropout cases above compare something: in training mode the loss differs from the eval-mode loss and
    from another seed's, and equals itself under the same seed."""
    train = small_graph()
    model = make_model(model_name, train)
    batch = next(BPREpochSampler(train, UniformNegativeSampler().bind(train), batch_size=6, seed=3).batches())
    a, _, _ = loss_and_grads(model, batch, 1.0, seed=1, monkeypatch=monkeypatch)
    b, _, _ = loss_and_grads(model, batch, 1.0, seed=1, monkeypatch=monkeypatch)
    c, _, _ = loss_and_grads(model, batch, 1.0, seed=2, monkeypatch=monkeypatch)
    model.eval()
    d, _, _ = loss_and_grads(model, batch, 1.0, seed=1, monkeypatch=monkeypatch)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c) and not torch.allclose(a, d)


def test_full_pass_fraction_switches_on_the_share_of_nodes_read(monkeypatch):
    """A step reading more than half of the nodes (e.g. many hard candidates) propagates the whole graph."""
    train = small_graph()
    model = make_model("lightgcn2", train)
    small = {"users": torch.tensor([0, 1]), "pos_items": torch.tensor([0, 1]), "neg_items": torch.tensor([[2], [3]])}
    large = {"users": torch.arange(M), "pos_items": torch.arange(M), "neg_items": torch.arange(N)[:M, None]}
    assert GraphRecommender.full_pass_fraction == 0.5
    for batch, rows_only in ((small, True), (large, False)):
        _, _, calls = loss_and_grads(model, batch, 0.5, seed=0, monkeypatch=monkeypatch)
        assert calls == [rows_only]
