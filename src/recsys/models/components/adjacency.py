"""The normalised user–item graph operator and its sparse-dense products (full and row-sliced).

The bipartite adjacency over ``M`` users and ``N`` items is ``A = [[0, R], [Rᵀ, 0]]`` (users first), built
from an edge list (``users``, ``items``) and the sizes, as PyG builds ``edge_index``. Normalisations
(:func:`normalized_adjacency`):

* ``sym``:            ``Â = D^{-1/2} A D^{-1/2}`` (LightGCN §1.1; NGCF paper's ``L``);
* ``sym_self_loop``:  ``D̃^{-1/2} (A + I) D̃^{-1/2}`` (``D̃`` counts the loop);
* ``rw_self_loop``:   ``D̃^{-1} (A + I)`` (the official NGCF code's ``norm`` adjacency).

Zero-degree rows stay 0. Products are CSR products (:mod:`recsys.ops`) whose backward multiplies by the
transpose: the matrix itself when it is symmetric (``sym*``), a prebuilt CSR transpose otherwise.
:meth:`SparseAdjacency.rows` gives ``Â[R, :]`` for a set of rows ``R``, whose product ``Â[R, :] x`` costs the
rows' edges only (forward and backward).
"""

from __future__ import annotations

import warnings

import torch

from recsys.ops import csr_product, row_slice_product

NORMALIZATIONS = ("sym", "sym_self_loop", "rw_self_loop")


class SparseAdjacency:
    """A square CSR matrix (and, unless symmetric, its transpose) with edge-value dropout and row slices.

    The index structure (``crow``, ``col``, transpose order) is built once; :meth:`with_values` makes an
    operator with the same structure and new values (edge/node dropout) without rebuilding it.
    """

    def __init__(self, rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, size: int,
                 symmetric: bool = False) -> None:
        order = torch.argsort(rows * size + cols)
        rows, cols, self.values, self.size = rows[order], cols[order], values[order], size
        self.symmetric = symmetric
        index = _index_dtype(size, cols.numel())
        self.crow, self.col = _row_pointers(rows, size).to(index), cols.to(index)
        # position of every entry in the transpose's CSR order; the transpose's structure
        self.transpose_order = None if symmetric else torch.argsort(cols * size + rows)
        if self.transpose_order is not None:
            self.crow_t = _row_pointers(cols[self.transpose_order], size).to(index)
            self.col_t = rows[self.transpose_order].to(index)
        self._wrap()

    def _wrap(self) -> None:
        """The CSR tensors over the current values (no index work)."""
        n = self.size
        self.matrix = _csr(self.crow, self.col, self.values, n)
        self.matrix_t = self.matrix if self.symmetric else _csr(self.crow_t, self.col_t,
                                                                self.values[self.transpose_order], n)

    @property
    def device(self) -> torch.device:
        return self.values.device

    def _copy(self, **tensors: torch.Tensor) -> SparseAdjacency:
        out = object.__new__(SparseAdjacency)
        out.__dict__.update({k: v for k, v in self.__dict__.items() if k not in ("matrix", "matrix_t")})
        out.__dict__.update(tensors)
        out._wrap()
        return out

    def to(self, device: torch.device | str) -> SparseAdjacency:
        if torch.device(device) == self.device:
            return self
        names = ["crow", "col", "values"] + ([] if self.symmetric else ["transpose_order", "crow_t", "col_t"])
        return self._copy(**{k: getattr(self, k).to(device) for k in names})

    def with_values(self, values: torch.Tensor) -> SparseAdjacency:
        """Same sparsity pattern, new values (e.g. edge dropout): shares every index tensor. New values of a
        symmetric operator need not be symmetric (an independent dropout mask per entry): the copy multiplies by
        its true transpose in the backward, whose index structure is the operator's own plus the entry
        permutation ``(i, j) → (j, i)`` (one argsort, cached)."""
        if not self.symmetric:
            return self._copy(values=values)
        if self.__dict__.get("_swap") is None or self._swap.device != self.device:
            rows = torch.repeat_interleave(torch.arange(self.size, device=self.device), self.crow.diff().long())
            self._swap = torch.argsort(self.col.long() * self.size + rows)
        return self._copy(values=values, symmetric=False, transpose_order=self._swap, crow_t=self.crow,
                          col_t=self.col)

    def edge_dropout(self, p: float) -> SparseAdjacency:
        """Drop every nonzero independently with probability ``p`` and rescale the kept ones by ``1/(1-p)``
        (one draw from the global RNG)."""
        if p <= 0:
            return self
        keep = torch.rand(self.values.shape, device=self.device) >= p
        return self.with_values(self.values * keep / (1.0 - p))

    def __matmul__(self, x: torch.Tensor) -> torch.Tensor:
        return csr_product(self.matrix, self.matrix_t, x)

    def rows(self, rows: torch.Tensor) -> RowSlice:
        """``Â[rows, :]`` as a :class:`RowSlice` (its product costs the selected rows' edges)."""
        starts = self.crow[rows].long()
        counts = self.crow[rows + 1].long() - starts
        local = torch.repeat_interleave(torch.arange(rows.numel(), device=rows.device), counts)
        first = torch.cumsum(counts, 0) - counts
        entries = starts[local] + torch.arange(local.numel(), device=rows.device) - first[local]
        crow = torch.zeros(rows.numel() + 1, dtype=torch.int64, device=rows.device)
        torch.cumsum(counts, 0, out=crow[1:])
        return RowSlice(crow, local, self.col[entries], self.values[entries], self.size)


