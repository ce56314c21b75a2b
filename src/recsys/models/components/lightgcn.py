"""LightGCN encoder (He et al., SIGIR'20): linear propagation and layer combination.

``E⁽ᵏ⁺¹⁾ = Â E⁽ᵏ⁾`` with ``Â = D^{-1/2} A D^{-1/2}`` (train edges, no self-loops), and the final
embedding ``E = Σ_{k=0..K} α_k E⁽ᵏ⁾`` with ``α_k = 1/(K+1)`` (``layer_weights="mean"``) or
``α = softmax(w)`` with learned ``w`` initialised to uniform (``layer_weights="learned"``).
With ``num_layers=0`` this is matrix factorisation (BPR-MF).
"""

from __future__ import annotations

import torch
from torch import nn

from recsys.data.interactions import UserItemCSR
from recsys.models.components.adjacency import SparseAdjacency, symmetric_norm_adjacency


def init_embedding(weight: torch.Tensor, init: str, std: float) -> None:
    """``normal``: N(0, std²) (LightGCN-PyTorch default, std 0.1); ``xavier``: Xavier uniform (papers)."""
    if init == "normal":
        nn.init.normal_(weight, std=std)
    elif init == "xavier":
        nn.init.xavier_uniform_(weight)
    else:
        raise ValueError(f"model.init must be 'normal' or 'xavier', got {init!r}")


class LightGCNEncoder(nn.Module):
    """Ego embeddings + K parameter-free propagation layers; ``forward(adj) -> (users, items)``."""

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
        if embedding_dim < 1:
            raise ValueError(f"model.embedding_dim must be >= 1, got {embedding_dim}")
        if layer_weights not in ("mean", "learned"):
            raise ValueError(f"model.layer_weights must be 'mean' or 'learned', got {layer_weights!r}")
        if not 0.0 <= edge_dropout < 1.0:
            raise ValueError(f"model.edge_dropout must be in [0, 1), got {edge_dropout}")
        self.num_users, self.num_items = num_users, num_items
        self.num_layers = num_layers
        self.edge_dropout = edge_dropout
        self.user_embedding = nn.Embedding(num_users, embedding_dim)
        self.item_embedding = nn.Embedding(num_items, embedding_dim)
        init_embedding(self.user_embedding.weight, init, init_std)
        init_embedding(self.item_embedding.weight, init, init_std)
        # no logits without propagation: softmax of one weight is 1, and a parameter that never gets a
        # gradient breaks DDP (the reduction of the step never finishes)
        learned = layer_weights == "learned" and num_layers > 0
        self.layer_logits = nn.Parameter(torch.zeros(num_layers + 1)) if learned else None

    @staticmethod
    def build_adjacency(train: UserItemCSR) -> SparseAdjacency:
        return symmetric_norm_adjacency(train, self_loops=False)

    def layer_weights(self) -> torch.Tensor:
        """α_0..α_K."""
        if self.layer_logits is None:
            return torch.full((self.num_layers + 1,), 1.0 / (self.num_layers + 1), device=self.user_embedding.weight.device)
        return torch.softmax(self.layer_logits, 0)

    def ego(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.user_embedding.weight, self.item_embedding.weight

    def forward(self, adj: SparseAdjacency) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([self.user_embedding.weight, self.item_embedding.weight])
        if self.num_layers == 0:
            return x.split([self.num_users, self.num_items])
        if self.training and self.edge_dropout > 0:
            adj = adj.edge_dropout(self.edge_dropout)
        alpha = self.layer_weights()
        out = alpha[0] * x
        for k in range(1, self.num_layers + 1):
            x = adj @ x
            out = out + alpha[k] * x
        return out.split([self.num_users, self.num_items])
