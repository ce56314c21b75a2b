"""SimGCL and XSimGCL: LightGCN trained with BPR plus a contrastive term between noise-perturbed views.

SimGCL (Yu et al., SIGIR'22, "Are Graph Augmentations Necessary? Simple Graph Contrastive Learning for
Recommendation"; the joint loss §2.1, the views §3): per step one clean pass of the encoder and two perturbed ones
(:class:`~recsys.models.components.simgcl.SimGCLEncoder`), and

``L = L_bpr + λ_reg · L_reg + λ · (InfoNCE(Z′_U, Z″_U) + InfoNCE(Z′_I, Z″_I))``

with ``L_bpr`` and ``L_reg`` on the clean pass exactly as LightGCN's
(:class:`~recsys.models.graph_module.GraphRecommender`), ``Z′, Z″`` the two views' final embeddings of the batch's
distinct users (``U``) and distinct positive items (``I``; the negatives are not contrasted), and
:func:`~recsys.losses.info_nce` with temperature τ.

XSimGCL (Yu et al., TKDE'23, "XSimGCL: Towards Extremely Simple Graph Contrastive Learning for Recommendation"):
one perturbed pass per step; ``L_bpr`` and ``L_reg`` on its final embeddings, and the contrast between the final
embeddings and the (perturbed) output ``E⁽ˡ*⁾`` of layer ``l*`` of the same pass (cross-layer contrast):
``λ · (InfoNCE(E_U, E⁽ˡ*⁾_U) + InfoNCE(E_I, E⁽ˡ*⁾_I))``.

Ranking, evaluation and export use the clean pass of both (no noise outside ``batch_loss``). Where the authors'
code (SELFRec) differs: its L2 term is ``reg · (‖E_u‖ + ‖E_i‖) / B`` over the *final* embeddings of the batch's
users and positives, with norms not squared (the original TensorFlow SimGCL: ``½‖·‖²`` of the final user, positive
and negative embeddings, not divided by B); here it is LightGCN's ``½ Σ ‖e⁽⁰⁾‖² / B`` on the ego embeddings of
users, positives and negatives. Its BPR is ``−log(σ(ŷ_ui − ŷ_uj) + 10⁻⁵)``; its epoch is one shuffled pass over
the training interactions (here the data module's epoch sampler); τ is fixed at 0.2 in its SimGCL.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from recsys.losses import info_nce
from recsys.models.graph_module import GraphRecommender
from recsys.settings import (
    NON_NEGATIVE_NUMBER,
    POSITIVE_INT,
    POSITIVE_NUMBER,
    Relation,
    Settings,
    check_settings,
)


class SimGCL(GraphRecommender):
    """SimGCL (module docstring). Args: :class:`~recsys.models.graph_module.GraphRecommender`'s, and

    Args:
        cl_weight: λ, the weight of the contrastive term.
        temperature: τ of InfoNCE.
    """

    loss_names = ("loss", "bpr", "cl")
    settings: ClassVar[Settings] = {**GraphRecommender.settings, "cl_weight": NON_NEGATIVE_NUMBER,
                                    "temperature": POSITIVE_NUMBER}

    def __init__(self, *args: Any, cl_weight: float = 0.5, temperature: float = 0.2, **kwargs: Any) -> None:
        check_settings("model", {"cl_weight": cl_weight, "temperature": temperature}, type(self))
        super().__init__(*args, **kwargs)
        self.cl_weight, self.temperature = cl_weight, temperature
        self.hparams.update(cl_weight=cl_weight, temperature=temperature)

    def batch_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(loss, bpr, cl)`` of one BPR batch; the views cover its distinct users and distinct positives."""
        nodes, local = self.batch_nodes(batch)
        users, items = local["users"].unique(), local["pos_items"].unique()
        emb, view1, view2 = self.views(nodes, torch.cat([users, items]))
        loss_bpr, penalty = self.ranking_terms(batch, local, emb, nodes)
        n = users.numel()
        cl = info_nce(view1[:n], view2[:n], self.temperature) + info_nce(view1[n:], view2[n:], self.temperature)
        return loss_bpr + self.reg_weight * penalty + self.cl_weight * cl, loss_bpr, cl

    def views(self, nodes: torch.Tensor | None, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(emb, view1, view2)``: the final embeddings of ``nodes`` (None: all) the ranking loss reads, and two
        views of the table rows ``rows``: here the clean pass, and two independently perturbed ones."""
        adj = self.adjacency()
        at = rows if nodes is None else nodes.index_select(0, rows)
        return (self.encoder(adj, nodes), self.encoder(adj, at, perturbed=True),
                self.encoder(adj, at, perturbed=True))


class XSimGCL(SimGCL):
    """XSimGCL (module docstring): :class:`SimGCL`'s arguments, and

    Args:
        cross_layer: l*, the layer (1..L) whose perturbed output is contrasted with the final embeddings.
    """

    settings: ClassVar[Settings] = {**SimGCL.settings, "cross_layer": POSITIVE_INT}
    relations: ClassVar[tuple[Relation, ...]] = (
        Relation("cross_layer", ("num_layers",), lambda v: v["cross_layer"] <= v["num_layers"],
                 "an integer in 1..{num_layers}"),
    )

    def __init__(self, *args: Any, cross_layer: int = 1, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        check_settings("model", {"cross_layer": cross_layer, "num_layers": self.encoder.num_layers}, type(self))
        self.cross_layer = cross_layer
        self.hparams.update(cross_layer=cross_layer)

    def views(self, nodes: torch.Tensor | None, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One perturbed pass: its final embeddings, and at ``rows`` the final ones and layer l*'s."""
        layers = list(self.encoder.propagate(self.adjacency(), nodes, self.encoder.perturb))
        emb = self.encoder.combine(layers)
        return emb, emb.index_select(0, rows), layers[self.cross_layer].index_select(0, rows)