class RowSlice:
    """``S = Â[R, :]`` (``|R| × n``): ``S @ x`` costs the selected rows' edges; its backward ``Sᵀ dL/dy`` is a
    product with the slice's transpose (``n × |R|``, built on first use by sorting the slice's entries by
    column), so it too touches only those edges."""

    def __init__(self, crow: torch.Tensor, local_row: torch.Tensor, col: torch.Tensor, values: torch.Tensor,
                 size: int) -> None:
        self.local_row, self.col, self.values, self.size = local_row, col, values, size
        self.num_rows = crow.numel() - 1
        self.matrix = _csr(crow, col, values, (self.num_rows, size))
        self._matrix_t: torch.Tensor | None = None

    @property
    def matrix_t(self) -> torch.Tensor:
        """``Sᵀ`` as a CSR matrix ``(n, |R|)``."""
        if self._matrix_t is None:
            order = torch.argsort(self.col, stable=True)
            self._matrix_t = _csr(_row_pointers(self.col[order], self.size), self.local_row[order],
                                  self.values[order], (self.size, self.num_rows))
        return self._matrix_t

    def __matmul__(self, x: torch.Tensor) -> torch.Tensor:
        return row_slice_product(self, x)


def _row_pointers(sorted_rows: torch.Tensor, n: int) -> torch.Tensor:
    crow = torch.zeros(n + 1, dtype=torch.int64, device=sorted_rows.device)
    crow[1:] = torch.cumsum(torch.bincount(sorted_rows, minlength=n), 0)
    return crow


def _index_dtype(size: int, nnz: int) -> torch.dtype:
    """int32 CSR indices when they fit: the CPU kernel (MKL) and cuSPARSE take them as they are, while int64
    ones are converted on every product."""
    return torch.int32 if max(size, nnz) < 2**31 - 1 else torch.int64


def _csr(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, shape: int | tuple[int, int]) -> torch.Tensor:
    shape = (shape, shape) if isinstance(shape, int) else shape
    index = _index_dtype(max(shape), col.numel())
    crow, col = crow.to(index), col.to(index)
    with warnings.catch_warnings():  # torch's one-time "CSR support is in beta" notice: nothing to act on
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        # the callers pass row-sorted, in-range indices: skip torch's O(nnz) invariant check
        return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)


def normalized_adjacency(users: torch.Tensor, items: torch.Tensor, num_users: int, num_items: int,
                         norm: str) -> SparseAdjacency:
    """The ``(M+N) × (M+N)`` operator ``norm`` (module docstring) of the bipartite graph with edges
    ``(users[e], items[e])`` (each train pair once; both directions are added here)."""
    if norm not in NORMALIZATIONS:
        raise ValueError(f"unknown adjacency normalisation {norm!r}; expected one of {NORMALIZATIONS}")
    n = num_users + num_items
    items = items + num_users
    rows, cols = torch.cat([users, items]), torch.cat([items, users])
    if norm.endswith("self_loop"):
        diag = torch.arange(n)
        rows, cols = torch.cat([rows, diag]), torch.cat([cols, diag])
    deg = torch.bincount(rows, minlength=n).double()
    if norm == "rw_self_loop":
        inv = torch.where(deg > 0, 1.0 / deg, torch.zeros_like(deg))
        return SparseAdjacency(rows, cols, inv[rows].float(), n)
    inv_sqrt = torch.where(deg > 0, deg.rsqrt(), torch.zeros_like(deg))
    return SparseAdjacency(rows, cols, (inv_sqrt[rows] * inv_sqrt[cols]).float(), n, symmetric=True)
