"""LightGCN encoder and adjacency builders against dense numpy/torch formulas (algorithms.md §1.1–1.3)."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from recsys.errors import ConfigError
from recsys.info import DatasetInfo, UserItemCSR
from recsys.models.components.adjacency import SparseAdjacency, normalized_adjacency
from recsys.models.components.lightgcn import LightGCNEncoder
from recsys.models.graph_module import GraphRecommender

# 3 users, 4 items; item 3 has no interaction (degree 0)
TINY_PAIRS = [(0, 0), (0, 1), (1, 1), (1, 2), (2, 0)]
TINY_M, TINY_N = 3, 4


def csr_from(pairs, num_users, num_items) -> UserItemCSR:
    u = torch.tensor([p[0] for p in pairs], dtype=torch.long)
    i = torch.tensor([p[1] for p in pairs], dtype=torch.long)
    return UserItemCSR.from_pairs(u, i, num_users, num_items)


def adjacency_from(pairs, num_users, num_items, norm: str = "sym") -> SparseAdjacency:
    u = torch.tensor([p[0] for p in pairs], dtype=torch.long)
    i = torch.tensor([p[1] for p in pairs], dtype=torch.long)
    return normalized_adjacency(u, i, num_users, num_items, norm)


def dense_of(adj: SparseAdjacency) -> torch.Tensor:
    return adj.matrix.to_dense()


def dense_bipartite(pairs, num_users, num_items) -> np.ndarray:
    n = num_users + num_items
    a = np.zeros((n, n))
    for u, i in pairs:
        a[u, num_users + i] = 1.0
        a[num_users + i, u] = 1.0
    return a


def dense_sym_norm(a: np.ndarray) -> np.ndarray:
    deg = a.sum(1)
    d = np.zeros_like(deg)
    d[deg > 0] = deg[deg > 0] ** -0.5
    return d[:, None] * a * d[None, :]


def random_pairs(seed: int, num_users: int, num_items: int, n: int):
    rng = np.random.default_rng(seed)
    users, items = rng.integers(0, num_users, n), rng.integers(0, num_items, n)
    return sorted({(int(u), int(i)) for u, i in zip(users, items, strict=True)})


def dense_lightgcn(a_hat: np.ndarray, e0: np.ndarray, alphas) -> np.ndarray:
    out = np.zeros_like(e0)
    x = e0
    for k, alpha in enumerate(alphas):
        if k:
            x = a_hat @ x
        out = out + alpha * x
    return out


# ---------------------------------------------------------------------------------------------- adjacency
def test_symmetric_norm_adjacency_tiny_graph_by_hand():
    adj = adjacency_from(TINY_PAIRS, TINY_M, TINY_N, "sym")
    got = dense_of(adj).double().numpy()
    # degrees: users (2, 2, 1); items (2, 2, 1, 0)
    want = np.zeros((7, 7))
    deg = {0: 2, 1: 2, 2: 1, 3: 2, 4: 2, 5: 1, 6: 0}
    for u, i in TINY_PAIRS:
        want[u, 3 + i] = want[3 + i, u] = 1 / np.sqrt(deg[u] * deg[3 + i])
    np.testing.assert_allclose(got, want, atol=1e-7)
    np.testing.assert_allclose(got, dense_sym_norm(dense_bipartite(TINY_PAIRS, TINY_M, TINY_N)), atol=1e-7)
    assert np.all(np.diag(got) == 0)  # no self-loops
    assert np.all(got[6] == 0) and np.all(got[:, 6] == 0)  # isolated item
    np.testing.assert_allclose(adj.matrix_t.to_dense().numpy(), got.T, atol=0)
    assert adj.matrix_t is adj.matrix  # symmetric: the backward reuses the matrix itself (no second CSR)


@pytest.mark.parametrize("seed", [0, 1])
def test_symmetric_norm_adjacency_random_graph(seed):
    m, n = 9, 13
    pairs = random_pairs(seed, m, n, 30)
    got = dense_of(adjacency_from(pairs, m, n, "sym")).double().numpy()
    np.testing.assert_allclose(got, dense_sym_norm(dense_bipartite(pairs, m, n)), atol=1e-7)


def test_symmetric_norm_adjacency_with_self_loops():
    pairs = TINY_PAIRS
    adj = adjacency_from(pairs, TINY_M, TINY_N, "sym_self_loop")
    got = dense_of(adj).double().numpy()
    a = dense_bipartite(pairs, TINY_M, TINY_N) + np.eye(7)
    np.testing.assert_allclose(got, dense_sym_norm(a), atol=1e-7)
    assert adj.matrix_t is adj.matrix


def test_random_walk_adjacency():
    m, n = 6, 8
    pairs = random_pairs(3, m, n, 15)
    adj = adjacency_from(pairs, m, n, "rw_self_loop")
    a = dense_bipartite(pairs, m, n) + np.eye(m + n)
    deg = a.sum(1, keepdims=True)
    want = np.divide(a, deg, out=np.zeros_like(a), where=deg > 0)
    got = dense_of(adj).double().numpy()
    np.testing.assert_allclose(got, want, atol=1e-7)
    np.testing.assert_allclose(adj.matrix_t.to_dense().double().numpy(), want.T, atol=1e-7)


def test_unknown_normalisation_is_rejected():
    with pytest.raises(ValueError, match="normalisation"):
        adjacency_from(TINY_PAIRS, TINY_M, TINY_N, "rw")


def test_csr_matmul_backward_uses_transpose_on_non_symmetric_matrix():
    """D̃⁻¹(A+I) is not symmetric: dL/dx must be Aᵀ g (a missing transpose would pass on a symmetric Â)."""
    m, n = 5, 7
    pairs = random_pairs(4, m, n, 14)
    adj = adjacency_from(pairs, m, n, "rw_self_loop")
    a = dense_bipartite(pairs, m, n) + np.eye(m + n)  # D̃⁻¹(A+I), built without the library
    dense = torch.from_numpy(a / a.sum(1, keepdims=True)).float()
    assert not torch.allclose(dense, dense.T)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(m + n, 3, generator=g, requires_grad=True)
    r = torch.randn(m + n, 3, generator=g)
    y = adj @ x
    torch.testing.assert_close(y, dense @ x.detach())
    (y * r).sum().backward()
    torch.testing.assert_close(x.grad, dense.T @ r)


def test_edge_dropout():
    m, n = 20, 25
    pairs = random_pairs(5, m, n, 150)
    adj = adjacency_from(pairs, m, n, "sym")
    assert adj.edge_dropout(0.0) is adj
    torch.manual_seed(0)
    dropped = adj.edge_dropout(0.5)
    torch.manual_seed(0)
    again = adj.edge_dropout(0.5)
    torch.manual_seed(1)
    other = adj.edge_dropout(0.5)
    orig = dense_of(adj)
    new = dense_of(dropped)
    kept = new != 0
    # every kept entry is the original scaled by 1/(1-p) = 2; no entry appears where there was none
    torch.testing.assert_close(new[kept], 2 * orig[kept])
    assert torch.all(orig[kept] != 0)
    frac = kept.sum().item() / (orig != 0).sum().item()
    assert 0.35 < frac < 0.65
    assert 0 < kept.sum() < (orig != 0).sum()
    # the structure is kept (only the values change): the same index tensors, dropped entries stored as 0
    assert dropped.crow is adj.crow and dropped.col is adj.col
    assert dropped.values.shape == adj.values.shape
    # transpose consistent with the dropped matrix (not the original one)
    assert torch.equal(dropped.matrix_t.to_dense(), new.T)
    assert torch.equal(dense_of(again), new)
    assert not torch.equal(dense_of(other), new)
    # the original is untouched
    assert torch.equal(dense_of(adj), orig)
    # matmul and its backward through the dropped matrix
    x = torch.randn(m + n, 4, requires_grad=True)
    r = torch.randn(m + n, 4)
    y = dropped @ x
    torch.testing.assert_close(y, new @ x.detach())
    (y * r).sum().backward()
    torch.testing.assert_close(x.grad, new.T @ r)


@pytest.mark.parametrize("norm", ["sym", "rw_self_loop"])
def test_edge_dropout_of_a_random_walk_operator_keeps_the_transpose_consistent(norm):
    m, n = 8, 9
    pairs = random_pairs(6, m, n, 30)
    adj = adjacency_from(pairs, m, n, norm)
    torch.manual_seed(3)
    dropped = adj.edge_dropout(0.4)
    new = dense_of(dropped)
    assert torch.equal(dropped.matrix_t.to_dense(), new.T)
    if norm == "rw_self_loop":  # the transpose's index structure is shared too
        assert dropped.crow_t is adj.crow_t and dropped.col_t is adj.col_t
        assert dropped.transpose_order is adj.transpose_order


def test_with_values_and_to_keep_pattern():
    adj = adjacency_from(TINY_PAIRS, TINY_M, TINY_N, "sym")
    ones = adj.with_values(torch.ones_like(adj.values))
    np.testing.assert_array_equal(dense_of(ones).numpy(), dense_bipartite(TINY_PAIRS, TINY_M, TINY_N))
    # same sparsity pattern: the index tensors are shared, not rebuilt
    assert ones.crow is adj.crow and ones.col is adj.col
    assert adj.to("cpu") is adj


def dense_row_slice_reference(dense: torch.Tensor, rows: torch.Tensor, x0: torch.Tensor, r: torch.Tensor):
    """``A[R] @ x`` and ``d/dx Σ (A[R] @ x) ⊙ r`` by autograd on the dense matrix."""
    x = x0.clone().requires_grad_(True)
    y = dense[rows] @ x
    (y * r).sum().backward()
    return y.detach(), x.grad


@pytest.mark.parametrize("norm", ["sym", "sym_self_loop", "rw_self_loop"])
@pytest.mark.parametrize("rows", [[0], [3, 1, 12], [2, 2, 5], list(range(17)), []])
def test_row_slice_product_and_gradient_equal_the_dense_rows(norm, rows):
    """``adj.rows(R) @ x`` = ``A[R, :] @ x``; its backward (an index_add over the rows' edges) = autograd on
    the dense rows, for symmetric and random-walk operators, any order, repeated rows, every row, no row."""
    m, n = 7, 10
    pairs = random_pairs(12, m, n, 28)
    adj = adjacency_from(pairs, m, n, norm)
    if norm == "rw_self_loop":
        a = dense_bipartite(pairs, m, n) + np.eye(m + n)  # built without the library
        dense = torch.from_numpy(a / a.sum(1, keepdims=True))
    else:
        eye = np.eye(m + n) if norm == "sym_self_loop" else 0.0
        dense = torch.from_numpy(dense_sym_norm(dense_bipartite(pairs, m, n) + eye))
    rows = torch.tensor(rows, dtype=torch.long)
    g = torch.Generator().manual_seed(len(rows))
    x0 = torch.randn(m + n, 3, generator=g, dtype=torch.float64)
    r = torch.randn(len(rows), 3, generator=g, dtype=torch.float64)
    x = x0.clone().requires_grad_(True)
    y = adj.rows(rows) @ x
    (y * r).sum().backward()
    want_y, want_grad = dense_row_slice_reference(dense, rows, x0, r)
    assert y.shape == (len(rows), 3)
    torch.testing.assert_close(y.detach(), want_y, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(x.grad, want_grad, rtol=1e-6, atol=1e-6)


def test_row_slice_of_a_dropped_operator_uses_the_dropped_values():
    m, n = 6, 8
    pairs = random_pairs(13, m, n, 22)
    torch.manual_seed(0)
    dropped = adjacency_from(pairs, m, n, "rw_self_loop").edge_dropout(0.5)
    dense = dense_of(dropped).double()
    rows = torch.tensor([1, 9, 4])
    x0 = torch.randn(m + n, 2, dtype=torch.float64)
    r = torch.randn(3, 2, dtype=torch.float64)
    x = x0.clone().requires_grad_(True)
    y = dropped.rows(rows) @ x
    (y * r).sum().backward()
    want_y, want_grad = dense_row_slice_reference(dense, rows, x0, r)
    torch.testing.assert_close(y.detach(), want_y, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(x.grad, want_grad, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------------------------- encoder
def encoder_adjacency(enc, pairs, m, n) -> SparseAdjacency:
    """The operator the encoder declares, built as the LightningModule builds it."""
    return adjacency_from(pairs, m, n, enc.adjacency_norm)


def test_encoder_declares_the_symmetric_operator():
    assert LightGCNEncoder.adjacency_norm == "sym"
    assert LightGCNEncoder.regularize_ego


@pytest.mark.parametrize("num_layers", [0, 1, 2, 3])
def test_forward_equals_dense_mean_of_powers(num_layers):
    m, n = 8, 11
    pairs = random_pairs(num_layers, m, n, 30)
    torch.manual_seed(num_layers)
    enc = LightGCNEncoder(m, n, embedding_dim=5, num_layers=num_layers)
    adj = encoder_adjacency(enc, pairs, m, n)
    out = enc(adj)
    assert out.shape == (m + n, 5)
    e0 = enc.ego().detach().double().numpy()
    a_hat = dense_sym_norm(dense_bipartite(pairs, m, n))
    want = dense_lightgcn(a_hat, e0, [1 / (num_layers + 1)] * (num_layers + 1))
    got = out.detach().double().numpy()
    np.testing.assert_allclose(got, want, atol=1e-6)
    if num_layers == 0:  # matrix factorisation: the ego embeddings themselves
        assert torch.equal(out, enc.embedding.weight)
    # the rows path gives the same numbers at those rows
    rows = torch.tensor([m + n - 1, 0, 3, m + 2, 0])
    np.testing.assert_allclose(enc(adj, rows).detach().double().numpy(), want[rows.numpy()], atol=1e-6)
    torch.testing.assert_close(enc.ego(rows), enc.embedding.weight[rows], rtol=0, atol=0)


def test_node_table_holds_users_then_items_and_views_split_it():
    torch.manual_seed(0)
    enc = LightGCNEncoder(3, 4, embedding_dim=2, num_layers=1)
    table = enc.embedding.weight
    assert table.shape == (7, 2) and enc.ego() is table
    users, items = enc.embedding.split(table)
    assert users.shape == (3, 2) and items.shape == (4, 2)
    assert users.data_ptr() == table.data_ptr() and items.data_ptr() == table[3:].data_ptr()  # views, no copy


def test_learned_layer_weights():
    m, n, k = 8, 11, 3
    pairs = random_pairs(7, m, n, 30)
    torch.manual_seed(0)
    mean_enc = LightGCNEncoder(m, n, embedding_dim=4, num_layers=k, layer_weights="mean")
    learned = LightGCNEncoder(m, n, embedding_dim=4, num_layers=k, layer_weights="learned")
    learned.load_state_dict(mean_enc.state_dict(), strict=False)
    adj = encoder_adjacency(learned, pairs, m, n)
    # at init: uniform weights → same output as "mean"
    torch.testing.assert_close(learned.layer_weights(), torch.full((k + 1,), 0.25))
    torch.testing.assert_close(learned(adj), mean_enc(adj))

    r = torch.randn(m + n, 4, generator=torch.Generator().manual_seed(1))
    loss = (learned(adj) * r).sum() + learned(adj).pow(2).sum()
    loss.backward()
    assert learned.layer_logits.grad is not None
    assert learned.layer_logits.grad.abs().max() > 1e-6
    torch.optim.SGD([learned.layer_logits], lr=1.0).step()

    alphas = learned.layer_weights().detach()
    assert float(alphas.sum()) == pytest.approx(1.0, abs=1e-6)
    assert torch.all(alphas > 0)
    assert not torch.allclose(alphas, torch.full((k + 1,), 0.25))
    with torch.no_grad():
        got = learned(adj).double().numpy()
        ref_mean = mean_enc(adj).double().numpy()
    e0 = learned.ego().detach().double().numpy()
    a_hat = dense_sym_norm(dense_bipartite(pairs, m, n))
    soft = np.exp(learned.layer_logits.detach().double().numpy())
    soft /= soft.sum()
    np.testing.assert_allclose(got, dense_lightgcn(a_hat, e0, soft), atol=1e-6)
    assert np.abs(got - ref_mean).max() > 1e-5


@pytest.mark.parametrize("layer_weights", ["mean", "learned"])
@pytest.mark.parametrize("num_layers", [0, 2])
def test_every_parameter_gets_a_gradient(num_layers, layer_weights):
    """DDP needs a gradient for every parameter of every step (an unused one stalls the reduction)."""
    m, n = 6, 7
    enc = LightGCNEncoder(m, n, embedding_dim=4, num_layers=num_layers, layer_weights=layer_weights)
    out = enc(encoder_adjacency(enc, random_pairs(3, m, n, 20), m, n))
    (out[:m].sum() + out[m:].pow(2).sum()).backward()
    assert all(p.grad is not None for p in enc.parameters())
    assert (enc.layer_logits is not None) == (layer_weights == "learned" and num_layers > 0)
    torch.testing.assert_close(enc.layer_weights(), torch.full((num_layers + 1,), 1 / (num_layers + 1)))


def dense_mean_combination(pairs, m: int, n: int, e0: torch.Tensor, num_layers: int) -> torch.Tensor:
    """``Σ_k Âᵏ e0 / (K+1)`` with the dense ``Â`` built from the pairs (autograd through plain products)."""
    dense = torch.from_numpy(dense_sym_norm(dense_bipartite(pairs, m, n)))
    x, out = e0, e0 / (num_layers + 1)
    for _ in range(num_layers):
        x = dense @ x
        out = out + x / (num_layers + 1)
    return out


@pytest.mark.parametrize("num_layers", [1, 3])
def test_gradients_match_dense_autograd(num_layers):
    m, n = 7, 9
    pairs = random_pairs(11, m, n, 25)
    torch.manual_seed(2)
    enc = LightGCNEncoder(m, n, embedding_dim=3, num_layers=num_layers)
    adj = encoder_adjacency(enc, pairs, m, n)
    r = torch.randn(m + n, 3, generator=torch.Generator().manual_seed(3))
    loss = (enc(adj) * r).sum() + enc(adj)[:m].pow(2).sum()
    loss.backward()

    e0 = enc.ego().detach().double().clone().requires_grad_(True)
    out = dense_mean_combination(pairs, m, n, e0, num_layers)
    ref_loss = (out * r.double()).sum() + out[:m].pow(2).sum()
    ref_loss.backward()
    torch.testing.assert_close(enc.embedding.weight.grad[:m].double(), e0.grad[:m], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(enc.embedding.weight.grad[m:].double(), e0.grad[m:], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_rows_path_gradients_match_dense_autograd(num_layers):
    """The rows path (last layer ``Â[R, :] E⁽ᴷ⁻¹⁾``, its backward from those rows only) against autograd on
    the dense powers, for a loss that reads only the rows ``R``."""
    m, n = 7, 9
    pairs = random_pairs(14, m, n, 25)
    torch.manual_seed(4)
    enc = LightGCNEncoder(m, n, embedding_dim=3, num_layers=num_layers)
    adj = encoder_adjacency(enc, pairs, m, n)
    rows = torch.tensor([1, m + 3, 5, m])
    r = torch.randn(len(rows), 3, generator=torch.Generator().manual_seed(5))
    out = enc(adj, rows)
    ((out * r).sum() + out.pow(2).sum()).backward()

    e0 = enc.ego().detach().double().clone().requires_grad_(True)
    ref = dense_mean_combination(pairs, m, n, e0, num_layers)[rows]
    ((ref * r.double()).sum() + ref.pow(2).sum()).backward()
    torch.testing.assert_close(out.detach().double(), ref.detach(), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(enc.embedding.weight.grad.double(), e0.grad, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("num_layers", [0, 1, 2, 3])
def test_gradient_reaches_ego_embeddings_three_hops_away(num_layers):
    """Path graph u0 – i0 – u1 – i1: a loss on item i1's output reaches user u0's ego embedding only
    through three propagation steps."""
    pairs = [(0, 0), (1, 0), (1, 1)]
    enc = LightGCNEncoder(2, 2, embedding_dim=3, num_layers=num_layers)
    adj = encoder_adjacency(enc, pairs, 2, 2)
    out = enc(adj)
    out[2 + 1].sum().backward()  # item i1 = node M + 1
    grad_u0 = enc.embedding.weight.grad[0]
    if num_layers >= 3:
        # Â³ entry (i1, u0) = Â(i1,u1) Â(u1,i0) Â(i0,u0) = 1/√2 · 1/2 · 1/√2 = 1/4; α_3 = 1/4
        torch.testing.assert_close(grad_u0, torch.full((3,), 0.25 * 0.25))
    else:
        assert grad_u0 is None or torch.all(grad_u0 == 0)


def test_encoder_rejects_bad_arguments():
    with pytest.raises(ConfigError, match=r"^model\.num_layers=-1: must be an integer >= 0$"):
        LightGCNEncoder(2, 2, num_layers=-1)
    with pytest.raises(ConfigError, match=r"^model\.layer_weights=max: must be one of mean, learned$"):
        LightGCNEncoder(2, 2, layer_weights="max")
    with pytest.raises(ConfigError, match=r"^model\.edge_dropout=1\.0: must be a drop rate in \[0, 1\)$"):
        LightGCNEncoder(2, 2, edge_dropout=1.0)


def test_edge_dropout_only_in_training_mode():
    m, n = 6, 7
    pairs = random_pairs(2, m, n, 20)
    enc = LightGCNEncoder(m, n, embedding_dim=3, num_layers=2, edge_dropout=0.5)
    adj = encoder_adjacency(enc, pairs, m, n)
    enc.eval()
    e0 = enc.ego().detach().double().numpy()
    want = dense_lightgcn(dense_sym_norm(dense_bipartite(pairs, m, n)), e0, [1 / 3] * 3)
    with torch.no_grad():
        np.testing.assert_allclose(enc(adj).double().numpy(), want, atol=1e-6)
        enc.train()
        torch.manual_seed(0)
        assert not np.allclose(enc(adj).double().numpy(), want, atol=1e-4)


# ---------------------------------------------------------------------------------------------- GraphRecommender
def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


class _IdentityReduce:
    """A single-process strategy: the epoch-end sum-reduction returns its input."""

    @staticmethod
    def reduce(tensor: torch.Tensor, reduce_op: str) -> torch.Tensor:
        assert reduce_op == "sum"
        return tensor


@pytest.mark.parametrize("num_negatives", [1, 3])
def test_graph_recommender_training_step_loss(monkeypatch, num_negatives):
    m, n, dim, k, reg_weight = 6, 9, 4, 2, 0.1
    pairs = random_pairs(8, m, n, 22)
    train = csr_from(pairs, m, n)
    info = DatasetInfo(num_users=m, num_items=n, train=train)
    torch.manual_seed(0)
    model = GraphRecommender(
        info,
        encoder=functools.partial(LightGCNEncoder),
        optimizer=functools.partial(torch.optim.Adam, lr=1e-3),
        reg_weight=reg_weight,
        topk=(2, 5),
        embedding_dim=dim,
        num_layers=k,
    )
    assert model._adjacency.matrix_t is model._adjacency.matrix  # the module built the encoder's operator
    np.testing.assert_allclose(dense_of(model.adjacency()).double().numpy(),
                               dense_sym_norm(dense_bipartite(pairs, m, n)), atol=1e-7)
    logged: dict[str, float] = {}
    monkeypatch.setattr(model, "log", lambda name, value, **kw: logged.__setitem__(name, float(value)))
    g = torch.Generator().manual_seed(1)
    b = 5
    batch = {
        "users": torch.randint(m, (b,), generator=g),
        "pos_items": torch.randint(n, (b,), generator=g),
        "neg_items": torch.randint(n, (b, num_negatives), generator=g),
    }
    e0 = model.encoder.ego().detach().double().numpy().copy()  # the weights the step's loss is computed from
    loss, bpr_value = model.batch_loss(batch)

    final = dense_lightgcn(dense_sym_norm(dense_bipartite(pairs, m, n)), e0, [1 / (k + 1)] * (k + 1))
    uf, itf = final[:m], final[m:]
    u, p, ng = batch["users"].numpy(), batch["pos_items"].numpy(), batch["neg_items"].numpy()
    pos = np.sum(uf[u] * itf[p], axis=1)
    neg = np.einsum("bd,bnd->bn", uf[u], itf[ng])
    bpr = np.mean(_softplus(neg - pos[:, None]))
    eu, ei = e0[:m], e0[m:]
    # LightGCN L2 on ego rows, negatives' squared norms averaged over the negatives
    reg = 0.5 * (np.sum(eu[u] ** 2) + np.sum(ei[p] ** 2) + np.sum(ei[ng] ** 2) / num_negatives) / b
    if num_negatives == 1:
        reg_direct = sum(
            0.5 * (eu[u[r]] @ eu[u[r]] + ei[p[r]] @ ei[p[r]] + ei[ng[r, 0]] @ ei[ng[r, 0]]) for r in range(b)
        ) / b
        assert reg == pytest.approx(reg_direct)
    assert float(loss.detach()) == pytest.approx(bpr + reg_weight * reg, rel=1e-5, abs=1e-7)
    assert float(bpr_value.detach()) == pytest.approx(bpr, rel=1e-5, abs=1e-7)
    # the loss is differentiable w.r.t. the ego embeddings
    loss.backward()
    assert model.encoder.embedding.weight.grad[:m].abs().sum() > 0
    opt = model.configure_optimizers()
    assert isinstance(opt, torch.optim.Adam)

    # a training chunk of this one batch (manual optimisation) logs the same values at the epoch end
    model.zero_grad()
    monkeypatch.setattr(model, "optimizers", lambda: opt)
    monkeypatch.setattr(model, "manual_backward", lambda value: value.backward())
    model._trainer = type("FakeTrainer", (), {"strategy": _IdentityReduce(), "num_training_batches": 1})()
    model.on_train_epoch_start()
    step_losses = model.training_step([batch], 0)
    assert step_losses.shape == (1,)
    assert float(step_losses[0]) == pytest.approx(bpr + reg_weight * reg, rel=1e-5, abs=1e-7)
    assert not np.array_equal(model.encoder.ego().detach().double().numpy(), e0)  # one optimiser step
    model.on_train_epoch_end()
    assert logged["train/bpr"] == pytest.approx(bpr, rel=1e-5, abs=1e-7)
    assert logged["train/loss"] == pytest.approx(float(loss.detach()), rel=1e-6)


def test_graph_recommender_scoring_is_inner_product_of_propagated_embeddings():
    m, n = 5, 8
    pairs = random_pairs(9, m, n, 18)
    info = DatasetInfo(num_users=m, num_items=n, train=csr_from(pairs, m, n))
    model = GraphRecommender(info, encoder=LightGCNEncoder, optimizer=torch.optim.Adam,
                             topk=(3,), embedding_dim=3, num_layers=2)
    model.prepare_scoring()
    users = torch.tensor([4, 0, 2])
    got = model.score_users(users).double().numpy()
    e0 = model.encoder.ego().detach().double().numpy()
    final = dense_lightgcn(dense_sym_norm(dense_bipartite(pairs, m, n)), e0, [1 / 3] * 3)
    np.testing.assert_allclose(got, final[[4, 0, 2]] @ final[m:].T, atol=1e-6)
    model.finish_scoring()
    with pytest.raises(AssertionError):
        model.score_users(users)


def test_propagation_stays_float32_under_mixed_precision():
    """trainer.precision=bf16-mixed: autocast must not cast the sparse adjacency (no bf16 CSR kernel on CPU);
    LightGCN has no dense op, so its output and gradients equal the float32 run exactly."""
    m, n = 8, 9
    adj = adjacency_from(random_pairs(5, m, n, 30), m, n, LightGCNEncoder.adjacency_norm)

    def run(autocast: bool) -> tuple[torch.Tensor, ...]:
        torch.manual_seed(0)
        enc = LightGCNEncoder(m, n, embedding_dim=4, num_layers=2)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = enc(adj)
            rows = enc(adj, torch.tensor([0, m + 1]))
            users, items = out[:m], out[m:]
            loss = users.pow(2).sum() + (items * 3.0).sum()  # no autocast-listed op: grads comparable exactly
        loss.backward()
        return users, items, rows, enc.embedding.weight.grad

    mixed, full = run(True), run(False)
    assert mixed[0].dtype == torch.float32
    for got, want in zip(mixed, full, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_propagation_follows_the_input_dtype_outside_autocast(dtype):
    """precision=64-true propagates in float64 (exactly the dense double product); *-true half precisions get
    their own dtype back (computed in float32), so the next dense layer sees matching dtypes."""
    m, n = 5, 6
    pairs = random_pairs(2, m, n, 15)
    adj = adjacency_from(pairs, m, n, "sym")
    x = torch.randn(m + n, 3, dtype=torch.float64).to(dtype).requires_grad_()
    y = adj @ x
    (y.double() * torch.arange(3.0, dtype=torch.float64)).sum().backward()
    assert y.dtype == dtype and x.grad.dtype == dtype
    # built without the library; the adjacency stores float32 values (documented), which 64-true upcasts
    dense = torch.from_numpy(dense_sym_norm(dense_bipartite(pairs, m, n)).astype(np.float32).astype(np.float64))
    want_y = dense @ x.detach().double()
    want_grad = dense.T @ torch.arange(3.0, dtype=torch.float64).expand(m + n, 3)
    if dtype == torch.float64:
        torch.testing.assert_close(y, want_y, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(x.grad, want_grad, rtol=1e-12, atol=1e-12)
    else:
        torch.testing.assert_close(y.double(), want_y, rtol=1e-2, atol=1e-2)
        torch.testing.assert_close(x.grad.double(), want_grad, rtol=1e-2, atol=1e-2)


