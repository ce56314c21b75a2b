"""GRU4Rec network (Hidasi et al., ICLR'16; Hidasi & Karatzoglou, CIKM'18) and its Adagrad optimiser.

Plain ``nn.Module`` (algorithms.md §3.2):

* input: ``embedding="shared"`` (default, "constrained embedding": the output item matrix ``Wy`` is also the
  input embedding, so its size is the last layer's), ``embedding=<k>`` (a separate ``N × k`` table) or
  ``embedding="onehot"`` (no embedding: the one-hot input's weights of the first GRU layer's three gates are
  looked up per item, as the official ``GRUEmbedding``; that layer applies the reset gate before its hidden
  matrix, Cho et al.'s form);
* GRU layers (tanh), dropout on the input embedding (``dropout_embed``) and on every layer's output
  (``dropout_hidden``) — the dropped-out output is also what is kept as the hidden state; with ``onehot`` the
  first layer's output is the embedding, so it gets ``dropout_embed`` (the official ``DE``), the others
  ``dropout_hidden``;
* scores ``h Wyᵀ + by`` (item bias ``by``), in training only for the given columns (targets + negatives).

Weights are uniform in ``±sqrt(6 / (fan_in + fan_out))`` per gate block, biases 0. With ``sparse=True`` the
item tables (``Wy``, ``by``, the embedding) get sparse gradients: only the rows a step touches are updated,
as the official optimiser does (:class:`recsys.optim.AdagradM` handles both kinds).

:meth:`GRU4RecNet.train_step` is a training step with its gradients written out (:func:`gru_cell_forward`,
:func:`gru_cell_backward`): the same numbers as autograd through :meth:`GRU4RecNet.forward` and
:meth:`GRU4RecNet.score_columns` (tested to float rounding), without building and walking a graph, which costs
as much as the math at GRU4Rec's sizes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from recsys.errors import ConfigError
from recsys.models.components.step_candidates import StepCandidates

EMBEDDING_MODES = ("shared", "onehot")
#: score all items (then pick the columns) when a step's columns are at least this fraction of the catalogue
FULL_SCORES_FRACTION = 0.5


def gru_cell_forward(cell: nn.GRUCell, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, tuple]:
    """``nn.GRUCell``'s step, keeping what :func:`gru_cell_backward` needs: with ``gi = x W_ihᵀ + b_ih`` and
    ``gh = h W_hhᵀ + b_hh`` split into (r, z, n) blocks, ``r = σ(gi_r + gh_r)``, ``z = σ(gi_z + gh_z)``,
    ``n = tanh(gi_n + r ⊙ gh_n)``, ``h' = (1 − z) ⊙ n + z ⊙ h = n + z ⊙ (h − n)``."""
    hidden = h.shape[1]
    gi = torch.mm(x, cell.weight_ih.T).add_(cell.bias_ih)  # (mm then add: a few µs less than addmm on the CPU)
    gh = torch.mm(h, cell.weight_hh.T).add_(cell.bias_hh)
    rz = gi[:, : 2 * hidden].add_(gh[:, : 2 * hidden]).sigmoid_()
    gh_n = gh[:, 2 * hidden :]
    n = torch.addcmul(gi[:, 2 * hidden :], rz[:, :hidden], gh_n).tanh_()
    diff = h - n
    return torch.addcmul(n, rz[:, hidden:], diff), (x, h, rz, gh_n, n, diff)


def gru_cell_backward(
    cell: nn.GRUCell, grad: torch.Tensor, saved: tuple
) -> tuple[torch.Tensor, dict[nn.Parameter, torch.Tensor]]:
    """Gradients of :func:`gru_cell_forward` given ``grad = ∂L/∂h'`` (``h`` is a detached state: no gradient):
    ``∂n = grad ⊙ (1 − z)``, ``∂z = grad ⊙ (h − n)``, ``∂a_n = ∂n ⊙ (1 − n²)`` (= ``∂gi_n``; ``∂gh_n = ∂a_n ⊙ r``),
    ``∂r = ∂a_n ⊙ gh_n``, ``∂gi_{r,z} = ∂gh_{r,z} = ∂{r,z} ⊙ s(1 − s)``; then ``∂W_ih = ∂giᵀ x``,
    ``∂W_hh = ∂ghᵀ h``, ``∂b = Σ_rows``, ``∂x = ∂gi W_ih`` → ``(∂x, {parameter: gradient})``."""
    x, h, rz, gh_n, n, diff = saved
    hidden = h.shape[1]
    d_gi = rz.new_empty(rz.shape[0], 3 * hidden)
    d_n = torch.addcmul(grad, grad, rz[:, hidden:], value=-1.0, out=d_gi[:, 2 * hidden :])  # g − g z
    d_n.addcmul_(d_n * n, n, value=-1.0)  # ∂n − ∂n n²
    torch.mul(d_n, gh_n, out=d_gi[:, :hidden])
    torch.mul(grad, diff, out=d_gi[:, hidden : 2 * hidden])
    d_gi[:, : 2 * hidden].mul_(torch.addcmul(rz, rz, rz, value=-1.0))  # s − s²
    d_gh = d_gi.clone()
    d_gh[:, 2 * hidden :].mul_(rz[:, :hidden])
    grads = {cell.weight_ih: torch.mm(d_gi.T, x), cell.weight_hh: torch.mm(d_gh.T, h),
             cell.bias_ih: d_gi.sum(0), cell.bias_hh: d_gh.sum(0)}
    return torch.mm(d_gi, cell.weight_ih), grads


