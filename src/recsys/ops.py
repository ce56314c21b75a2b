"""Sparse primitives with their own backward: the CSR product ``A x`` and the product with a row slice ``A[R, :] x``.

The only custom ``torch.autograd.Function`` s of the project (each has a ``gradcheck`` test in double precision).
Autograd has no backward for a CSR matrix times a dense one that uses a prebuilt transpose: these give
``dL/dx = Aᵀ dL/dy`` from a transpose built once (the matrix itself for a symmetric operator), and no gradient
w.r.t. ``A``. Every product is computed in ``promote(x.dtype, A.dtype)`` (at least the operator's float32) with
autocast off and returned in ``x``'s dtype: under mixed precision autocast would cast the sparse matrix (the CPU
has no bfloat16 CSR kernel, and low-precision neighbourhood sums lose accuracy on high-degree nodes); ``64-true``
propagates in float64.
"""

from __future__ import annotations

from typing import Protocol

import torch


class HasTranspose(Protocol):
    """A CSR matrix ``matrix`` ``(r × n)`` with its transpose ``matrix_t`` ``(n × r)`` (built when first read)."""

    matrix: torch.Tensor

    @property
    def matrix_t(self) -> torch.Tensor: ...


def sparse_mm(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``a @ x`` for a CSR ``a``, in ``promote(x, a)`` with autocast off, returned in ``x``'s dtype.

    Written by ``addmm(out, a, x, beta=0, out=out)`` into an uninitialised result (``beta = 0``: never read): the
    same numbers as ``torch.sparse.mm``, without its zero-filled result and the copy back (~1.5× faster on CPU)."""
    dtype = torch.promote_types(x.dtype, a.dtype)
    a = a if a.dtype == dtype else a.to(dtype)
    with torch.autocast(device_type=x.device.type, enabled=False):
        out = torch.empty(a.shape[0], x.shape[1], dtype=dtype, device=x.device)
        return torch.addmm(out, a, x.to(dtype), beta=0, out=out).to(x.dtype)


class _CSRProduct(torch.autograd.Function):
    """``y = A x``; ``dL/dx = Aᵀ dL/dy`` from the prebuilt transpose ``A_t``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, a: torch.Tensor, a_t: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.a_t, ctx.dtype = a_t, x.dtype
        return sparse_mm(a, x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return sparse_mm(ctx.a_t, grad).to(ctx.dtype), None, None


class _RowSliceProduct(torch.autograd.Function):
    """``y = S x`` for a row slice ``S = A[R, :]`` (``|R| × n``); ``dL/dx = Sᵀ dL/dy`` (the slice's transpose is
    built on the first backward, so a forward-only product never sorts its entries)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, s: HasTranspose) -> torch.Tensor:  # type: ignore[override]
        ctx.s, ctx.dtype = s, x.dtype
        return sparse_mm(s.matrix, x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return sparse_mm(ctx.s.matrix_t, grad).to(ctx.dtype), None


def csr_product(a: torch.Tensor, a_t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``A x`` for a CSR ``a`` with its transpose ``a_t`` (``a`` itself when symmetric), differentiable in ``x``."""
    return _CSRProduct.apply(x, a, a_t)


def row_slice_product(s: HasTranspose, x: torch.Tensor) -> torch.Tensor:
    """``S x`` for a row slice ``S`` of an operator (``s.matrix``, ``s.matrix_t``), differentiable in ``x``."""
    return _RowSliceProduct.apply(x, s)
