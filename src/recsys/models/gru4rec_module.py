"""GRU4Rec's LightningModule: session-parallel training with 1-step BPTT (Hidasi et al., ICLR'16; Hidasi &
Karatzoglou, CIKM'18)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
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
from recsys.models.session_recommender import (
    SESSION_METRICS,
    LaneState,
    SessionRecommender,
    StepColumns,
    as_chunk,
    session_steps,
)
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

    def chunk_steps(self, chunk: dict[str, torch.Tensor]) -> Iterator[dict[str, torch.Tensor]]:
        """The chunk's steps, each with its candidates (the distinct items of its columns) and what its loss needs
        of them, worked out for the whole chunk at once (:class:`StepColumns`, :meth:`candidate_terms`)."""
        columns = StepColumns.of(chunk, self.num_items)
        weights, shift = self.candidate_terms(chunk, columns)
        per_candidate = columns.cand_ptr.diff().tolist()
        per_step = {"candidates": columns.candidates.split(per_candidate), "column_item": columns.step_column_items()}
        if weights is not None:
            per_step["candidate_weight"] = weights.split(per_candidate)
        if shift is not None:
            per_step["target_shift"] = shift.split(columns.step_sizes)
        for t, step in enumerate(session_steps(chunk)):
            step.update({k: parts[t] for k, parts in per_step.items()})
            yield step

    def step_weight(self, step: dict[str, torch.Tensor]) -> float:
        return 1.0 if step["inputs"].numel() else 0.0  # the mean runs over real steps (not DDP padding)

    def candidate_terms(
        self, chunk: dict[str, torch.Tensor], columns: StepColumns
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Per candidate, what the loss weighs it by, and per target the cross-entropy's shift:

        * cross-entropy: ``log w_k`` with ``w_k = Σ_{columns j of item k} exp(−logq · log Q_j)`` (``Q``: the support
          of the in-batch targets, the extra negatives' proposal ``neg_log_q``) and ``shift_b = logq · log Q`` of
          row b's target (:func:`~recsys.losses.weighted_xe_loss`; without logQ, ``w_k`` counts the columns);
        * BPR-max: each candidate's number of columns (:func:`~recsys.losses.weighted_bpr_max_loss`);
        * the other losses run over the columns: nothing."""
        if self.loss_name not in ("cross-entropy", "bpr-max"):
            return None, None
        dtype = torch.promote_types(self.net.output_weight.dtype, torch.float32)  # 16-bit weights underflow
        if self.loss_name == "bpr-max" or self.logq == 0:
            counts = torch.bincount(columns.column_candidate, minlength=columns.candidates.numel()).to(dtype)
            return (counts if self.loss_name == "bpr-max" else counts.log_()), None
        log_q = self.log_support.index_select(0, chunk["targets"])
        neg_log_q = chunk.get("neg_log_q")
        if neg_log_q is not None:
            log_q = torch.cat([log_q.to(neg_log_q.dtype), neg_log_q.reshape(-1)])
        log_q = log_q.to(dtype)
        weights = log_q.new_zeros(columns.candidates.numel()).index_add_(0, columns.column_candidate, log_q.mul(-self.logq).exp_())
        return weights.log_(), self.logq * log_q[: chunk["targets"].numel()]

    def step_loss(self, scores: torch.Tensor, step: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-lane losses ``(b,)`` of a step, given the scores ``(b, K)`` of its candidates and the candidate of
        every column ``step["column_item"]`` ``(C,)`` (the lanes' targets first: row b's positive is column b).
        Cross-entropy and BPR-max run over the candidates with their weights (:meth:`candidate_terms`: the same
        values as over the columns); the other losses over the columns."""
        column_item = step["column_item"]
        target = column_item[: step["targets"].numel()]
        if self.loss_name == "cross-entropy":
            return weighted_xe_loss(scores, step["candidate_weight"], target, step.get("target_shift"))
        if self.loss_name == "bpr-max" and column_item.numel() >= 2:
            return weighted_bpr_max_loss(scores, step["candidate_weight"], target, self.bpreg, self.elu_param)
        columns = scores.index_select(1, column_item)  # (b, C), the lanes' targets on the diagonal
        if self.loss_name == "bpr-max":
            return bpr_max_loss(columns, self.bpreg, self.elu_param)
        if self.loss_name == "top1":
            return top1_loss(columns)
        if self.loss_name == "bpr":
            return session_bpr_loss(columns)
        return top1_max_loss(columns)

    def batch_loss(self, step: dict[str, torch.Tensor]) -> tuple[torch.Tensor]:
        """The loss of one session-parallel step (from :meth:`chunk_steps`; a bare step is taken as a chunk of
        one): the lanes' hidden states (reset where a session starts) → the GRU on the input items → scores of the
        step's candidates (each item scored once however many columns hold it) → the loss summed over lanes / the
        batch size (a zero that touches every parameter for a DDP padding step)."""
        inputs = step["inputs"]
        if inputs.numel() == 0:
            return (sum(p.sum() for p in self.parameters()) * 0.0,)
        if "candidates" not in step:
            step = next(self.chunk_steps(as_chunk(step)))
        hidden = self._train_state.gather(step["lanes"], step["reset"])
        scores, new_hidden = self.net.train_scores(inputs, hidden, step["candidates"])
        self._train_state.scatter(step["lanes"], new_hidden)
        return (self.step_loss(scores, step).sum() / self.batch_size,)

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
