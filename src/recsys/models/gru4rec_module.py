"""GRU4Rec's LightningModule: session-parallel training with 1-step BPTT (Hidasi et al., ICLR'16; Hidasi &
Karatzoglou, CIKM'18)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import ClassVar

import torch
from pytorch_lightning.strategies import SingleDeviceStrategy

from recsys.errors import ConfigError
from recsys.info import SessionInfo
from recsys.losses import (
    SESSION_LOSSES,
    bpr_max_loss,
    session_bpr_loss,
    top1_loss,
    top1_max_loss,
    weighted_bpr_max_loss,
    weighted_xe_loss,
)
from recsys.models.chunked import ChunkedTraining
from recsys.models.components.gru4rec import GRU4RecNet
from recsys.models.session_recommender import SESSION_METRICS, LaneState, SessionRecommender, session_steps
from recsys.optim import AdagradM
from recsys.settings import NON_NEGATIVE_NUMBER, Settings, Values, check_settings, one_of


class GRU4Rec(ChunkedTraining, SessionRecommender):
    """GRU4Rec trained on session-parallel mini-batches with 1-step BPTT (Hidasi et al., ICLR'16; Hidasi & Karatzoglou, CIKM'18).

    Per session-parallel step (one optimiser step, as the official code; the loader hands them over in chunks,
    :class:`~recsys.models.chunked.ChunkedTraining`): gather the lanes' hidden states, zero those of lanes
    where a new session starts, run the GRU on the input items, keep the new hidden states (detached: no
    backpropagation through time), score the step's targets (in-batch negatives: the other lanes' targets,
    duplicates not masked) plus the step's ``n_sample`` extra negatives shared by the mini-batch (drawn by the
    loader ∝ ``supp^alpha``, ``sampler=gru4rec``, with their log-probabilities for the logQ correction);
    loss = sum over lanes / the configured ``data.batch_size``.

    Args:
        info: item count, support, batch size and the extra-negative settings (from the DataModule).
        optimizer: factory ``optimizer(params=)``; the official :class:`~recsys.optim.AdagradM` by default.
        loss: ``cross-entropy`` (+ ``logq`` correction), ``bpr-max`` (+ ``bpreg``, ``elu_param``), ``top1``,
            ``bpr`` or ``top1-max`` (:mod:`recsys.losses`).
        layers, embedding, dropout_embed, dropout_hidden: the network (:class:`GRU4RecNet`).
        sparse_gradients: ``auto`` (row-sparse item-table gradients when the optimiser supports them, the model
            is not wrapped in DDP, gradients are not clipped and either momentum is on — the official semantics:
            rows without a gradient do not move — or the catalogue is large; without momentum dense Adagrad gives
            the same result), ``true`` (a ``ConfigError`` under DDP or with clipping) or ``false``.
        tie_mode, topk, metrics: evaluation (:mod:`recsys.models.session_recommender`).
    """

    loss_names = ("loss",)
    train_batches = "session_parallel"
    settings: ClassVar[Settings] = {
        **SessionRecommender.settings,
        **GRU4RecNet.settings,
        "loss": one_of(*SESSION_LOSSES),
        "logq": NON_NEGATIVE_NUMBER,
        "bpreg": NON_NEGATIVE_NUMBER,
        "elu_param": NON_NEGATIVE_NUMBER,
        "sparse_gradients": Values(lambda v: str(v).lower() in ("auto", "true", "false"), "auto, true or false"),
    }

    def __init__(
        self,
        info: SessionInfo,
        optimizer: Callable[..., torch.optim.Optimizer],
        loss: str = "cross-entropy",
        layers: Sequence[int] = (100,),
        embedding: str | int = "shared",
        dropout_embed: float = 0.0,
        dropout_hidden: float = 0.0,
        logq: float = 0.0,
        bpreg: float = 1.0,
        elu_param: float = 0.5,
        sparse_gradients: str | bool = "auto",
        tie_mode: str = "standard",
        topk: Sequence[int] = (5, 10, 20),
        metrics: Sequence[str] = SESSION_METRICS,
    ) -> None:
        super().__init__(info.num_items, topk, metrics, tie_mode)
        check_settings("model", {"loss": loss, "layers": layers, "embedding": embedding, "dropout_embed": dropout_embed,
                                 "dropout_hidden": dropout_hidden, "logq": logq, "bpreg": bpreg, "elu_param": elu_param,
                                 "sparse_gradients": sparse_gradients}, type(self))
        layers = [int(x) for x in layers]
        self.save_hyperparameters(
            {"num_items": info.num_items, "loss": loss, "layers": layers, "embedding": embedding,
             "dropout_embed": dropout_embed, "dropout_hidden": dropout_hidden, "logq": logq, "bpreg": bpreg,
             "elu_param": elu_param, "batch_size": info.batch_size, "n_sample": info.n_sample,
             "sample_alpha": info.sample_alpha, "tie_mode": tie_mode},
            logger=False,
        )
        self.net = GRU4RecNet(info.num_items, layers, embedding, dropout_embed, dropout_hidden)
        self.optimizer_factory = optimizer
        self.loss_name = loss
        self.logq, self.bpreg, self.elu_param = float(logq), float(bpreg), float(elu_param)
        self.sparse_gradients = str(sparse_gradients).lower()
        self.batch_size = info.batch_size
        self.n_sample = info.n_sample
        support = info.item_support.double().clamp_min(1.0)
        self.register_buffer("log_support", support.log().float(), persistent=False)
        self._train_state = LaneState(self._zeros)
        self._eval_state = LaneState(self._zeros)

    def _zeros(self, lanes: int) -> list[torch.Tensor]:
        return self.net.init_hidden(lanes, self.device)

    # -- training ------------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        self._train_state.clear()

    def chunk_steps(self, chunk: dict[str, torch.Tensor]) -> Iterable[dict[str, torch.Tensor]]:
        return session_steps(chunk)

    def step_weight(self, step: dict[str, torch.Tensor]) -> float:
        return 1.0 if step["inputs"].numel() else 0.0  # the mean runs over real steps (not DDP padding)

    def step_loss(
        self, scores: torch.Tensor, column_item: torch.Tensor, step: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """Per-lane losses ``(b,)`` of a step, given the scores ``(b, K)`` of its distinct column items and the
        candidate of every column ``column_item`` ``(C,)`` (the lanes' targets first: row b's positive is column
        b). Cross-entropy and BPR-max run over the candidates with their columns' weights
        (:func:`~recsys.losses.weighted_xe_loss`, :func:`~recsys.losses.weighted_bpr_max_loss`: the same values as
        over the columns); the other losses over the columns."""
        b = step["targets"].numel()
        if self.loss_name == "cross-entropy":
            dtype = torch.promote_types(scores.dtype, torch.float32)  # 16-bit weights underflow
            log_q = self.column_log_q(step["targets"], step.get("neg_log_q"))
            if log_q is None:
                column_weight = torch.ones(column_item.numel(), dtype=dtype, device=scores.device)
                shift = None
            else:
                log_q = log_q.to(dtype)
                column_weight = log_q.mul(-self.logq).exp_()
                shift = self.logq * log_q[:b]
            weights = column_weight.new_zeros(scores.shape[1]).index_add_(0, column_item, column_weight)
            return weighted_xe_loss(scores, weights.log_(), column_item[:b], shift)
        if self.loss_name == "bpr-max" and column_item.numel() >= 2:
            counts = torch.bincount(column_item, minlength=scores.shape[1])
            return weighted_bpr_max_loss(scores, counts, column_item[:b], self.bpreg, self.elu_param)
        columns = scores.index_select(1, column_item)  # (b, C), the lanes' targets on the diagonal
        if self.loss_name == "bpr-max":
            return bpr_max_loss(columns, self.bpreg, self.elu_param)
        if self.loss_name == "top1":
            return top1_loss(columns)
        if self.loss_name == "bpr":
            return session_bpr_loss(columns)
        return top1_max_loss(columns)

    def column_log_q(self, targets: torch.Tensor, neg_log_q: torch.Tensor | None) -> torch.Tensor | None:
        """``log Q`` of a step's columns for the logQ correction (None when ``logq`` is 0): the support of the
        in-batch targets, then the extra negatives' log-proposal."""
        if self.logq == 0:
            return None
        log_q = self.log_support.index_select(0, targets)
        return log_q if neg_log_q is None else torch.cat([log_q.to(neg_log_q.dtype), neg_log_q])

    def batch_loss(self, step: dict[str, torch.Tensor]) -> tuple[torch.Tensor]:
        """The loss of one session-parallel step: the lanes' hidden states (reset where a session starts) → the
        GRU on the input items → scores of the step's candidate items (each scored once however many columns hold
        it: :meth:`GRU4RecNet.train_scores`) → the loss summed over lanes / the batch size (a zero that touches
        every parameter for a DDP padding step)."""
        inputs, targets = step["inputs"], step["targets"]
        if inputs.numel() == 0:
            return (sum(p.sum() for p in self.parameters()) * 0.0,)
        hidden = self._train_state.gather(step["lanes"], step["reset"])
        negatives = step.get("negatives")
        columns = targets if negatives is None else torch.cat([targets, negatives])
        scores, column_item, new_hidden = self.net.train_scores(inputs, hidden, columns)
        self._train_state.scatter(step["lanes"], new_hidden)
        return (self.step_loss(scores, column_item, step).sum() / self.batch_size,)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        optimizer = self.optimizer_factory(params=self.parameters())
        supports = isinstance(optimizer, (AdagradM, torch.optim.Adagrad, torch.optim.SparseAdam))
        # DDP (any strategy but a single device, even with one process) reduces dense buckets only: a sparse
        # gradient of a functional embedding fails in the first backward
        try:
            strategy = self.trainer.strategy
        except RuntimeError:  # not attached to a trainer (built on its own)
            strategy = None
        data_parallel = strategy is not None and not isinstance(strategy, SingleDeviceStrategy)
        if self.sparse_gradients == "true" and not supports:
            raise ConfigError(
                f"model.sparse_gradients=true but {type(optimizer).__name__} does not accept sparse gradients; "
                "set model.sparse_gradients=false (or auto)"
            )
        if self.sparse_gradients == "true" and data_parallel:
            raise ConfigError(
                f"model.sparse_gradients=true is not possible with {type(self.trainer.strategy).__name__} (DDP "
                "reduces dense gradients only); set model.sparse_gradients=false (or auto)"
            )
        clipping = bool(self.step_options.gradient_clip_val)  # torch clips dense gradients only
        if self.sparse_gradients == "true" and clipping:
            raise ConfigError(
                "model.sparse_gradients=true cannot be combined with trainer.gradient_clip_val (torch clips dense "
                "gradients only); set model.sparse_gradients=false (or auto)"
            )
        momentum = float(optimizer.param_groups[0].get("momentum", 0.0) or 0.0)
        # auto: the official row-sparse updates when they change the result (momentum) or save work (many items)
        worth_it = momentum > 0 or self.num_items > 2 * (self.batch_size + self.n_sample)
        sparse = self.sparse_gradients == "true" or (
            self.sparse_gradients == "auto" and supports and not data_parallel and not clipping and worth_it
        )
        self.net.set_sparse(sparse)
        return optimizer

    # -- evaluation ----------------------------------------------------------------------------
    def reset_eval_state(self) -> None:
        self._eval_state.clear()

    def eval_scores(self, step: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = self._eval_state.gather(step["lanes"], step["reset"])
        output, new_hidden = self.net(step["inputs"], hidden)
        self._eval_state.scatter(step["lanes"], new_hidden)
        return self.net.score_all(output)

    def export_rows(self) -> tuple[None, torch.Tensor, str]:
        """``[Wy | by]``: scored by ``[h, 1]`` (:meth:`GRU4RecNet.score_all`)."""
        return None, torch.cat([self.net.output_weight, self.net.output_bias], 1), \
            "[h, 1] with h the GRU output after the session prefix"

    def forward(self, items: torch.Tensor, hidden: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Scores of all items after feeding ``items`` ``(b,)`` with ``hidden``; returns (scores, new hidden)."""
        output, new_hidden = self.net(items, hidden)
        return self.net.score_all(output), new_hidden