def _dropout(x: torch.Tensor, dropout: nn.Dropout) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(dropout(x), mask)``, or ``(x, None)`` without dropout (``p`` 0 or the module in eval mode), by
    ``torch.native_dropout``, which draws as ``F.dropout`` does (one Bernoulli per element; tested against it)."""
    if dropout.p == 0 or not dropout.training:
        return x, None
    return torch.native_dropout(x, dropout.p, True)


def _dropout_backward(grad: torch.Tensor, mask: torch.Tensor | None, dropout: nn.Dropout) -> torch.Tensor:
    return grad if mask is None else torch.mul(grad, mask).mul_(1.0 / (1.0 - dropout.p))


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

    def __init__(
        self,
        num_items: int,
        layers: Sequence[int] = (100,),
        embedding: str | int = "shared",
        dropout_embed: float = 0.0,
        dropout_hidden: float = 0.0,
    ) -> None:
        super().__init__()
        layers = [int(x) for x in layers]
        if not layers or min(layers) < 1:
            raise ConfigError(f"model.layers must be a non-empty list of positive sizes, got {layers}")
        if isinstance(embedding, str) and embedding not in EMBEDDING_MODES:
            if not embedding.isdigit():
                raise ConfigError(f"model.embedding={embedding!r}; expected one of {EMBEDDING_MODES} or a size")
            embedding = int(embedding)
        if isinstance(embedding, bool) or (isinstance(embedding, int) and embedding < 1):
            raise ConfigError(f"model.embedding={embedding!r}; expected one of {EMBEDDING_MODES} or a size >= 1")
        for name, p in (("dropout_embed", dropout_embed), ("dropout_hidden", dropout_hidden)):
            if not 0.0 <= p < 1.0:
                raise ConfigError(f"model.{name} must be in [0, 1), got {p}")
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

    def forward(self, items: torch.Tensor, hidden: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One step: ``items`` ``(b,)``, ``hidden`` one ``(b, H_l)`` per layer → (last output, new hidden)."""
        new: list[torch.Tensor] = []
        if self.onehot is not None:  # the official code: E = GRUEmbedding(X, H0), dropout_p_embed on E, H0 = E
            x = self.dropout_embed(self.onehot(items, hidden[0]))
            new.append(x)
            rest = hidden[1:]
        else:
            table = self.output_weight if self.input_embedding is None else self.input_embedding
            x = self.dropout_embed(F.embedding(items, table, sparse=self.sparse))
            rest = hidden
        for cell, h in zip(self.cells, rest, strict=True):
            x = self.dropout_hidden(cell(x, h))
            new.append(x)
        return x, new

    def score_columns(self, output: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
        """``output Wy[columns]ᵀ + by[columns]`` → ``(b, len(columns))``.

        With dense gradients and at least ``FULL_SCORES_FRACTION · N`` columns (GRU4Rec's 2048 extra samples on a
        catalogue of a few thousand items) the scores of all items are computed and the columns picked from them:
        the same numbers, but one dense product forward and backward instead of gathering (and scattering the
        gradient of) a ``len(columns) × H`` slice of ``Wy``."""
        if not self.sparse and columns.numel() >= FULL_SCORES_FRACTION * self.num_items:
            return self.score_all(output).index_select(1, columns)
        weight = F.embedding(columns, self.output_weight, sparse=self.sparse)
        bias = F.embedding(columns, self.output_bias, sparse=self.sparse).squeeze(1)
        return output @ weight.T + bias

    def score_all(self, output: torch.Tensor) -> torch.Tensor:
        """Scores of all N items, ``(b, N)``."""
        return torch.addmm(self.output_bias.squeeze(1), output, self.output_weight.T)

    def train_step(
        self,
        items: torch.Tensor,
        hidden: list[torch.Tensor],
        candidates: StepCandidates,
        score_gradient: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    ) -> tuple[torch.Tensor, list[torch.Tensor], dict[nn.Parameter, torch.Tensor]]:
        """:meth:`forward` then :meth:`score_columns` in training mode, with the gradients written out.

        The step reads only the item rows it needs, its ``candidates``
        (:mod:`~recsys.models.components.step_candidates`: the distinct items of the columns, and of ``items``
        with the shared embedding, in item order). ``score_gradient(scores (b, K))`` gets the candidates' scores
        and returns (loss, ∂loss/∂scores) (it may overwrite ``scores``). Returns (loss, new hidden states,
        ``{parameter: gradient}`` for every parameter); item-table gradients are row-sparse (coalesced) with
        ``sparse``, else dense. The dropout masks use the draws of :meth:`forward`, in its order. Not for the
        one-hot input layer.

        Runs in inference mode (no autograd bookkeeping on its ~100 tensors: ~7 % of the step less than under
        ``no_grad``), except with row-sparse gradients, whose values must be ordinary tensors (an inference
        tensor's ``values()`` cannot be taken outside inference mode, as the optimiser does)."""
        if self.onehot is not None:
            raise ValueError("train_step: not for embedding='onehot'")
        with torch.no_grad() if self.sparse else torch.inference_mode():
            shared = self.input_embedding is None
            rows = candidates.rows
            weight = self.output_weight.index_select(0, rows)
            bias = self.output_bias.squeeze(1).index_select(0, rows)
            table, lookup = (weight, candidates.items) if shared else (self.input_embedding, items)
            x = table.index_select(0, lookup)
            x, embed_mask = _dropout(x, self.dropout_embed)
            saved, new = [], []
            for cell, h in zip(self.cells, hidden, strict=True):
                x, cell_saved = gru_cell_forward(cell, x, h)
                x, mask = _dropout(x, self.dropout_hidden)
                saved.append((cell_saved, mask))
                new.append(x)
            loss, grad = score_gradient(torch.mm(x, weight.T).add_(bias))
            g_x = torch.mm(grad, weight)
            g_weight, g_bias = torch.mm(grad.T, x), grad.sum(0)
            grads: dict[nn.Parameter, torch.Tensor] = {}
            for cell, (cell_saved, mask) in zip(reversed(self.cells), reversed(saved), strict=True):
                g_x = _dropout_backward(g_x, mask, self.dropout_hidden)
                g_x, cell_grads = gru_cell_backward(cell, g_x, cell_saved)
                grads.update(cell_grads)
            g_x = _dropout_backward(g_x, embed_mask, self.dropout_embed)
            if shared:  # index_put_ with accumulate: for a few rows ~4× faster than index_add_ on the CPU
                g_weight.index_put_((candidates.items,), g_x, accumulate=True)
            grads.update(self._item_table_gradients(candidates, g_weight, g_bias, items, g_x))
            return loss, new, grads

    def _item_table_gradients(
        self, candidates: StepCandidates, g_weight: torch.Tensor, g_bias: torch.Tensor, items: torch.Tensor,
        g_input: torch.Tensor,
    ) -> dict[nn.Parameter, torch.Tensor]:
        """``Wy``'s and ``by``'s gradients from the candidates' rows (and the separate embedding's from the input
        rows' gradient): row-sparse with ``sparse`` (the rows a step touches, as the official optimiser: ``Wy``'s
        candidates, ``by``'s columns, the embedding's inputs), else dense."""
        weight, bias, embedding = self.output_weight, self.output_bias, self.input_embedding
        grads: dict[nn.Parameter, torch.Tensor] = {}
        rows = candidates.rows
        if self.sparse:
            is_column = torch.zeros(rows.numel(), dtype=torch.bool, device=rows.device)
            bias_rows = is_column.index_fill_(0, candidates.columns, True).nonzero().squeeze(1)
            grads[weight] = _row_sparse(rows, g_weight, weight.shape, coalesced=True)
            grads[bias] = _row_sparse(rows.index_select(0, bias_rows), g_bias.index_select(0, bias_rows)[:, None],
                                      bias.shape, coalesced=True)
            if embedding is not None:
                grads[embedding] = _row_sparse(items, g_input, embedding.shape, coalesced=False)
            return grads
        # (index_put_ writes the rows ~25 % faster than index_copy_ on the CPU)
        grads[weight] = torch.zeros_like(weight).index_put_((rows,), g_weight)
        grads[bias] = torch.zeros_like(bias).index_put_((rows,), g_bias[:, None])
        if embedding is not None:
            grads[embedding] = torch.zeros_like(embedding).index_put_((items,), g_input, accumulate=True)
        return grads


def _row_sparse(rows: torch.Tensor, values: torch.Tensor, shape: torch.Size, coalesced: bool) -> torch.Tensor:
    """A sparse COO gradient with ``values[k]`` at row ``rows[k]`` (``coalesced``: distinct rows, in order)."""
    return torch.sparse_coo_tensor(rows[None], values, shape, is_coalesced=coalesced, check_invariants=False)
