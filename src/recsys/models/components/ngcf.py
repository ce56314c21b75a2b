"""NGCF encoder (Wang et al., SIGIR'19) — the paper's propagation rule and the official code's variant.

Notation (Wang et al., SIGIR'19, §2, Eq. 7): ``E = E⁽ˡ⁻¹⁾`` the ``(M+N)×d`` input of layer ``l`` (users
first), ``σ`` =
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

The layer rule is :meth:`NGCFLayer.forward`; the encoder runs the layers in a loop and, given the rows a
training step reads, computes the last layer at those rows only (the same numbers as the full pass).

Impossible options raise a ``ConfigError`` naming the ``model.<key>``: the encoder's ``settings`` and
``relations`` (:mod:`recsys.settings`), also checked on the config before any work.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from recsys.models.components.adjacency import NORMALIZATIONS, SparseAdjacency
from recsys.models.components.lightgcn import INIT, NodeEmbedding
from recsys.settings import (
    DROP_RATE,
    DROP_RATES,
    NON_NEGATIVE_INT,
    POSITIVE_INT,
    Relation,
    Settings,
    check_settings,
    is_list,
    list_of,
    one_of,
    optional,
)

log = logging.getLogger(__name__)

ADJ_NORMS = NORMALIZATIONS


def dropout_noise(shape: tuple[int, int], p: float, like: torch.Tensor) -> torch.Tensor:
    """The inverted-dropout multiplier of ``F.dropout``: ``Bernoulli(1 − p) / (1 − p)`` (one global-RNG draw)."""
    return torch.empty(shape, dtype=like.dtype, device=like.device).bernoulli_(1 - p).div_(1 - p)


class NGCFLayer(nn.Module):
    """One NGCF propagation layer ``E⁽ˡ⁾ = f(E, S)`` with ``S = L̂ E`` (module docstring):

    * ``paper_form`` (``adj_norm="sym"``, Eq. 7): ``sum = (S + E) W1 + b1``, ``bi = (S ⊙ E) W2 + b2``;
    * otherwise (official code): ``sum = S W1 + b1``, ``bi = (E ⊙ S) W2 + b2``;
    * ``E⁽ˡ⁾ = σ(sum) + σ(bi)`` (``activation_per_branch``, official TF) or ``σ(sum + bi)`` (paper), ``σ`` =
      LeakyReLU(``negative_slope``), then message dropout ``p``.
    """

    def __init__(self, d_in: int, d_out: int, bias: bool = True, paper_form: bool = False,
                 activation_per_branch: bool = True, negative_slope: float = 0.2, dropout: float = 0.0) -> None:
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
        self.paper_form = paper_form
        self.activation_per_branch = activation_per_branch
        self.negative_slope = negative_slope
        self.dropout = dropout

    def forward(self, x: torch.Tensor, side: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """``E⁽ˡ⁾`` from ``E`` (``x``) and ``S = L̂ E`` (``side``), row by row (any subset of rows). ``noise``: the
        dropout multiplier of those rows (:func:`dropout_noise`); drawn here when ``None`` in training."""
        s = (side + x if self.paper_form else side) @ self.w1
        b = (x * side) @ self.w2
        if self.b1 is not None:
            s, b = s + self.b1, b + self.b2
        if self.activation_per_branch:
            out = F.leaky_relu(s, self.negative_slope) + F.leaky_relu(b, self.negative_slope)
        else:
            out = F.leaky_relu(s + b, self.negative_slope)
        if not self.training or self.dropout == 0:
            return out
        return out * (dropout_noise(out.shape, self.dropout, out) if noise is None else noise)


class NGCFEncoder(nn.Module):
    """Ego embeddings + L NGCF layers + concatenation; ``forward(adj, rows) -> final node embeddings``.

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
    #: the ``model.*`` settings of the encoder (:mod:`recsys.settings`)
    settings: ClassVar[Settings] = {
        "embedding_dim": POSITIVE_INT,
        "num_layers": NON_NEGATIVE_INT,
        "layer_sizes": optional(list_of(POSITIVE_INT, "a list of integers > 0", empty=True)),
        "adj_norm": one_of(*ADJ_NORMS),
        "node_dropout": DROP_RATE,
        "message_dropout": DROP_RATES,
        "init": INIT,
    }
    relations: ClassVar[tuple[Relation, ...]] = (
        Relation("message_dropout", ("num_layers", "layer_sizes"),
                 lambda v: not is_list(v["message_dropout"]) or len(v["message_dropout"]) == len(layer_sizes_of(v)),
                 "a drop rate, or a list of one per layer (as many as {layer_sizes}, else {num_layers})"),
    )

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
        values = {"embedding_dim": embedding_dim, "num_layers": num_layers, "layer_sizes": layer_sizes,
                  "adj_norm": adj_norm, "node_dropout": node_dropout, "message_dropout": message_dropout, "init": init}
        check_settings("model", values, type(self))
        super().__init__()
        sizes = layer_sizes_of(values)
        if layer_sizes is not None and num_layers != len(sizes):
            log.info("model.layer_sizes=%s defines %d layers; model.num_layers=%s is ignored", sizes, len(sizes), num_layers)
        mess = [float(p) for p in message_dropout] if is_list(message_dropout) else [float(message_dropout)] * len(sizes)
        self.adjacency_norm = adj_norm
        self.normalize_layers = normalize_layers
        self.node_dropout = float(node_dropout)
        self.embedding = NodeEmbedding(num_users, num_items, embedding_dim, init, init_std)
        dims = [embedding_dim, *sizes]
        self.layers = nn.ModuleList(
            NGCFLayer(dims[k], dims[k + 1], bias, adj_norm == "sym", activation_per_branch, negative_slope, mess[k])
            for k in range(len(sizes))
        )

    def ego(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        x = self.embedding.weight
        return x if rows is None else x.index_select(0, rows)

    def forward(self, adj: SparseAdjacency, rows: torch.Tensor | None = None) -> torch.Tensor:
        """``e = e⁽⁰⁾ ‖ e⁽¹⁾ ‖ … ‖ e⁽ᴸ⁾`` of all nodes, or of ``rows`` only (the last layer then runs on those
        rows: ``Â[rows, :] E⁽ᴸ⁻¹⁾`` and the dense layer on ``|rows|`` rows; its dropout noise is drawn for all
        nodes and gathered, so the numbers are those of the full pass)."""
        x = self.embedding.weight
        pick = (lambda t: t) if rows is None else (lambda t: t.index_select(0, rows))
        if self.training and self.node_dropout > 0 and self.layers:
            adj = adj.edge_dropout(self.node_dropout)  # one mask for all layers of this pass
        stored = [pick(x)]
        for k, layer in enumerate(self.layers):
            if rows is None or k < len(self.layers) - 1:
                x = layer(x, adj @ x)
                stored.append(pick(self._stored(x)))
                continue
            noise = None
            if layer.training and layer.dropout > 0:
                noise = dropout_noise((x.shape[0], layer.w1.shape[1]), layer.dropout, x).index_select(0, rows)
            stored.append(self._stored(layer(x.index_select(0, rows), adj.rows(rows) @ x, noise)))
        return torch.cat(stored, dim=1)

    def _stored(self, x: torch.Tensor) -> torch.Tensor:
        return _l2_normalize_rows(x) if self.normalize_layers else x


def layer_sizes_of(values: Mapping[str, Any]) -> list[int]:
    """The output sizes of the layers: ``layer_sizes``, else ``num_layers`` times ``embedding_dim``."""
    if values["layer_sizes"] is not None:
        return [int(s) for s in values["layer_sizes"]]
    return [values.get("embedding_dim", 0)] * values["num_layers"]


def _l2_normalize_rows(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``x / sqrt(max(Σ x², eps))`` per row, exactly ``tf.math.l2_normalize(x, axis=1)``."""
    return x * x.pow(2).sum(1, keepdim=True).clamp_min(eps).rsqrt()
