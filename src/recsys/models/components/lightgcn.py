"""LightGCN encoder (He et al., SIGIR'20): linear propagation and layer combination.

``E⁽ᵏ⁺¹⁾ = Â E⁽ᵏ⁾`` with ``Â = D^{-1/2} A D^{-1/2}`` (train edges, no self-loops), and the final
embedding ``E = Σ_{k=0..K} α_k E⁽ᵏ⁾`` with ``α_k = 1/(K+1)`` (``layer_weights="mean"``) or
``α = softmax(w)`` with learned ``w`` initialised to uniform (``layer_weights="learned"``).
With ``num_layers=0`` this is matrix factorisation (BPR-MF).
"""

from __future__ import annotations

import torch
from torch import nn

from recsys.models.components.adjacency import RowSlice, SparseAdjacency, sparse_mm


def init_embedding(weight: torch.Tensor, init: str, std: float) -> None:
    """``normal``: N(0, std²) (LightGCN-PyTorch default, std 0.1); ``xavier``: Xavier uniform (papers)."""
    if init == "normal":
        nn.init.normal_(weight, std=std)
    elif init == "xavier":
        nn.init.xavier_uniform_(weight)
    else:
        raise ValueError(f"model.init must be 'normal' or 'xavier', got {init!r}")


class NodeEmbedding(nn.Module):
    """The ego embeddings of all ``M + N`` nodes in one table, users first (as PyG's node table): the user
    and item tables are views of it, so propagation needs no concatenation. Each part is initialised as a
    table of its own (:func:`init_embedding`, users first), drawing what two ``nn.Embedding`` tables would."""

    def __init__(self, num_users: int, num_items: int, dim: int, init: str, std: float) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"model.embedding_dim must be >= 1, got {dim}")
        self.num_users, self.num_items = num_users, num_items
        self.weight = nn.Parameter(torch.empty(num_users + num_items, dim))
        users, items = self.split(self.weight.data)
        users.normal_(), items.normal_()  # nn.Embedding's own init first: the RNG stream of two separate tables
        init_embedding(users, init, std)
        init_embedding(items, init, std)

    def split(self, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(users, items)`` views of a node table ``(M + N, ·)``."""
        return nodes[: self.num_users], nodes[self.num_users :]


def merge_separate_tables(state_dict: dict, prefix: str, *args) -> None:
    """A load pre-hook of the encoders: checkpoints written before the node table (``<encoder>.user_embedding.weight``
    and ``<encoder>.item_embedding.weight``) load as ``<encoder>.embedding.weight`` (users first)."""
    old = (f"{prefix}user_embedding.weight", f"{prefix}item_embedding.weight")
    if f"{prefix}embedding.weight" not in state_dict and all(k in state_dict for k in old):
        state_dict[f"{prefix}embedding.weight"] = torch.cat([state_dict.pop(old[0]), state_dict.pop(old[1])])


class LightGCNEncoder(nn.Module):
    """Ego embeddings + K parameter-free propagation layers; ``forward(adj, rows) -> final node embeddings``."""

    #: the operator Â this encoder propagates with (built by the LightningModule from the train edges)
    adjacency_norm = "sym"
    #: the L2 term of LightGCN applies to the layer-0 (ego) embeddings of the batch
    regularize_ego = True

    def __init__(
        self,
        num_users: int,
        num_items: int,
        embedding_dim: int = 64,
        num_layers: int = 3,
        layer_weights: str = "mean",
        init: str = "normal",
        init_std: float = 0.1,
        edge_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if num_layers < 0:
            raise ValueError(f"model.num_layers must be >= 0, got {num_layers}")
        if layer_weights not in ("mean", "learned"):
            raise ValueError(f"model.layer_weights must be 'mean' or 'learned', got {layer_weights!r}")
        if not 0.0 <= edge_dropout < 1.0:
            raise ValueError(f"model.edge_dropout must be in [0, 1), got {edge_dropout}")
        self.num_layers = num_layers
        self.edge_dropout = edge_dropout
        self.embedding = NodeEmbedding(num_users, num_items, embedding_dim, init, init_std)
        self._register_load_state_dict_pre_hook(merge_separate_tables)
        # no logits without propagation: softmax of one weight is 1, and a parameter that never gets a
        # gradient breaks DDP (the reduction of the step never finishes)
        learned = layer_weights == "learned" and num_layers > 0
        self.layer_logits = nn.Parameter(torch.zeros(num_layers + 1)) if learned else None

    def layer_weights(self) -> torch.Tensor:
        """α_0..α_K."""
        if self.layer_logits is None:
            return torch.full((self.num_layers + 1,), 1.0 / (self.num_layers + 1), device=self.embedding.weight.device)
        return torch.softmax(self.layer_logits, 0)

    def ego(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Layer-0 embeddings of all nodes, or of ``rows``."""
        x = self.embedding.weight
        return x if rows is None else x.index_select(0, rows)

    def forward(self, adj: SparseAdjacency, rows: torch.Tensor | None = None) -> torch.Tensor:
        """``E = Σ_k α_k Âᵏ E⁽⁰⁾`` of all nodes ``(M + N, d)``, or of ``rows`` only: then the last layer is
        ``Â[rows, :] E⁽ᴷ⁻¹⁾`` (the rows' edges, forward and backward), the same numbers as the full pass."""
        x = self.embedding.weight
        if self.num_layers == 0:
            return x if rows is None else x.index_select(0, rows)
        if self.training and self.edge_dropout > 0:
            adj = adj.edge_dropout(self.edge_dropout)
        return _LayerCombination.apply(x, self.layer_weights(), adj, None if rows is None else adj.rows(rows), rows)


class _LayerCombination(torch.autograd.Function):
    """``out = Σ_{k≤K} α_k Âᵏ E⁽⁰⁾`` of all nodes, or of the rows ``R`` only (then the last layer is
    ``Â[R, :] Âᴷ⁻¹ E⁽⁰⁾``), with the gradient written out (the propagation is linear). With ``g = dL/dout`` and
    ``Ē = g`` (all nodes) or ``g`` placed at rows ``R`` of an ``n × d`` zero matrix:
    ``G_{K−1} = α_K Lᵀ g + α_{K−1} Ē`` (``L = Â`` or ``Â[R, :]``) and ``G_{k−1} = Âᵀ G_k + α_{k−1} Ē`` down to
    ``dL/dE⁽⁰⁾ = G_0``: K products each way and no intermediate layer kept, but the layers' rows when ``α`` is
    learned (``dL/dα_k = Σ g ⊙ (Âᵏ E⁽⁰⁾)[R]``). ``R`` holds distinct rows."""

    @staticmethod
    def forward(ctx, x0: torch.Tensor, alpha: torch.Tensor, adj: SparseAdjacency,  # type: ignore[override]
                last: RowSlice | None, rows: torch.Tensor | None) -> torch.Tensor:
        pick = (lambda t: t) if rows is None else (lambda t: t.index_select(0, rows))
        weights = alpha.tolist()
        keep = alpha.requires_grad
        picked = [pick(x0)]
        out = picked[0] * weights[0]
        x = x0
        for k in range(1, len(weights)):
            x = sparse_mm(adj.matrix if last is None or k < len(weights) - 1 else last.matrix, x)
            layer = x if last is not None and k == len(weights) - 1 else pick(x)
            out.add_(layer, alpha=weights[k])
            if keep:
                picked.append(layer)
        ctx.adj, ctx.last, ctx.weights, ctx.shape = adj, last, weights, x0.shape
        ctx.save_for_backward(*([] if rows is None else [rows]), *(picked if keep else ()))
        ctx.has_rows = rows is not None
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        saved = list(ctx.saved_tensors)
        rows = saved.pop(0) if ctx.has_rows else None
        weights = ctx.weights
        spread = grad if rows is None else torch.zeros(ctx.shape, dtype=grad.dtype, device=grad.device).index_copy_(
            0, rows, grad)
        last_t = ctx.adj.matrix_t if ctx.last is None else ctx.last.matrix_t
        g = sparse_mm(last_t, grad).mul_(weights[-1]).add_(spread, alpha=weights[-2])
        for k in range(len(weights) - 2, 0, -1):
            g = sparse_mm(ctx.adj.matrix_t, g).add_(spread, alpha=weights[k - 1])
        grad_alpha = torch.stack([(grad * p).sum() for p in saved]) if saved else None
        return g, grad_alpha, None, None, None
