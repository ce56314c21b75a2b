"""NGCF encoder against a dense re-implementation of its formulas (algorithms.md §2), and BPR-MF."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf

from recsys.data.synthetic import generate_synthetic_graph
from recsys.errors import ConfigError
from recsys.info import DatasetInfo, UserItemCSR
from recsys.models.components.adjacency import SparseAdjacency, normalized_adjacency
from recsys.models.components.lightgcn import LightGCNEncoder
from recsys.models.components.ngcf import NGCFEncoder, NGCFLayer, dropout_noise
from recsys.models.graph_module import GraphRecommender

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

# a tiny bipartite graph: 4 users, 5 items; item 4 and user 3 have a single edge each
PAIRS = [(0, 0), (0, 1), (0, 2), (1, 1), (1, 3), (2, 0), (2, 2), (2, 3), (2, 4), (3, 4)]
M, N = 4, 5


def tiny_csr() -> UserItemCSR:
    u, i = zip(*PAIRS, strict=True)
    return UserItemCSR.from_pairs(torch.tensor(u), torch.tensor(i), M, N)


def tiny_adjacency(adj_norm: str) -> SparseAdjacency:
    """The operator as the LightningModule builds it: from the train edge list and the sizes."""
    u, i = zip(*PAIRS, strict=True)
    return normalized_adjacency(torch.tensor(u), torch.tensor(i), M, N, adj_norm)


def layer_sizes(enc: NGCFEncoder) -> list[int]:
    return [layer.w1.shape[1] for layer in enc.layers]


def dense_adjacency() -> torch.Tensor:
    """A = [[0, R], [Rᵀ, 0]] in float64, built independently of the library."""
    a = torch.zeros(M + N, M + N, dtype=torch.float64)
    for u, i in PAIRS:
        a[u, M + i] = a[M + i, u] = 1.0
    return a


def dense_operator(adj_norm: str) -> torch.Tensor:
    a = dense_adjacency()
    eye = torch.eye(M + N, dtype=torch.float64)
    if adj_norm == "rw_self_loop":  # D~^-1 (A + I)
        a_i = a + eye
        return a_i / a_i.sum(1, keepdim=True)
    if adj_norm == "sym":  # D^-1/2 A D^-1/2
        d = a.sum(1).rsqrt()
        return d[:, None] * a * d[None, :]
    a_i = a + eye  # sym_self_loop: D~^-1/2 (A + I) D~^-1/2
    d = a_i.sum(1).rsqrt()
    return d[:, None] * a_i * d[None, :]


def dense_ngcf(enc: NGCFEncoder, adj_norm: str, bias: bool, per_branch: bool, normalize: bool) -> torch.Tensor:
    """The layer formulas written out with dense float64 matrices, one node at a time where possible."""
    op = dense_operator(adj_norm)
    eye = torch.eye(M + N, dtype=torch.float64)
    e = enc.embedding.weight.double()
    out = [e]
    for layer in enc.layers:
        w1, w2 = layer.w1.double(), layer.w2.double()
        b1 = layer.b1.double() if bias else 0.0
        b2 = layer.b2.double() if bias else 0.0
        if adj_norm == "sym":  # paper Eq. 7: (L + I) E W1 + (L E ⊙ E) W2
            s = (op + eye) @ e @ w1 + b1
            b = ((op @ e) * e) @ w2 + b2
        else:  # official code: S = L̂ E; S W1 + (E ⊙ S) W2
            side = op @ e
            s = side @ w1 + b1
            b = (e * side) @ w2 + b2
        lrelu = lambda x: torch.where(x > 0, x, 0.2 * x)  # noqa: E731
        e = lrelu(s) + lrelu(b) if per_branch else lrelu(s + b)
        out.append(e / e.norm(dim=1, keepdim=True) if normalize else e)
    return torch.cat(out, 1)


OPTIONS = list(itertools.product(["rw_self_loop", "sym", "sym_self_loop"], [True, False], [True, False], [True, False]))


@pytest.mark.parametrize(("adj_norm", "bias", "per_branch", "normalize"), OPTIONS)
def test_layers_match_dense_formula(adj_norm: str, bias: bool, per_branch: bool, normalize: bool) -> None:
    torch.manual_seed(0)
    enc = NGCFEncoder(
        M, N, embedding_dim=6, layer_sizes=[5, 4], adj_norm=adj_norm, bias=bias,
        activation_per_branch=per_branch, normalize_layers=normalize, node_dropout=0.3, message_dropout=0.3,
    ).eval()
    assert enc.adjacency_norm == adj_norm
    adj = tiny_adjacency(enc.adjacency_norm)
    torch.testing.assert_close(adj.matrix.to_dense().double(), dense_operator(adj_norm), rtol=1e-6, atol=1e-7)
    out = enc(adj)
    expected = dense_ngcf(enc, adj_norm, bias, per_branch, normalize)
    assert out.shape == (M + N, 6 + 5 + 4)
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-6)
    # the rows path (last layer at the rows only) gives the same numbers at those rows
    rows = torch.tensor([M + 4, 0, 3, M, 0])
    torch.testing.assert_close(enc(adj, rows).double(), expected[rows], rtol=1e-5, atol=1e-6)


def test_sym_self_term_only_in_the_sum_branch() -> None:
    """The paper form uses (L + I)E in the W1 branch but L E (no self term) in the element-wise product."""
    torch.manual_seed(0)
    enc = NGCFEncoder(M, N, embedding_dim=4, num_layers=1, adj_norm="sym").eval()
    got = enc(tiny_adjacency(enc.adjacency_norm)).double()
    e = enc.ego().double()
    op_i = dense_operator("sym") + torch.eye(M + N, dtype=torch.float64)
    layer = enc.layers[0]
    lrelu = lambda x: torch.where(x > 0, x, 0.2 * x)  # noqa: E731
    # the tempting but wrong variant: self term inside the bi-interaction as well
    wrong = lrelu(op_i @ e @ layer.w1.double() + layer.b1.double()) + lrelu(
        ((op_i @ e) * e) @ layer.w2.double() + layer.b2.double()
    )
    wrong = torch.cat([e, wrong / wrong.norm(dim=1, keepdim=True)], 1)
    assert not torch.allclose(got, wrong, atol=1e-4)
    torch.testing.assert_close(got, dense_ngcf(enc, "sym", True, True, True), rtol=1e-5, atol=1e-6)


def test_l2_term_is_on_the_final_embeddings() -> None:
    """Loss = mean softplus(ŷ_uj − ŷ_ui) + λ·½(‖e*_u‖² + ‖e*_i‖² + ‖e*_j‖²)/B on the concatenated embeddings."""
    torch.manual_seed(0)
    cfg = OmegaConf.load(CONFIGS / "model" / "ngcf.yaml")
    cfg.reg_weight = 0.5
    model = instantiate(cfg, info=DatasetInfo(M, N, tiny_csr()), _convert_="object").eval()
    u, i, j = torch.tensor([0, 1, 3]), torch.tensor([0, 1, 4]), torch.tensor([3, 4, 2])
    loss, _ = model.batch_loss({"users": u, "pos_items": i, "neg_items": j[:, None]})
    users, items = (t.detach().double() for t in model())
    eu, ei, ej = users[u], items[i], items[j]
    bpr = F.softplus((eu * ej).sum(1) - (eu * ei).sum(1)).mean()
    reg = 0.5 * (eu.pow(2).sum() + ei.pow(2).sum() + ej.pow(2).sum()) / 3
    torch.testing.assert_close(loss.detach().double(), bpr + 0.5 * reg, rtol=1e-5, atol=1e-6)


def test_next_layer_gets_unnormalised_output() -> None:
    """With normalize_layers the stored layer-1 block is normalised but layer 2 is fed the raw output."""
    torch.manual_seed(1)
    enc = NGCFEncoder(M, N, embedding_dim=4, num_layers=2, normalize_layers=True).eval()
    adj = tiny_adjacency(enc.adjacency_norm)
    out = enc(adj)
    blocks = out.split([4, 4, 4], dim=1)
    torch.testing.assert_close(blocks[1].norm(dim=1), torch.ones(M + N))
    torch.testing.assert_close(blocks[2].norm(dim=1), torch.ones(M + N))
    # feeding the *normalised* layer-1 output to layer 2 would give a different result
    op = dense_operator("rw_self_loop").float()
    x1n = blocks[1]
    side = op @ x1n
    l2 = enc.layers[1]
    wrong = F.leaky_relu(side @ l2.w1 + l2.b1, 0.2) + F.leaky_relu((x1n * side) @ l2.w2 + l2.b2, 0.2)
    assert not torch.allclose(F.normalize(wrong, dim=1), blocks[2], atol=1e-4)
    # and it is the dense float64 formula that feeds layer 2 the raw (unnormalised) layer-1 output
    expected = dense_ngcf(enc, "rw_self_loop", bias=True, per_branch=True, normalize=True)
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("sizes", "bias"), [([64, 64, 64], True), ([64, 64, 64], False), ([32, 16], True), ([], True)])
def test_parameter_count_matches_formula(sizes: list[int], bias: bool) -> None:
    m, n, d = 30, 20, 64
    enc = NGCFEncoder(m, n, embedding_dim=d, layer_sizes=sizes, bias=bias)
    dims = [d, *sizes]
    expected = (m + n) * d + sum(2 * dims[k] * dims[k + 1] + (2 * dims[k + 1] if bias else 0) for k in range(len(sizes)))
    assert sum(p.numel() for p in enc.parameters()) == expected


def test_num_layers_and_layer_sizes() -> None:
    assert layer_sizes(NGCFEncoder(5, 5, embedding_dim=8, num_layers=4)) == [8, 8, 8, 8]
    assert layer_sizes(NGCFEncoder(5, 5, embedding_dim=8, num_layers=3, layer_sizes=[8, 4])) == [8, 4]
    enc = NGCFEncoder(5, 5, num_layers=2, message_dropout=[0.1, 0.2])
    assert [layer.dropout for layer in enc.layers] == [0.1, 0.2]
    with pytest.raises(ConfigError, match=r"^model\.message_dropout=\[0\.1,0\.2\]: must be .* one per layer"):
        NGCFEncoder(5, 5, num_layers=3, message_dropout=[0.1, 0.2])
    with pytest.raises(ConfigError, match="model.adj_norm=mean: must be one of"):
        NGCFEncoder(5, 5, adj_norm="mean")
    with pytest.raises(ConfigError, match="model.node_dropout=1.0: must be a drop rate"):
        NGCFEncoder(5, 5, node_dropout=1.0)


def test_dropout_only_in_training() -> None:
    torch.manual_seed(0)
    enc = NGCFEncoder(M, N, embedding_dim=8, num_layers=3, node_dropout=0.3, message_dropout=0.3)
    adj = tiny_adjacency(enc.adjacency_norm)
    enc.eval()
    a, b = enc(adj), enc(adj)
    assert torch.equal(a, b)
    no_dropout = NGCFEncoder(M, N, embedding_dim=8, num_layers=3, node_dropout=0.0, message_dropout=0.0)
    no_dropout.load_state_dict(enc.state_dict())
    torch.testing.assert_close(no_dropout.eval()(adj), a)
    enc.train()
    c, d = enc(adj), enc(adj)
    assert not torch.allclose(c, d)
    assert not torch.allclose(c, a)
    # layer 0 (the ego block) is never dropped
    torch.testing.assert_close(c[:, :8], a[:, :8])


def test_node_dropout_is_rescaled_entry_dropout() -> None:
    """In training, layer 1 equals the dense formula on L̂ with entries dropped and scaled by 1/(1-p)."""
    torch.manual_seed(0)
    p = 0.5
    enc = NGCFEncoder(M, N, embedding_dim=4, num_layers=1, node_dropout=p, message_dropout=0.0).train()
    adj = tiny_adjacency(enc.adjacency_norm)
    torch.manual_seed(123)
    got = enc(adj)
    torch.manual_seed(123)
    keep = torch.rand(adj.values.shape) >= p  # the same draw as SparseAdjacency.edge_dropout
    dropped = torch.zeros(M + N, M + N)
    rows = torch.repeat_interleave(torch.arange(M + N), adj.crow.diff())  # CSR entry → row
    dropped[rows, adj.col] = adj.values * keep / (1 - p)
    e = enc.ego()
    side = dropped @ e
    layer = enc.layers[0]
    x = F.leaky_relu(side @ layer.w1 + layer.b1, 0.2) + F.leaky_relu((e * side) @ layer.w2 + layer.b2, 0.2)
    torch.testing.assert_close(got, torch.cat([e, F.normalize(x, dim=1)], 1), rtol=1e-5, atol=1e-6)


def test_mf_config_is_lightgcn_with_zero_layers() -> None:
    cfg = OmegaConf.load(CONFIGS / "model" / "mf.yaml")
    info = DatasetInfo(M, N, tiny_csr())
    torch.manual_seed(0)
    mf = instantiate(cfg, info=info, _convert_="object")
    assert isinstance(mf, GraphRecommender) and type(mf.encoder) is LightGCNEncoder
    assert mf.encoder.num_layers == 0 and mf.encoder.regularize_ego
    # same weights → same embeddings as a LightGCN encoder with 0 layers, and plain dot-product scores
    lgn = LightGCNEncoder(M, N, embedding_dim=cfg.embedding_dim, num_layers=0)
    lgn.load_state_dict(mf.encoder.state_dict())
    u, i = mf()
    nodes = lgn(mf.adjacency())
    assert torch.equal(u, nodes[:M]) and torch.equal(i, nodes[M:])
    assert torch.equal(u, mf.encoder.embedding.weight[:M]) and torch.equal(i, mf.encoder.embedding.weight[M:])
    mf.prepare_scoring()
    # MF score: the inner product of the raw ego rows, one (user, item) pair at a time
    eu = mf.encoder.embedding.weight[:M].detach().double().tolist()
    ei = mf.encoder.embedding.weight[M:].detach().double().tolist()
    want = torch.tensor([[sum(a * b for a, b in zip(eu[r], ei[c], strict=True)) for c in range(N)] for r in range(M)])
    torch.testing.assert_close(mf.score_users(torch.arange(M)).double(), want.double(), rtol=1e-5, atol=1e-6)
    mf.finish_scoring()


def test_ngcf_config_instantiates_with_official_defaults() -> None:
    cfg = OmegaConf.load(CONFIGS / "model" / "ngcf.yaml")
    model = instantiate(cfg, info=DatasetInfo(M, N, tiny_csr()), _convert_="object")
    enc = model.encoder
    assert isinstance(enc, NGCFEncoder) and not enc.regularize_ego
    assert layer_sizes(enc) == [64, 64, 64] and enc.adjacency_norm == "rw_self_loop"
    assert all(layer.activation_per_branch and not layer.paper_form for layer in enc.layers)
    assert all(layer.negative_slope == 0.2 for layer in enc.layers)
    assert enc.node_dropout == 0.1 and [layer.dropout for layer in enc.layers] == [0.1, 0.1, 0.1]
    assert model.reg_weight == 1e-5 and model.optimizer_factory.keywords["lr"] == 1e-4
    assert model.encoder.embedding.weight.shape == (M + N, 64)
    # the module built the encoder's operator, D̃⁻¹(A + I)
    torch.testing.assert_close(model.adjacency().matrix.to_dense().double(), dense_operator("rw_self_loop"),
                               rtol=1e-6, atol=1e-7)
    cfg.layer_sizes = [32, 16]
    wide = instantiate(cfg, info=DatasetInfo(M, N, tiny_csr()), _convert_="object").eval()
    users, items = wide()
    assert users.shape == (M, 112) and items.shape == (N, 112)  # d + Σ d_l = 64 + 32 + 16


def _tiny_batches(info: DatasetInfo, batch: int, steps: int, seed: int = 0):
    """BPR triples drawn independently of the library's samplers (uniform negatives, rejection)."""
    g = torch.Generator().manual_seed(seed)
    users, items = info.train.pairs()
    dense = torch.zeros(info.num_users, info.num_items, dtype=torch.bool)
    dense[users, items] = True
    for _ in range(steps):
        idx = torch.randint(users.numel(), (batch,), generator=g)
        u, i = users[idx], items[idx]
        j = torch.randint(info.num_items, (batch,), generator=g)
        bad = dense[u, j]
        while bad.any():
            j[bad] = torch.randint(info.num_items, (int(bad.sum()),), generator=g)
            bad = dense[u, j]
        yield u, i, j


