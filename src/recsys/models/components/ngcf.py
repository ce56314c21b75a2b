"""NGCF encoder (Wang et al., SIGIR'19) — the paper's propagation rule and the official code's variant.

Notation (algorithms.md §2): ``E = E⁽ˡ⁻¹⁾`` the ``(M+N)×d`` input of layer ``l`` (users first), ``σ`` =
LeakyReLU with slope 0.2, ``W1, W2`` the layer's weights (``d_in×d_out``), ``b1, b2`` its biases.

``adj_norm`` selects the graph operator and with it the exact form of a layer:

* ``"rw_self_loop"`` (default; the official TF code ``adj_type='norm'`` and the PyTorch port):
  ``L̂ = D̃⁻¹(A + I)`` (row normalisation of the adjacency *with* self-loops), ``S = L̂ E`` and

  ``sum = S W1 + b1``,  ``bi = (E ⊙ S) W2 + b2`` — the element-wise product uses the aggregated ``S``,
  which already contains the self term.
* ``"sym_self_loop"``: the same code form with ``L̃ = D̃^{-1/2}(A + I)D̃^{-1/2}`` (symmetric normalisation of
  ``A + I``, the degree counting the loop).
* ``"sym"``: the paper's Eq. 7 exactly, ``L = D^{-1/2} A D^{-1/2}`` (no self-loops) and the self-connection
  added explicitly to the first branch only:

  ``sum = (L + I) E W1 + b1 = (L E + E) W1 + b1``,  ``bi = (L E ⊙ E) W2 + b2``.

Then, for every form:

* ``activation_per_branch=True`` (default; official TF code ``NGCF.py``, which produced the published
  numbers): ``E⁽ˡ⁾ = σ(sum) + σ(bi)``; ``False`` (the paper's Eq. 7 and the PyTorch port ``NGCF-PT``):
  ``E⁽ˡ⁾ = σ(sum + bi)``.
* ``bias=False`` drops ``b1, b2`` (the paper has none; the official code has them, Xavier-initialised).
* message dropout (rate ``message_dropout[l]``, standard inverted dropout) on the layer output ``E⁽ˡ⁾``;
  the next layer receives this un-normalised ``E⁽ˡ⁾``.
* ``normalize_layers=True`` (official code): what is *stored for the concatenation* is the row-wise
  L2-normalised ``E⁽ˡ⁾/‖E⁽ˡ⁾‖`` (layer 0 is stored as is); ``False`` stores ``E⁽ˡ⁾`` (the paper).
* final embedding ``e = e⁽⁰⁾ ‖ e⁽¹⁾ ‖ … ‖ e⁽ᴸ⁾`` (dimension ``d + Σ_l d_l``), score ``e_uᵀ e_i``.

Node dropout is done as the official code does it: during training every nonzero entry of the normalised
operator is dropped independently with probability ``node_dropout`` and the kept ones are rescaled by
``1/(1 − node_dropout)``; one mask per forward pass, shared by all layers (for ``sym`` the explicit ``I``
term is not dropped; for the ``*_self_loop`` forms the loops are entries and can be dropped).
Both dropouts are active only in training mode; evaluation is deterministic. (The TF code applies node
dropout only with ``--node_dropout_flag 1``; the PyTorch port's default and the README's ``--node_dropout [0.1]``
give the default 0.1 here; ``model.node_dropout=0`` turns it off.)

The L2 term of the official code is on the *final* (concatenated) embeddings of the batch, not on the ego
embeddings nor on W (``regularize_ego = False``; :class:`~recsys.models.graph_module.GraphRecommender`).
Init: Xavier uniform for embeddings (``init="xavier"``), W and b (biases as ``1×d_out`` matrices, as TF).

Impossible options raise ``ValueError`` naming the ``model.<key>`` (reported by ``build_model`` as a
``ConfigError``, like :class:`~recsys.models.components.lightgcn.LightGCNEncoder`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from recsys.data.interactions import UserItemCSR
from recsys.models.components.adjacency import (
    SparseAdjacency,
    random_walk_adjacency,
    symmetric_norm_adjacency,
)
from recsys.models.components.lightgcn import init_embedding

log = logging.getLogger(__name__)

ADJ_NORMS = ("rw_self_loop", "sym", "sym_self_loop")


class NGCFLayer(nn.Module):
    """One NGCF propagation layer: ``W1, b1`` (sum branch) and ``W2, b2`` (bi-interaction branch)."""

    def __init__(self, d_in: int, d_out: int, bias: bool = True) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.empty(d_in, d_out))
        self.w2 = nn.Parameter(torch.empty(d_in, d_out))
        nn.init.xavier_uniform_(self.w1)
        nn.init.xavier_uniform_(self.w2)
        if bias:
            self.b1 = nn.Parameter(torch.empty(1, d_out))
            self.b2 = nn.Parameter(torch.empty(1, d_out))
            nn.init.xavier_uniform_(self.b1)
            nn.init.xavier_uniform_(self.b2)
        else:
            self.register_parameter("b1", None)
            self.register_parameter("b2", None)

    def branches(self, sum_in: torch.Tensor, bi_in: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pre-activation branches ``sum_in W1 + b1`` and ``bi_in W2 + b2``."""
        s, b = sum_in @ self.w1, bi_in @ self.w2
        if self.b1 is not None:
            s, b = s + self.b1, b + self.b2
        return s, b


