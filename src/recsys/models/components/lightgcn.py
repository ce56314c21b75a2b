"""LightGCN encoder (He et al., SIGIR'20): linear propagation and layer combination.

``E⁽ᵏ⁺¹⁾ = Â E⁽ᵏ⁾`` with ``Â = D^{-1/2} A D^{-1/2}`` (train edges, no self-loops), and the final
embedding ``E = Σ_{k=0..K} α_k E⁽ᵏ⁾`` with ``α_k = 1/(K+1)`` (``layer_weights="mean"``) or
``α = softmax(w)`` with learned ``w`` initialised to uniform (``layer_weights="learned"``).
With ``num_layers=0`` this is matrix factorisation (BPR-MF).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import ClassVar

import torch
from torch import nn

from recsys.models.components.adjacency import SparseAdjacency
from recsys.settings import DROP_RATE, NON_NEGATIVE_INT, POSITIVE_INT, Settings, check_settings, one_of

#: ``model.init``: the ego-embedding initialisation (:func:`init_embedding`)
INIT = one_of("normal", "xavier")


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
        self.num_users, self.num_items = num_users, num_items
        self.weight = nn.Parameter(torch.empty(num_users + num_items, dim))
        users, items = self.split(self.weight.data)
        users.normal_(), items.normal_()  # nn.Embedding's own init first: the RNG stream of two separate tables
        init_embedding(users, init, std)
        init_embedding(items, init, std)

    def split(self, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(users, items)`` views of a node table ``(M + N, ·)``."""
        return nodes[: self.num_users], nodes[self.num_users :]


class LightGCNEncoder(nn.Module):
    """Ego embeddings + K parameter-free propagation layers; ``forward(adj, rows) -> final node embeddings``."""

    #: the operator Â this encoder propagates with (built by the LightningModule from the train edges)
    adjacency_norm = "sym"
    #: the L2 term of LightGCN applies to the layer-0 (ego) embeddings of the batch
    regularize_ego = True
    #: the ``model.*`` settings of the encoder (:mod:`recsys.settings`)
    settings: ClassVar[Settings] = {
        "embedding_dim": POSITIVE_INT,
        "num_layers": NON_NEGATIVE_INT,
        "layer_weights": one_of("mean", "learned"),
        "init": INIT,
        "edge_dropout": DROP_RATE,
    }

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
        check_settings("model", {"embedding_dim": embedding_dim, "num_layers": num_layers, "layer_weights": layer_weights,
                                 "init": init, "edge_dropout": edge_dropout}, type(self))
        super().__init__()
        self.num_layers = num_layers
        self.edge_dropout = edge_dropout
        self.embedding = NodeEmbedding(num_users, num_items, embedding_dim, init, init_std)
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
        if self.num_layers == 0:
            return self.ego(rows)
        return self.combine(self.propagate(adj, rows))

    def propagate(self, adj: SparseAdjacency, rows: torch.Tensor | None = None,
                  perturb: Callable[[torch.Tensor], torch.Tensor] | None = None) -> Iterator[torch.Tensor]:
        """The layers ``E⁽⁰⁾, …, E⁽ᴷ⁾`` of all nodes, or of ``rows`` (the last one as ``Â[rows, :] E⁽ᴷ⁻¹⁾``), one
        at a time. ``perturb`` (e.g. noise) replaces every propagated ``E⁽ᵏ⁾`` (k ≥ 1) by ``perturb(E⁽ᵏ⁾)``,
        which is what the next layer propagates."""
        x = self.embedding.weight
        if self.training and self.edge_dropout > 0 and self.num_layers > 0:
            adj = adj.edge_dropout(self.edge_dropout)
        last = None if rows is None or self.num_layers == 0 else adj.rows(rows)
        yield self.ego(rows)
        for k in range(1, self.num_layers + 1):
            at_rows = last is not None and k == self.num_layers  # the last layer at the rows only: Â[R, :] E⁽ᴷ⁻¹⁾
            x = (last if at_rows else adj) @ x
            if perturb is not None:
                x = perturb(x)
            yield x if at_rows or rows is None else x.index_select(0, rows)

    def combine(self, layers: Iterable[torch.Tensor]) -> torch.Tensor:
        """``Σ_k α_k E⁽ᵏ⁾`` (:meth:`layer_weights`)."""
        alpha = self.layer_weights()
        out = None
        for k, layer in enumerate(layers):
            out = alpha[k] * layer if out is None else out + alpha[k] * layer
        return out