@pytest.mark.parametrize("model_name", ["ngcf", "mf"])
def test_loss_decreases_on_tiny_dataset(model_name: str) -> None:
    splits = generate_synthetic_graph(num_users=80, num_items=60, min_interactions=5, max_interactions=20, seed=3)
    info = DatasetInfo(splits.num_users, splits.num_items, splits.csr("train"))
    cfg = OmegaConf.load(CONFIGS / "model" / f"{model_name}.yaml")
    cfg.optimizer.lr = 0.01
    torch.manual_seed(0)
    model = instantiate(cfg, info=info, _convert_="object")
    model.train()
    opt = model.configure_optimizers()
    losses = []
    for u, i, j in _tiny_batches(info, batch=64, steps=60):
        loss, _ = model.batch_loss({"users": u, "pos_items": i, "neg_items": j[:, None]})
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.8 * first, (first, last)


@pytest.mark.parametrize(("paper_form", "per_branch", "bias"), list(itertools.product([True, False], repeat=3)))
def test_layer_rule_matches_the_equations_on_any_subset_of_rows(paper_form: bool, per_branch: bool, bias: bool) -> None:
    """``NGCFLayer.forward(E, S)`` against the equations in float64, row by row; message dropout multiplies the
    output by the given noise (training only)."""
    torch.manual_seed(0)
    layer = NGCFLayer(5, 3, bias=bias, paper_form=paper_form, activation_per_branch=per_branch,
                      negative_slope=0.2, dropout=0.4).double().eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(9, 5, generator=g, dtype=torch.float64)
    side = torch.randn(9, 5, generator=g, dtype=torch.float64)
    lrelu = lambda v: torch.where(v > 0, v, 0.2 * v)  # noqa: E731
    b1 = layer.b1 if bias else 0.0
    b2 = layer.b2 if bias else 0.0
    want = []
    for r in range(9):  # one node at a time
        s = ((side[r] + x[r]) if paper_form else side[r]) @ layer.w1 + b1
        b = (x[r] * side[r]) @ layer.w2 + b2
        want.append((lrelu(s) + lrelu(b) if per_branch else lrelu(s + b)).reshape(-1))
    want = torch.stack(want).detach()
    got = layer(x, side)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    rows = torch.tensor([7, 2, 2, 0])
    torch.testing.assert_close(layer(x[rows], side[rows]), want[rows], rtol=1e-12, atol=1e-12)
    layer.train()
    noise = dropout_noise((9, 3), 0.4, x)
    torch.testing.assert_close(layer(x, side, noise), want * noise, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(layer(x[rows], side[rows], noise[rows]), (want * noise)[rows], rtol=1e-12, atol=1e-12)


def test_dropout_noise_is_inverted_bernoulli_from_the_global_rng() -> None:
    like = torch.zeros(1, dtype=torch.float64)
    torch.manual_seed(5)
    noise = dropout_noise((400, 50), 0.3, like)
    assert noise.dtype == torch.float64 and noise.shape == (400, 50)
    values = noise.unique().tolist()
    assert len(values) == 2 and values[0] == 0.0 and values[1] == pytest.approx(1 / 0.7, rel=1e-12)
    assert 0.27 < float((noise == 0).double().mean()) < 0.33
    torch.manual_seed(5)
    assert torch.equal(dropout_noise((400, 50), 0.3, like), noise)  # one draw from the global RNG
