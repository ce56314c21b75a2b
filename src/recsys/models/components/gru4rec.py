"""GRU4Rec network (Hidasi et al., ICLR'16; Hidasi & Karatzoglou, CIKM'18) and its Adagrad optimiser.

Plain ``nn.Module`` (Hidasi et al., ICLR'16 §3; Hidasi & Karatzoglou, CIKM'18):

* input: ``embedding="shared"`` (default, "constrained embedding": the output item matrix ``Wy`` is also the
  input embedding, so its size is the last layer's), ``embedding=<k>`` (a separate ``N × k`` table) or
  ``embedding="onehot"`` (no embedding: the one-hot input's weights of the first GRU layer's three gates are
  looked up per item, as the official ``GRUEmbedding``; that layer applies the reset gate before its hidden
  matrix, Cho et al.'s form);
* GRU layers (tanh), dropout on the input embedding (``dropout_embed``) and on every layer's output
  (``dropout_hidden``) — the dropped-out output is also what is kept as the hidden state; with ``onehot`` the
  first layer's output is the embedding, so it gets ``dropout_embed`` (the official ``DE``), the others
  ``dropout_hidden``;
* scores ``h Wyᵀ + by`` (item bias ``by``), in training only for the step's candidates (the distinct items of
  its targets and negatives).

Weights are uniform in ``±sqrt(6 / (fan_in + fan_out))`` per gate block, biases 0. With ``sparse=True`` the
item tables (``Wy``, ``by``, the embedding) get sparse gradients: only the rows a step touches are updated,
as the official optimiser does (:class:`recsys.optim.AdagradM` handles both kinds).

"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from recsys.settings import DROP_RATE, POSITIVE_INT, POSITIVE_INTS, Settings, Values, check_settings

EMBEDDING_MODES = ("shared", "onehot")


def _embedding(v: Any) -> bool:
    return v in EMBEDDING_MODES or POSITIVE_INT.test(v) or (isinstance(v, str) and v.isdigit() and int(v) > 0)


def init_blocks_(tensor: torch.Tensor, rows_blocks: int = 1, cols_blocks: int = 1) -> torch.Tensor:
    """Uniform ``±sqrt(6 / (rows/rows_blocks + cols/cols_blocks))``: Glorot per gate block."""
    bound = math.sqrt(6.0 / (tensor.shape[0] / rows_blocks + tensor.shape[1] / cols_blocks))
    with torch.no_grad():
        return tensor.uniform_(-bound, bound)


class OneHotGRULayer(nn.Module):
    """First GRU layer over a one-hot item input: ``Wx[item]`` ``(3H,)`` holds the input weights of the
    candidate, reset and update gates. ``r, z = σ(Wx_r + h W_r + b), σ(Wx_z + h W_z + b)``,
    ``h̃ = tanh(Wx_h + (r ⊙ h) W_h + b)``, ``h' = (1 − z) ⊙ h + z ⊙ h̃``."""

    def __init__(self, num_items: int, hidden: int) -> None:
        super().__init__()
        self.input_weight = nn.Parameter(torch.empty(num_items, 3 * hidden))
        self.gate_weight = nn.Parameter(torch.empty(hidden, 2 * hidden))
        self.candidate_weight = nn.Parameter(torch.empty(hidden, hidden))
        self.bias = nn.Parameter(torch.zeros(3 * hidden))
        init_blocks_(self.input_weight, 1, 3)
        init_blocks_(self.gate_weight, 1, 2)
        init_blocks_(self.candidate_weight)
        self.sparse = False

    def forward(self, items: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        vx = F.embedding(items, self.input_weight, sparse=self.sparse) + self.bias
        x_h, x_r, x_z = vx.chunk(3, 1)
        h_r, h_z = (h @ self.gate_weight).chunk(2, 1)
        r = torch.sigmoid(x_r + h_r)
        z = torch.sigmoid(x_z + h_z)
        candidate = torch.tanh(x_h + (r * h) @ self.candidate_weight)
        return (1.0 - z) * h + z * candidate


class GRU4RecNet(nn.Module):
    """The GRU4Rec network; ``forward(items, hidden) -> (output, new_hidden)`` for one session-parallel step.

    Args:
        num_items: number of (training) items N.
        layers: GRU layer sizes, e.g. ``[100]``.
        embedding: ``"shared"``, ``"onehot"`` or the size of a separate input embedding.
        dropout_embed, dropout_hidden: dropout on the input embedding / on every layer's output.
    """

    #: the ``model.*`` settings of the network (:mod:`recsys.settings`)
    settings: ClassVar[Settings] = {
        "layers": POSITIVE_INTS,
        "embedding": Values(_embedding, "shared, onehot or the size of a separate input embedding (an integer > 0)"),
        "dropout_embed": DROP_RATE,
        "dropout_hidden": DROP_RATE,
    }

    def __init__(
        self,
        num_items: int,
        layers: Sequence[int] = (100,),
        embedding: str | int = "shared",
        dropout_embed: float = 0.0,
        dropout_hidden: float = 0.0,
    ) -> None:
        check_settings("model", {"layers": layers, "embedding": embedding, "dropout_embed": dropout_embed,
                                 "dropout_hidden": dropout_hidden}, type(self))
        super().__init__()
        layers = [int(x) for x in layers]
        if embedding not in EMBEDDING_MODES:
            embedding = int(embedding)
        self.num_items = num_items
        self.layer_sizes = layers
        self.embedding_mode = embedding
        self.output_weight = nn.Parameter(torch.empty(num_items, layers[-1]))  # Wy
        self.output_bias = nn.Parameter(torch.zeros(num_items, 1))  # by, (N, 1) for row-sparse gradients
        init_blocks_(self.output_weight)
        self.input_embedding: nn.Parameter | None = None
        self.onehot: OneHotGRULayer | None = None
        if embedding == "onehot":
            self.onehot = OneHotGRULayer(num_items, layers[0])
            in_sizes = layers[:-1]
        else:
            if embedding == "shared":
                in_size = layers[-1]
            else:
                in_size = int(embedding)
                self.input_embedding = nn.Parameter(torch.empty(num_items, in_size))
                init_blocks_(self.input_embedding)
            in_sizes = [in_size] + layers[:-1]
        out_sizes = layers[1:] if embedding == "onehot" else layers
        self.cells = nn.ModuleList(nn.GRUCell(i, o) for i, o in zip(in_sizes, out_sizes, strict=True))
        for cell in self.cells:
            init_blocks_(cell.weight_ih, 3, 1)
            init_blocks_(cell.weight_hh, 3, 1)
            nn.init.zeros_(cell.bias_ih)
            nn.init.zeros_(cell.bias_hh)
        self.dropout_embed = nn.Dropout(dropout_embed)
        self.dropout_hidden = nn.Dropout(dropout_hidden)
        self.sparse = False

    def set_sparse(self, sparse: bool) -> None:
        """Sparse gradients for the item tables (needs an optimiser that accepts them)."""
        self.sparse = sparse
        if self.onehot is not None:
            self.onehot.sparse = sparse

    def init_hidden(self, batch: int, device: torch.device | None = None) -> list[torch.Tensor]:
        return [torch.zeros(batch, h, device=device, dtype=self.output_weight.dtype) for h in self.layer_sizes]

    def forward(
        self, items: torch.Tensor, hidden: list[torch.Tensor], embedded: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One step: ``items`` ``(b,)``, ``hidden`` one ``(b, H_l)`` per layer → (last output, new hidden).
        ``embedded``: the input items' embedding rows when the caller has read them already."""
        new: list[torch.Tensor] = []
        if self.onehot is not None:  # the official code: E = GRUEmbedding(X, H0), dropout_p_embed on E, H0 = E
            x = self.dropout_embed(self.onehot(items, hidden[0]))
            new.append(x)
            rest = hidden[1:]
        else:
            if embedded is None:
                table = self.output_weight if self.input_embedding is None else self.input_embedding
                embedded = self.rows(table, items)
            x = self.dropout_embed(embedded)
            rest = hidden
        for cell, h in zip(self.cells, rest, strict=True):
            x = self.dropout_hidden(cell(x, h))
            new.append(x)
        return x, new

    def rows(self, table: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """``table[items]``: a row-sparse gradient with ``sparse`` (``F.embedding``), else ``index_select`` (whose
        backward, one ``index_add``, is several times faster on the CPU than the embedding's dense backward)."""
        return F.embedding(items, table, sparse=True) if self.sparse else table.index_select(0, items)

    def train_scores(
        self, items: torch.Tensor, hidden: list[torch.Tensor], candidates: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """A training step's forward: the GRU on ``items``, then the scores ``(b, K)`` of the step's ``candidates``
        (the distinct items of its targets and negatives, each scored once: ``output Wy[k]ᵀ + by[k]``) and the new
        hidden states. With the shared embedding the input rows and the candidates' rows are read from ``Wy`` in one
        lookup (one gradient scatter back). (On RSC15 with 2048 extra samples the 2,080 columns hold ~1,160
        distinct items of 2,933: scoring those beats scoring all items, measured in docs/benchmarks.md.)"""
        embedded = None
        if self.input_embedding is None and self.onehot is None:
            weight, embedded = self.rows(self.output_weight, torch.cat([candidates, items])).split(
                [candidates.numel(), items.numel()])
        else:
            weight = self.rows(self.output_weight, candidates)
        output, new_hidden = self(items, hidden, embedded)
        bias = self.rows(self.output_bias, candidates).squeeze(1)
        return torch.addmm(bias, output, weight.T), new_hidden

    def score_all(self, output: torch.Tensor) -> torch.Tensor:
        """Scores of all N items, ``(b, N)``."""
        return torch.addmm(self.output_bias.squeeze(1), output, self.output_weight.T)
