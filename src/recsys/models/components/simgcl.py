"""The LightGCN encoder of SimGCL and XSimGCL (Yu et al., SIGIR'22, "Are Graph Augmentations Necessary? Simple
Graph Contrastive Learning for Recommendation"; Yu et al., TKDE'23, "XSimGCL: Towards Extremely Simple Graph
Contrastive Learning for Recommendation"), with noise added to every layer in a perturbed pass.

Propagation is LightGCN's, ``E⁽ᵏ⁾ = Â E⁽ᵏ⁻¹⁾`` with ``Â = D^{-1/2} A D^{-1/2}``. In a perturbed pass every
propagated layer gets uniform noise of norm ε in the orthant of the embedding (SimGCL §3):

``E⁽ᵏ⁾ ← E⁽ᵏ⁾ + ε · sign(E⁽ᵏ⁾) ⊙ Δ/‖Δ‖₂`` (row-wise), ``Δ ~ U(0, 1)`` element-wise,

drawn afresh for every layer and every pass, and the next layer propagates the perturbed ``E⁽ᵏ⁾``. The final
embedding is the mean of layers ``1..L``, ``E = (1/L) Σ_{k=1..L} E⁽ᵏ⁾``: the paper leaves the ego layer ``E⁽⁰⁾`` out
of the clean pass and of the views alike (SimGCL §3), and so does the authors' code (SELFRec); LightGCN's mean
includes it. A zero entry of ``E⁽ᵏ⁾`` (e.g. an isolated node's row) gets no noise.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F

from recsys.models.components.adjacency import SparseAdjacency
from recsys.models.components.lightgcn import LightGCNEncoder
from recsys.settings import NON_NEGATIVE_NUMBER, POSITIVE_INT, Settings, Values, check_settings


class SimGCLEncoder(LightGCNEncoder):
    """LightGCN without ``E⁽⁰⁾`` in the final mean, and with ``forward(adj, rows, perturbed=True)`` the noisy pass.

    Args (besides :class:`~recsys.models.components.lightgcn.LightGCNEncoder`'s, less ``layer_weights``):
        eps: ε, the norm of every node's noise in every layer of a perturbed pass.
    """

    settings: ClassVar[Settings] = {
        **{k: v for k, v in LightGCNEncoder.settings.items() if k != "layer_weights"},
        "num_layers": Values(POSITIVE_INT.test, "an integer > 0 (the final embedding is the mean of layers 1..L)"),
        "eps": NON_NEGATIVE_NUMBER,
    }

    def __init__(self, num_users: int, num_items: int, embedding_dim: int = 64, num_layers: int = 3,
                 eps: float = 0.1, init: str = "xavier", init_std: float = 0.1, edge_dropout: float = 0.0) -> None:
        check_settings("model", {"eps": eps}, type(self))
        super().__init__(num_users, num_items, embedding_dim, num_layers, "mean", init, init_std, edge_dropout)
        self.eps = eps

    def layer_weights(self) -> torch.Tensor:
        """α = (0, 1/L, …, 1/L): the final embedding is the mean of layers 1..L, the ego layer left out."""
        alpha = torch.full((self.num_layers + 1,), 1.0 / self.num_layers, device=self.embedding.weight.device)
        alpha[0] = 0.0
        return alpha

    def perturb(self, x: torch.Tensor) -> torch.Tensor:
        """``x + ε · sign(x) ⊙ normalize(Δ)``, ``Δ ~ U(0, 1)`` of ``x``'s shape (one global-RNG draw)."""
        return x + self.eps * torch.sign(x) * F.normalize(torch.rand_like(x), dim=-1)

    def forward(self, adj: SparseAdjacency, rows: torch.Tensor | None = None, perturbed: bool = False) -> torch.Tensor:
        """The final embeddings of all nodes or of ``rows``: clean, or with noise in every layer (``perturbed``)."""
        return self.combine(self.propagate(adj, rows, self.perturb if perturbed else None))
