"""The sparse primitives of ``recsys.ops`` (the project's only custom autograd Functions): ``gradcheck`` in double
precision, and the products against dense matrices."""

from __future__ import annotations

import torch

from recsys.models.components.adjacency import normalized_adjacency
from recsys.ops import csr_product, row_slice_product


def operator(norm: str):
    g = torch.Generator().manual_seed(0)
    users, items = torch.randint(5, (14,), generator=g), torch.randint(6, (14,), generator=g)
    pairs = torch.unique(users * 6 + items)
    adj = normalized_adjacency(pairs // 6, pairs % 6, 5, 6, norm)
    return adj, adj.matrix.to(torch.float64).to_dense()


def test_csr_product_gradcheck_and_dense_value():
    for norm in ("sym", "rw_self_loop"):  # symmetric (A itself in the backward) and a prebuilt transpose
        adj, dense = operator(norm)
        a, a_t = adj.matrix.to(torch.float64), adj.matrix_t.to(torch.float64)
        x = torch.randn(11, 3, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda t, a=a, a_t=a_t: csr_product(a, a_t, t), (x,))
        torch.testing.assert_close(csr_product(a, a_t, x), dense @ x)
        if norm == "rw_self_loop":
            assert not torch.equal(dense, dense.T)  # the transpose matters


def test_row_slice_product_gradcheck_and_dense_value():
    adj, dense = operator("rw_self_loop")
    adj = adj.to("cpu")
    rows = torch.tensor([9, 0, 4])
    s = adj.rows(rows)

    class Double:  # the slice in float64 (gradcheck perturbs float64 inputs)
        matrix = s.matrix.to(torch.float64)
        matrix_t = s.matrix_t.to(torch.float64)

    x = torch.randn(11, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: row_slice_product(Double, t), (x,))
    torch.testing.assert_close(row_slice_product(Double, x), dense[rows] @ x)
