"""SASRec's LightningModule (Kang & McAuley, ICDM'18) with the loss variants of Klenitskiy & Vasilev (RecSys'23,
full cross-entropy) and Petrov & Macdonald (RecSys'23, gSASRec's gBCE)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import ClassVar

import torch

from recsys.errors import ConfigError
from recsys.info import SessionInfo
from recsys.losses import SASREC_LOSSES, binary_sampled_loss, gbce_beta, sampled_softmax_loss, softmax_loss
from recsys.models.chunked import ChunkedTraining
from recsys.models.components.sasrec import PAD, SASRecNet, trim_left_padding
from recsys.models.session_recommender import SESSION_METRICS, LaneState, SessionRecommender
from recsys.settings import NON_NEGATIVE_NUMBER, UNIT_INTERVAL, Relation, Settings, check_settings, one_of


class SASRec(ChunkedTraining, SessionRecommender):
    """SASRec trained on sequence batches (:mod:`recsys.data.sequence_batches`), evaluated on the next-item protocol.

    Training step (plain autograd; chunks of steps, :class:`~recsys.models.chunked.ChunkedTraining`): the network
    on the batch's left-padded inputs ``(B, w)`` → the outputs ``F_t`` at the positions that hold a target → the
    mean over those positions of ``loss``:

    * ``ce`` (default): full softmax over all N items, ``−log softmax(F_t Eᵀ)_{s_{t+1}}`` (Klenitskiy & Vasilev);
    * ``bce``: binary cross-entropy with the batch's ``k = sampler.num_negatives`` (1, the paper) negatives per
      position (Kang & McAuley §III-E);
    * ``sampled-ce``: softmax over the target and its ``k`` negatives, logQ-corrected (``logq``·log(k·q)) for the
      sampler's proposal, accidental hits masked;
    * ``gbce``: gSASRec's gBCE with calibration ``gbce_t`` (``β`` from ``k`` and N; ``t = 0`` is ``bce``).

    Evaluation and recommendation: every lane of a session-parallel pass keeps the last ``max_len`` items of its
    session (a window shifted by one item per step, emptied when a session starts); the scores of a step are
    ``F Eᵀ`` at the window's last position (:meth:`next_scores`; ``recommend.py`` runs it once on each prefix's
    window, :meth:`prefix_scores`).

    Args:
        info: item count and the sequence-batch settings (from the DataModule).
        optimizer: factory ``optimizer(params=)`` (Adam, β₂ = 0.98 as the official code, in ``configs/model/sasrec.yaml``).
        loss: ``ce``, ``bce``, ``sampled-ce`` or ``gbce``.
        embedding_dim, num_blocks, num_heads, max_len, dropout, norm_first: the network (:class:`SASRecNet`).
        gbce_t: gBCE's calibration parameter t in [0, 1].
        logq: weight of the logQ correction of ``sampled-ce`` (0: none).
        tie_mode, topk, metrics: evaluation (:mod:`recsys.models.session_recommender`).
    """

    train_batches = "sequences"
    loss_names = ("loss",)
    settings: ClassVar[Settings] = {**SessionRecommender.settings, **SASRecNet.settings, "loss": one_of(*SASREC_LOSSES),
                                    "gbce_t": UNIT_INTERVAL, "logq": NON_NEGATIVE_NUMBER}
    relations: ClassVar[tuple[Relation, ...]] = SASRecNet.relations

    def __init__(self, info: SessionInfo, optimizer: Callable[..., torch.optim.Optimizer], loss: str = "ce",
                 embedding_dim: int = 50, num_blocks: int = 2, num_heads: int = 1, max_len: int = 50,
                 dropout: float = 0.2, norm_first: bool = True, gbce_t: float = 0.75, logq: float = 1.0,
                 tie_mode: str = "standard", topk: Sequence[int] = (5, 10, 20),
                 metrics: Sequence[str] = SESSION_METRICS) -> None:
        super().__init__(info.num_items, topk, metrics, tie_mode)
        check_settings("model", {"loss": loss, "gbce_t": gbce_t, "logq": logq}, type(self))
        if info.max_len is not None and info.max_len != max_len:
            raise ConfigError(f"data.max_len={info.max_len} differs from model.max_len={max_len}; drop the data.max_len "
                              "override (model=sasrec sets data.max_len=${model.max_len})")
        self.save_hyperparameters(
            {"num_items": info.num_items, "loss": loss, "embedding_dim": embedding_dim, "num_blocks": num_blocks,
             "num_heads": num_heads, "max_len": max_len, "dropout": dropout, "norm_first": norm_first,
             "gbce_t": gbce_t, "logq": logq, "tie_mode": tie_mode},
            logger=False,
        )
        self.net = SASRecNet(info.num_items, embedding_dim, num_blocks, num_heads, max_len, dropout, norm_first)
        self.optimizer_factory = optimizer
        self.loss_name = loss
        self.gbce_t, self.logq = float(gbce_t), float(logq)
        self._eval_state = LaneState(self._empty_windows)

    def _empty_windows(self, lanes: int) -> list[torch.Tensor]:
        return [torch.zeros(lanes, self.net.max_len, dtype=torch.long, device=self.device)]

    # -- training ------------------------------------------------------------------------------
    def step_weight(self, step: dict[str, torch.Tensor]) -> float:
        return float(step["mask"].sum())  # the logged mean runs over target positions (DDP padding steps: none)

    def batch_loss(self, step: dict[str, torch.Tensor]) -> tuple[torch.Tensor]:
        """Mean loss over the target positions of one batch of sequences (a zero that touches every parameter
        for an empty DDP padding step)."""
        mask = step["mask"]
        if mask.numel() == 0:
            return (sum(p.sum() for p in self.parameters()) * 0.0,)
        outputs = self.net(step["inputs"])[mask]
        return (self.position_losses(outputs, step["targets"][mask], step).mean(),)

    def position_losses(self, outputs: torch.Tensor, targets: torch.Tensor,
                        step: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-position losses ``(M,)`` given the outputs ``(M, d)`` at the target positions, their targets and the
        step's ``negatives``/``neg_log_q`` ``(M, k)``."""
        if self.loss_name == "ce":
            return softmax_loss(self.net.score_all(outputs), targets)
        negatives = step["negatives"]
        k = negatives.shape[1]
        scores = self.net.score_items(outputs, torch.cat([targets[:, None], negatives], 1))  # one table lookup
        pos, neg = scores[:, 0], scores[:, 1:]
        if self.loss_name == "sampled-ce":
            log_kq = None if self.logq == 0 else self.logq * (step["neg_log_q"] + math.log(k))
            return sampled_softmax_loss(pos, neg, log_kq, negatives != targets[:, None])
        beta = 1.0 if self.loss_name == "bce" else gbce_beta(k, self.num_items, self.gbce_t)
        return binary_sampled_loss(pos, neg, beta)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(params=self.parameters())

    # -- evaluation and recommendation ---------------------------------------------------------
    def reset_eval_state(self) -> None:
        self._eval_state.clear()

    def eval_scores(self, step: dict[str, torch.Tensor]) -> torch.Tensor:
        """The lanes' windows (item id + 1; 0 = empty, the value a reset writes) shifted by the step's input items,
        then :meth:`next_scores`."""
        (window,) = self._eval_state.gather(step["lanes"], step["reset"])
        window = torch.cat([window[:, 1:], step["inputs"][:, None] + 1], 1)
        self._eval_state.scatter(step["lanes"], [window])
        return self.next_scores(window - 1)

    def next_scores(self, seq: torch.Tensor) -> torch.Tensor:
        """Scores ``(B, N)`` of every item as the next one after each left-padded sequence ``seq`` ``(B, w)``
        (``PAD`` = −1, ``w ≤ max_len``): ``F Eᵀ`` at the last position."""
        return self.net.score_all(self.net(trim_left_padding(seq))[:, -1])

    def prefix_scores(self, prefixes: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Float32 scores ``(S, N)`` of the next item after each prefix (``prefixes`` ``(S, L)`` internal ids, padded
        beyond ``lengths``): :meth:`next_scores` of each prefix's last ``max_len`` items, left-padded, the window
        evaluation builds step by step; one pass of the network for all prefixes."""
        prefixes, lengths = prefixes.to(self.device), lengths.to(self.device)
        index = lengths[:, None] - self.net.max_len + torch.arange(self.net.max_len, device=self.device)[None, :]
        window = prefixes.gather(1, index.clamp(min=0)).masked_fill(index < 0, PAD)
        return self.next_scores(window).float()

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """:meth:`next_scores`."""
        return self.next_scores(seq)

    def export_rows(self) -> tuple[torch.Tensor | None, torch.Tensor, str]:
        return None, self.net.item_table, "F, the last position's output after the session's last max_len items"