class NGCFEncoder(nn.Module):
    """Ego embeddings + L NGCF layers + concatenation; ``forward(adj) -> (users, items)``.

    Args:
        num_users, num_items: graph sizes.
        embedding_dim: ``d`` of the ego embeddings (layer 0).
        num_layers: depth ``L`` when ``layer_sizes`` is not given (every layer of size ``embedding_dim``).
        layer_sizes: output sizes ``[d_1, …, d_L]`` (the official ``--layer_size``); when given it defines
            the depth and ``num_layers`` is ignored (a differing value is logged).
        adj_norm: ``rw_self_loop`` | ``sym`` | ``sym_self_loop`` (see the module docstring).
        bias: the official code's ``b1, b2``.
        activation_per_branch: ``σ(sum) + σ(bi)`` (official TF, default) vs ``σ(sum + bi)`` (paper, PT port).
        normalize_layers: store row-L2-normalised layer outputs for the concatenation (official code).
        node_dropout: drop rate of the normalised adjacency's nonzeros (training only).
        message_dropout: drop rate of each layer's output; a float for all layers or one per layer.
        negative_slope: LeakyReLU slope (TF default 0.2; PyTorch's 0.01 default would be wrong).
        init, init_std: ego-embedding init (``xavier`` as the official code, or ``normal`` N(0, std²)).
    """

    #: the official code regularises the final (concatenated) embeddings of the batch
    regularize_ego = False

    def __init__(
        self,
        num_users: int,
        num_items: int,
        embedding_dim: int = 64,
        num_layers: int = 3,
        layer_sizes: Sequence[int] | None = None,
        adj_norm: str = "rw_self_loop",
        bias: bool = True,
        activation_per_branch: bool = True,
        normalize_layers: bool = True,
        node_dropout: float = 0.1,
        message_dropout: float | Sequence[float] = 0.1,
        negative_slope: float = 0.2,
        init: str = "xavier",
        init_std: float = 0.1,
    ) -> None:
        super().__init__()
        if embedding_dim < 1:
            raise ValueError(f"model.embedding_dim must be >= 1, got {embedding_dim}")
        if layer_sizes is None:
            if num_layers is None or num_layers < 0:
                raise ValueError(f"model.num_layers must be >= 0, got {num_layers}")
            sizes = [embedding_dim] * num_layers
        else:
            sizes = [int(s) for s in layer_sizes]
            if any(s < 1 for s in sizes):
                raise ValueError(f"model.layer_sizes must be positive integers, got {list(layer_sizes)}")
            if num_layers is not None and num_layers != len(sizes):
                log.info("model.layer_sizes=%s defines %d layers; model.num_layers=%s is ignored", sizes, len(sizes), num_layers)
        if adj_norm not in ADJ_NORMS:
            raise ValueError(f"model.adj_norm must be one of {', '.join(ADJ_NORMS)}; got {adj_norm!r}")
        if not 0.0 <= node_dropout < 1.0:
            raise ValueError(f"model.node_dropout must be in [0, 1), got {node_dropout}")
        if isinstance(message_dropout, (int, float)):
            mess = [float(message_dropout)] * len(sizes)
        else:
            mess = [float(p) for p in message_dropout]
            if len(mess) != len(sizes):
                raise ValueError(
                    f"model.message_dropout has {len(mess)} rates but the model has {len(sizes)} layers "
                    f"(layer sizes {sizes}); give one rate per layer or a single float"
                )
        if any(not 0.0 <= p < 1.0 for p in mess):
            raise ValueError(f"model.message_dropout rates must be in [0, 1), got {mess}")
        if init not in ("xavier", "normal"):
            raise ValueError(f"model.init must be 'xavier' or 'normal', got {init!r}")

        self.num_users, self.num_items = num_users, num_items
        self.embedding_dim = embedding_dim
        self.layer_sizes = sizes
        self.num_layers = len(sizes)
        self.adj_norm = adj_norm
        self.activation_per_branch = activation_per_branch
        self.normalize_layers = normalize_layers
        self.node_dropout = float(node_dropout)
        self.message_dropout = mess
        self.negative_slope = negative_slope
        self.user_embedding = nn.Embedding(num_users, embedding_dim)
        self.item_embedding = nn.Embedding(num_items, embedding_dim)
        init_embedding(self.user_embedding.weight, init, init_std)
        init_embedding(self.item_embedding.weight, init, init_std)
        dims = [embedding_dim, *sizes]
        self.layers = nn.ModuleList(NGCFLayer(dims[k], dims[k + 1], bias) for k in range(len(sizes)))

    @property
    def output_dim(self) -> int:
        """Dimension of the final (concatenated) embedding: ``d + Σ_l d_l``."""
        return self.embedding_dim + sum(self.layer_sizes)

    def build_adjacency(self, train: UserItemCSR) -> SparseAdjacency:
        """The operator of ``adj_norm``: ``D̃⁻¹(A+I)``, ``D^{-1/2} A D^{-1/2}`` or ``D̃^{-1/2}(A+I)D̃^{-1/2}``."""
        if self.adj_norm == "rw_self_loop":
            return random_walk_adjacency(train, self_loops=True)
        return symmetric_norm_adjacency(train, self_loops=self.adj_norm == "sym_self_loop")

    def ego(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.user_embedding.weight, self.item_embedding.weight

    def forward(self, adj: SparseAdjacency) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([self.user_embedding.weight, self.item_embedding.weight])
        if self.training and self.node_dropout > 0 and self.num_layers > 0:
            adj = adj.edge_dropout(self.node_dropout)  # one mask for all layers of this pass
        stored = [x]
        for k, layer in enumerate(self.layers):
            side = adj @ x
            if self.adj_norm == "sym":  # paper: (L + I) E W1 + (L E ⊙ E) W2
                s, b = layer.branches(side + x, x * side)
            else:  # official code: S W1 + (E ⊙ S) W2 with S = L̂ E (self term inside L̂)
                s, b = layer.branches(side, x * side)
            if self.activation_per_branch:
                x = F.leaky_relu(s, self.negative_slope) + F.leaky_relu(b, self.negative_slope)
            else:
                x = F.leaky_relu(s + b, self.negative_slope)
            x = F.dropout(x, self.message_dropout[k], training=self.training)
            stored.append(_l2_normalize_rows(x) if self.normalize_layers else x)
        return torch.cat(stored, dim=1).split([self.num_users, self.num_items])


def _l2_normalize_rows(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``x / sqrt(max(Σ x², eps))`` per row, exactly ``tf.math.l2_normalize(x, axis=1)``."""
    return x * x.pow(2).sum(1, keepdim=True).clamp_min(eps).rsqrt()
