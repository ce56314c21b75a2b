"""Sparse normalised adjacency of the user–item graph and a fast sparse-dense product.

The bipartite adjacency over ``M`` users and ``N`` items is ``A = [[0, R], [Rᵀ, 0]]`` (users first).
The product uses CSR (``torch.sparse.mm`` on CSR is much faster than COO on CPU) and a custom autograd
function whose backward multiplies by a prebuilt transposed CSR instead of transposing on the fly.
"""

from __future__ import annotations

import warnings

import torch

from recsys.data.interactions import UserItemCSR

# CSR support is stable for what is used here (construction, sparse.mm, .to); silence the generic beta notice
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state", category=UserWarning)


class SparseAdjacency:
    """A square CSR matrix together with its transpose (for the backward pass)."""

    def __init__(self, rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, size: int) -> None:
        order = torch.argsort(rows * size + cols)
        self.rows, self.cols, self.values, self.size = rows[order], cols[order], values[order], size
        # position of every entry in the transpose's CSR order
        self.transpose_order = torch.argsort(self.cols * size + self.rows)
        self._build()

    def _build(self) -> None:
        n = self.size
        self.matrix = _csr(self.rows, self.cols, self.values, n)
        t = self.transpose_order
        self.matrix_t = _csr(self.cols[t], self.rows[t], self.values[t], n)

    @property
    def device(self) -> torch.device:
        return self.values.device

    def to(self, device: torch.device | str) -> SparseAdjacency:
        if torch.device(device) == self.device:
            return self
        out = object.__new__(SparseAdjacency)
        out.rows, out.cols, out.values = self.rows.to(device), self.cols.to(device), self.values.to(device)
        out.size, out.transpose_order = self.size, self.transpose_order.to(device)
        out._build()
        return out

    def with_values(self, values: torch.Tensor) -> SparseAdjacency:
        """Same sparsity pattern, new values (e.g. edge dropout); shares index tensors."""
        out = object.__new__(SparseAdjacency)
        out.rows, out.cols, out.values, out.size = self.rows, self.cols, values, self.size
        out.transpose_order = self.transpose_order
        out._build()
        return out

    def edge_dropout(self, p: float, generator: torch.Generator | None = None) -> SparseAdjacency:
        """Drop every nonzero independently with probability ``p`` and rescale by ``1/(1-p)``."""
        if p <= 0:
            return self
        keep = torch.rand(self.values.shape, device=self.device, generator=generator) >= p
        return self.with_values(self.values * keep / (1.0 - p))

    def to_dense(self) -> torch.Tensor:
        return self.matrix.to_dense()

    def __matmul__(self, x: torch.Tensor) -> torch.Tensor:
        return _CSRMatmul.apply(x, self.matrix, self.matrix_t)


def _csr(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, n: int) -> torch.Tensor:
    crow = torch.zeros(n + 1, dtype=torch.int64, device=rows.device)
    crow[1:] = torch.cumsum(torch.bincount(rows, minlength=n), 0)
    with warnings.catch_warnings():  # torch's one-time "CSR support is in beta" notice: nothing to act on
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        # the callers pass row-sorted, in-range indices: skip torch's O(nnz) invariant check
        return torch.sparse_csr_tensor(crow, cols, values, (n, n), check_invariants=False)


class _CSRMatmul(torch.autograd.Function):
    """``y = A x`` with ``dL/dx = Aᵀ dL/dy`` from a prebuilt CSR transpose (no grad w.r.t. A).

    Computed in ``promote(x.dtype, A.dtype)`` (at least the adjacency's float32) with autocast off, and
    returned in ``x``'s dtype: under mixed precision autocast would cast the sparse matrix (CPU has no
    bfloat16 CSR kernel, and low-precision neighbourhood sums lose accuracy on high-degree nodes);
    ``64-true`` propagates in float64.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, a: torch.Tensor, a_t: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.a_t = a_t
        return _sparse_mm(a, x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return _sparse_mm(ctx.a_t, grad), None, None


def _sparse_mm(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    dtype = torch.promote_types(x.dtype, a.dtype)
    with torch.autocast(device_type=x.device.type, enabled=False):
        return torch.sparse.mm(a if a.dtype == dtype else a.to(dtype), x.to(dtype)).to(x.dtype)


def bipartite_edges(train: UserItemCSR) -> tuple[torch.Tensor, torch.Tensor]:
    """Both directions of every train edge as (row, col) node indices (users first, then items)."""
    users, items = train.pairs()
    items = items + train.num_users
    return torch.cat([users, items]), torch.cat([items, users])


def _edges_and_degrees(train: UserItemCSR, self_loops: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """(rows, cols, degree per node, node count) of ``A`` or ``A + I``."""
    n = train.num_users + train.num_items
    rows, cols = bipartite_edges(train)
    if self_loops:
        diag = torch.arange(n)
        rows, cols = torch.cat([rows, diag]), torch.cat([cols, diag])
    return rows, cols, torch.bincount(rows, minlength=n).double(), n


def symmetric_norm_adjacency(train: UserItemCSR, self_loops: bool = False) -> SparseAdjacency:
    """``Â = D^{-1/2} A D^{-1/2}`` (LightGCN §1.1; NGCF paper's ``L``), zero-degree rows stay 0.

    With ``self_loops`` the normalisation is applied to ``A + I`` (``D`` then counts the loop).
    """
    rows, cols, deg, n = _edges_and_degrees(train, self_loops)
    inv_sqrt = torch.where(deg > 0, deg.rsqrt(), torch.zeros_like(deg))
    return SparseAdjacency(rows, cols, (inv_sqrt[rows] * inv_sqrt[cols]).float(), n)


def random_walk_adjacency(train: UserItemCSR, self_loops: bool = True) -> SparseAdjacency:
    """``D̃^{-1}(A + I)`` (row normalisation; the official NGCF code's ``norm`` adjacency)."""
    rows, cols, deg, n = _edges_and_degrees(train, self_loops)
    inv = torch.where(deg > 0, 1.0 / deg, torch.zeros_like(deg))
    return SparseAdjacency(rows, cols, inv[rows].float(), n)
