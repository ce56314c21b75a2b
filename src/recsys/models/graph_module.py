"""LightningModule for graph encoders (MF, LightGCN, NGCF): BPR training + full-ranking evaluation."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from recsys.info import DatasetInfo
from recsys.losses import bpr_loss, embedding_l2
from recsys.metrics import METRIC_NAMES
from recsys.models.chunked import ChunkedTraining
from recsys.models.components.adjacency import SparseAdjacency, normalized_adjacency
from recsys.models.ranking_module import TopKRecommender
from recsys.settings import NON_NEGATIVE_NUMBER, Settings, check_settings


class GraphRecommender(ChunkedTraining, TopKRecommender):
    """Trains ``encoder`` with BPR: ``L = mean softplus(ŷ_uj − ŷ_ui) + λ · reg``.

    The mean runs over the batch's valid (user, pos, neg) pairs; the negatives are whatever the
    ``sampler`` group put in the batch (per-row, hard candidates → arg-max, or shared in-batch negatives
    with a mask; :func:`batch_negative_scores`).
    ``reg`` is :func:`~recsys.losses.embedding_l2` on the ego embeddings of the batch rows (LightGCN, MF)
    or on the final embeddings (NGCF), as the encoder declares (``regularize_ego``); a row's negative term is
    the mean ``‖e_j‖²`` over its valid negatives.

    A step computes the final embeddings of the nodes the batch reads only (its users, positives and
    negatives: the encoder's last layer runs on those rows, :meth:`batch_loss`), the same numbers as the
    official code's whole-graph pass; evaluation propagates once per epoch. Scores are inner products
    ``ŷ_ui = e_uᵀ e_i``. Training runs in chunks of BPR steps (:class:`~recsys.models.chunked.ChunkedTraining`).

    Args:
        info: sizes and train graph from the DataModule.
        encoder: factory ``encoder(num_users=, num_items=, **encoder_kwargs) -> nn.Module`` with
            ``adjacency_norm``, ``regularize_ego``, ``ego(rows)`` and ``forward(adj, rows) -> node embeddings``.
        optimizer: factory ``optimizer(params=) -> torch.optim.Optimizer``.
        reg_weight: λ.
        encoder_kwargs: every other model config key (``embedding_dim``, ``num_layers``, …) goes to
            the encoder, so sweeps override ``model.<key>`` directly.
    """

    settings: ClassVar[Settings] = {**TopKRecommender.settings, "reg_weight": NON_NEGATIVE_NUMBER}
    #: the encoder's settings are keys of this node too (``encoder_kwargs``): :mod:`recsys.validation` checks the
    #: ``model`` node against the class of ``model.encoder._target_`` as well
    settings_from: ClassVar[tuple[str, ...]] = ("encoder",)

    #: propagate the whole graph when a step reads more than this fraction of the nodes (e.g. ``sampler=hard``)
    full_pass_fraction: float = 0.5

    def __init__(
        self,
        info: DatasetInfo,
        encoder: Callable[..., nn.Module],
        optimizer: Callable[..., torch.optim.Optimizer],
        reg_weight: float = 1e-4,
        topk: Sequence[int] = (10, 20, 50),
        metrics: Sequence[str] = METRIC_NAMES,
        **encoder_kwargs: Any,
    ) -> None:
        check_settings("model", {"reg_weight": reg_weight}, type(self))
        super().__init__(topk, metrics)
        self.save_hyperparameters(
            {"num_users": info.num_users, "num_items": info.num_items, "reg_weight": reg_weight, **encoder_kwargs},
            logger=False,
        )
        self.num_users = info.num_users
        self.encoder = encoder(num_users=info.num_users, num_items=info.num_items, **encoder_kwargs)
        self.optimizer_factory = optimizer
        self.reg_weight = reg_weight
        users, items = info.train.pairs()
        self._adjacency: SparseAdjacency = normalized_adjacency(
            users, items, info.num_users, info.num_items, self.encoder.adjacency_norm)
        self._eval_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None

    def adjacency(self) -> SparseAdjacency:
        """The normalised train graph on the module's device (moved lazily, not a state_dict entry)."""
        self._adjacency = self._adjacency.to(self.device)
        return self._adjacency

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Final user and item embeddings (views of one node table)."""
        nodes = self.encoder(self.adjacency())
        return nodes[: self.num_users], nodes[self.num_users :]

    # -- training --------------------------------------------------------------------------------
    def batch_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss, bpr)`` of one BPR batch: the final embeddings of the batch's nodes (:meth:`batch_nodes`),
        then :meth:`ranking_terms`."""
        nodes, local = self.batch_nodes(batch)
        loss_bpr, penalty = self.ranking_terms(batch, local, self.encoder(self.adjacency(), nodes), nodes)
        return loss_bpr + self.reg_weight * penalty, loss_bpr

    def batch_nodes(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """``(nodes, local)``: the sorted node ids a BPR batch reads (users, then items offset by ``M``) and the
        batch's ``users``, ``pos_items`` and negatives as rows of those nodes' table. The final embeddings are
        computed at those rows only (every other node's embedding is unused by the loss), unless the batch's node
        ids number more than :attr:`full_pass_fraction` of the graph: then ``nodes`` is None (all nodes are
        propagated) and ``local`` holds the node ids themselves. Per-row, candidate and shared negatives index
        that one table."""
        m = self.num_users
        keys = [k for k in ("neg_items", "neg_candidates", "neg_shared") if k in batch]
        if not keys:
            raise KeyError("a BPR batch needs neg_items, neg_candidates or neg_shared (see recsys.sampling)")
        parts = {"users": batch["users"], "pos_items": batch["pos_items"] + m, **{k: batch[k] + m for k in keys}}
        if sum(p.numel() for p in parts.values()) > self.full_pass_fraction * (m + self.hparams.num_items):
            return None, parts  # node ids index the whole table
        nodes, index = torch.unique(torch.cat([p.reshape(-1) for p in parts.values()]), return_inverse=True)
        pieces = index.split([p.numel() for p in parts.values()])
        return nodes, {k: v.view(parts[k].shape) for k, v in zip(parts, pieces, strict=True)}

    def ranking_terms(self, batch: dict[str, torch.Tensor], local: dict[str, torch.Tensor], emb: torch.Tensor,
                      nodes: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(bpr, reg)`` of a batch given the final embeddings ``emb`` of ``nodes`` (None: all) and the batch's
        rows ``local`` in that table (:meth:`batch_nodes`)."""
        reg = self.encoder.ego(nodes) if self.encoder.regularize_ego else emb
        local = dict(local)
        if "neg_candidates" in local:  # hard negatives: the best-scoring candidate, chosen without gradient
            local["neg_items"] = select_hard_negatives(rows_of(emb, local["users"]), emb, local.pop("neg_candidates"))
        rows = gather_rows(emb, local)  # every row the loss reads, in one gather (one scatter backward)
        u = rows["users"]
        pos_scores = (u * rows["pos_items"]).sum(-1)
        shared_mask = batch.get("neg_shared_mask")
        neg_scores, neg_mask = batch_negative_scores(u, rows.get("neg_items"), rows.get("neg_shared"), shared_mask)
        weights = l2_row_weights(reg.shape[0], local, shared_mask, torch.promote_types(reg.dtype, torch.float32))
        return bpr_loss(pos_scores, neg_scores, neg_mask), embedding_l2(reg, weights, u.shape[0])

    # -- evaluation ------------------------------------------------------------------------------
    def prepare_scoring(self) -> None:
        with torch.no_grad(), self.float32_scoring():  # float32 scores also for half-precision weights
            self._eval_embeddings = tuple(e.detach().float() for e in self())

    def finish_scoring(self) -> None:
        self._eval_embeddings = None

    def score_users(self, users: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        assert self._eval_embeddings is not None, "prepare_scoring() runs before evaluation"
        user_emb, item_emb = self._eval_embeddings
        return torch.matmul(user_emb.index_select(0, users), item_emb.T, out=out)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(params=self.parameters())

    def export_rows(self) -> tuple[torch.Tensor, torch.Tensor, str]:
        users, items = self()
        return users, items, "users[u]"


def batch_negative_scores(
    u: torch.Tensor,
    per_row: torch.Tensor | None = None,
    shared: torch.Tensor | None = None,
    shared_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scores ``(B, N)`` and mask ``(B, N)`` (None = all valid) of a batch's negatives.

    ``u`` ``(B, d)``: the batch users' final embeddings; ``per_row`` ``(B, n, d)``: the final embeddings of each
    row's own negatives (``neg_items``, or the chosen ``neg_candidates``); ``shared`` ``(S, d)`` with
    ``shared_mask`` ``(B, S)``: negatives shared by the batch (in-batch, extra samples), scored as one
    ``(B, d) @ (d, S)`` product.
    """
    if per_row is None and shared is None:
        raise KeyError("a BPR batch needs neg_items, neg_candidates or neg_shared (see recsys.sampling)")
    scores = []
    if per_row is not None:
        scores.append((u.unsqueeze(1) * per_row).sum(-1))  # several times faster than einsum's batched GEMV
    mask = None
    if shared is not None:
        scores.append(u @ shared.T)
        mask = shared_mask
        if per_row is not None:
            mask = torch.cat([torch.ones(per_row.shape[:2], dtype=torch.bool, device=u.device), shared_mask], 1)
    neg_scores = scores[0] if len(scores) == 1 else torch.cat(scores, 1)
    return neg_scores, mask


def l2_row_weights(num_rows: int, local: dict[str, torch.Tensor], shared_mask: torch.Tensor | None = None,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The weights ``(num_rows,)`` of :func:`~recsys.losses.embedding_l2` for a batch ``local`` of row indices
    (``users``, ``pos_items`` and ``neg_items`` ``(B, n)`` and/or ``neg_shared`` ``(S,)`` with ``shared_mask``
    ``(B, S)``): 1 per use as a user or positive, ``1/c_b`` per valid negative of batch row ``b`` (``c_b`` its
    valid negatives), summed over a row's uses; in ``dtype`` (float32, float64 for a float64 table)."""
    users, pos = local["users"], local["pos_items"]
    per_row, shared = local.get("neg_items"), local.get("neg_shared")
    ones = torch.ones(users.numel(), dtype=dtype, device=users.device)
    count = torch.full_like(ones, 0 if per_row is None else per_row.shape[1])
    valid = None
    if shared is not None:
        valid = shared_mask.to(ones.dtype)
        count = count + valid.sum(1)
    inv = 1.0 / count.clamp(min=1)
    index, weight = [users, pos], [ones, ones]
    if per_row is not None:
        index.append(per_row.reshape(-1))
        weight.append(inv[:, None].expand(per_row.shape).reshape(-1))
    if valid is not None:
        index.append(shared)
        weight.append(valid.T @ inv)
    return torch.zeros(num_rows, dtype=ones.dtype, device=users.device).index_add_(0, torch.cat(index), torch.cat(weight))


@torch.no_grad()
def select_hard_negatives(u: torch.Tensor, emb: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """The highest-scoring candidate of every ``(b, n)``: ``argmax_m u_bᵀ e_{c_bnm}`` → ``(B, n)`` (indices into
    ``emb``, as ``candidates``; ``u`` ``(B, d)``). No gradient flows through the selection; ties go to the first
    candidate."""
    scores = torch.einsum("bd,bnmd->bnm", u, rows_of(emb, candidates))
    best = scores.argmax(-1, keepdim=True)
    return candidates.gather(-1, best).squeeze(-1)


def gather_rows(table: torch.Tensor, index: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``{k: table[index[k]]}`` through one ``index_select`` of all the indices (so one ``index_add`` backward)."""
    flat = torch.cat([i.reshape(-1) for i in index.values()])
    pieces = table.index_select(0, flat).split([i.numel() for i in index.values()])
    return {k: p.view(*i.shape, table.shape[-1]) for (k, i), p in zip(index.items(), pieces, strict=True)}


def rows_of(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[index]`` for an index tensor of any shape, through ``index_select`` (whose backward, an
    ``index_add``, is several times faster on the CPU than that of advanced indexing)."""
    return table.index_select(0, index.reshape(-1)).view(*index.shape, table.shape[-1])
