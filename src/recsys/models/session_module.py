"""LightningModules for session data: next-item evaluation (all session models) and GRU4Rec training.

Evaluation (algorithms.md §3.5): the validation/test sessions arrive as session-parallel steps (lanes);
every lane's state (GRU4Rec: hidden state) is reset when a new session starts in it; at every event except
a session's last, all training items are scored and the true next item is ranked:

* ``tie_mode="standard"``: rank = 1 + #items scoring strictly higher (optimistic; the official default);
* ``tie_mode="conservative"``: rank = #items scoring higher or equal (pessimistic);
* ``tie_mode="median"``: the mean of the two (the middle of the tied block; may be fractional).

``recall@K`` = fraction of events whose next item has rank ≤ K (a hit rate), ``mrr@K`` = mean of
``1/rank`` (0 beyond K); computed exactly from the ranks by ``TopKMetrics.update(ranks=...)``
(one relevant item per event), summed over processes. Items seen earlier in the session are not excluded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from pytorch_lightning.strategies import SingleDeviceStrategy

from recsys.data.session_datamodule import SessionInfo
from recsys.errors import ConfigError
from recsys.losses import (
    SESSION_LOSSES,
    bpr_max_loss,
    session_bpr_loss,
    session_xe_loss,
    top1_loss,
    top1_max_loss,
)
from recsys.metrics import TopKMetrics
from recsys.models.components.gru4rec import AdagradM, GRU4RecNet
from recsys.models.ranking_module import TopKRecommender
from recsys.sampling import sampling_generator

TIE_MODES = ("standard", "conservative", "median")
SESSION_METRICS = ("recall", "mrr")


def next_item_ranks(scores: torch.Tensor, targets: torch.Tensor, tie_mode: str = "standard") -> torch.Tensor:
    """1-based rank of ``targets[b]`` in ``scores[b]`` over all items, ``(b,)`` (see module docstring):
    int64 for ``standard``/``conservative``, float64 for ``median``."""
    target = scores.gather(1, targets[:, None])
    if tie_mode == "standard":
        return (scores > target).sum(1) + 1
    if tie_mode == "conservative":
        return (scores >= target).sum(1)
    if tie_mode == "median":
        return ((scores > target).sum(1) + 1 + (scores >= target).sum(1)).to(torch.float64) / 2
    raise ConfigError(f"model.tie_mode={tie_mode!r}; expected one of {TIE_MODES}")


class SessionRecommender(TopKRecommender):
    """Base class: next-item evaluation over session-parallel steps with per-lane state.

    Subclasses implement :meth:`eval_scores` (scores ``(b, N)`` of one step, updating the lane state and
    honouring ``batch["reset"]``); the per-pass state is dropped by :meth:`reset_eval_state`. The epoch
    hooks and metric logging are those of :class:`~recsys.models.ranking_module.TopKRecommender`.
    """

    data_kind = "session"

    def __init__(
        self,
        num_items: int,
        topk: Sequence[int] = (5, 10, 20),
        metrics: Sequence[str] = SESSION_METRICS,
        tie_mode: str = "standard",
    ) -> None:
        super().__init__(topk, metrics)
        if tie_mode not in TIE_MODES:
            raise ConfigError(f"model.tie_mode={tie_mode!r}; expected one of {TIE_MODES}")
        self.num_items = num_items
        self.tie_mode = tie_mode

    # -- to implement ----------------------------------------------------------------------------
    def eval_scores(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def reset_eval_state(self) -> None:
        """Forget the lanes' state (called before and after every evaluation pass)."""

    # -- evaluation ------------------------------------------------------------------------------
    def prepare_scoring(self) -> None:
        self.reset_eval_state()

    def finish_scoring(self) -> None:
        self.reset_eval_state()

    def evaluate_batch(self, batch: dict[str, torch.Tensor], metric: TopKMetrics) -> None:
        if batch["inputs"].numel() == 0:
            return
        scores = self.eval_scores(batch)
        metric.update(ranks=next_item_ranks(scores, batch["targets"], self.tie_mode))

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        """``batch``: ``{"prefixes" (S, L), "lengths" (S,)}`` (item ids, padded) → ``{"items" (S, k), "scores"
        (S, k)}``: the next-item top ``predict_k`` after each prefix (:func:`recsys.recommend.topk_sessions`)."""
        from recsys.recommend import topk_sessions

        with self.float32_scoring():
            items, scores = topk_sessions(self, batch["prefixes"], batch["lengths"],
                                          self.predict_k or self.test_metrics.max_k)
        return {"items": items, "scores": scores}


class LaneState:
    """Per-lane tensors of a session-parallel pass (e.g. the GRU's hidden state per layer).

    Sized by the first non-empty step of a pass (which holds every lane); rows are gathered for the step's
    ``lanes``, zeroed where ``reset``, and written back (detached) after the step.
    """

    def __init__(self, factory: Callable[[int], list[torch.Tensor]]) -> None:
        self.factory = factory
        self.tensors: list[torch.Tensor] | None = None

    def clear(self) -> None:
        self.tensors = None

    def gather(self, lanes: torch.Tensor, reset: torch.Tensor) -> list[torch.Tensor]:
        if self.tensors is None:
            self.tensors = self.factory(lanes.numel())
        keep = (~reset)[:, None]
        return [t[lanes] * keep for t in self.tensors]

    @torch.no_grad()
    def scatter(self, lanes: torch.Tensor, values: list[torch.Tensor]) -> None:
        assert self.tensors is not None
        for t, v in zip(self.tensors, values, strict=True):
            t[lanes] = v.detach().to(t.dtype)


class GRU4Rec(SessionRecommender):
    """GRU4Rec trained on session-parallel mini-batches with 1-step BPTT (algorithms.md §3).

    Per training step (one optimiser step, as the official code): gather the lanes' hidden states, zero
    those of lanes where a new session starts, run the GRU on the input items, keep the new hidden states
    (detached: no backpropagation through time), score the step's targets (in-batch negatives: the other
    lanes' targets, duplicates not masked) plus ``n_sample`` extra negatives shared by the mini-batch, drawn
    ``∝ supp^alpha`` by the bound sampler (``sampler.n_sample``, ``sampler.alpha``) from a pre-drawn store of
    ``sample_store_size`` ids; loss = sum over lanes / the configured ``data.batch_size``.

    Args:
        info: item count, support, batch size and the bound negative sampler (from the DataModule).
        optimizer: factory ``optimizer(params=)``; the official :class:`~recsys.models.components.gru4rec.AdagradM`
            by default.
        loss: ``cross-entropy`` (+ ``logq`` correction), ``bpr-max`` (+ ``bpreg``, ``elu_param``), ``top1``,
            ``bpr`` or ``top1-max`` (:mod:`recsys.losses`).
        layers, embedding, dropout_embed, dropout_hidden: the network (:class:`GRU4RecNet`).
        sparse_gradients: ``auto`` (row-sparse item-table gradients when the optimiser supports them, the model
            is not wrapped in DDP and either momentum is on — the official semantics: rows without a gradient do
            not move — or the catalogue is large; without momentum dense Adagrad gives the same result), ``true``
            (a ``ConfigError`` under DDP) or ``false``.
        tie_mode, topk, metrics: evaluation (see module docstring).
    """

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
        sample_store_size: int = 10_000_000,
        tie_mode: str = "standard",
        topk: Sequence[int] = (5, 10, 20),
        metrics: Sequence[str] = SESSION_METRICS,
    ) -> None:
        super().__init__(info.num_items, topk, metrics, tie_mode)
        if loss not in SESSION_LOSSES:
            raise ConfigError(f"model.loss={loss!r}; expected one of {SESSION_LOSSES}")
        if str(sparse_gradients).lower() not in ("auto", "true", "false"):
            raise ConfigError(f"model.sparse_gradients={sparse_gradients!r}; expected auto, true or false")
        if logq < 0 or bpreg < 0 or elu_param < 0:
            raise ConfigError(f"model.logq, model.bpreg and model.elu_param must be >= 0, got {logq}, {bpreg}, {elu_param}")
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
        self.sampler = info.negative_sampler
        self.n_sample = info.n_sample
        self.sample_store_size = int(sample_store_size)
        support = info.item_support.double().clamp_min(1.0)
        self.register_buffer("log_support", support.log().float(), persistent=False)
        proposal = self.sampler.proposal_weights() if self.n_sample > 0 else torch.ones(info.num_items)
        self.register_buffer("log_proposal", proposal.double().clamp_min(1e-300).log().float(), persistent=False)
        self._train_state = LaneState(self._zeros)
        self._eval_state = LaneState(self._zeros)
        self._store: torch.Tensor | None = None
        self._store_pos = 0
        self._generator: torch.Generator | None = None
        self._store_state: torch.Tensor | None = None
        self._resumed_negatives: dict | None = None
        self._loss_sum: torch.Tensor | None = None
        self._loss_steps = 0

    def _zeros(self, lanes: int) -> list[torch.Tensor]:
        return self.net.init_hidden(lanes, self.device)

    # -- negatives -----------------------------------------------------------------------------
    def on_train_start(self) -> None:
        resumed, self._resumed_negatives = self._resumed_negatives, None
        self._generator = sampling_generator(torch.initial_seed(), 0, self.global_rank, stream=6)
        self._store, self._store_pos, self._store_state = None, 0, None
        if resumed is not None:  # continue the store where the checkpoint left it (see on_save_checkpoint)
            self._generator.set_state(resumed["generator"])
            if resumed["drawn"]:
                self._draw_store()
                self._store_pos = int(resumed["position"])

    def _draw_store(self) -> None:
        rows = max(1, self.sample_store_size // self.n_sample)
        self._store_state = self._generator.get_state()  # what the store is redrawn from on resume
        self._store = self.sampler.propose(rows * self.n_sample, self._generator).view(rows, -1).to(self.device)
        self._store_pos = 0

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """The negative store's position: the generator state it was drawn from and the next row (the store
        itself, up to ``sample_store_size`` ids, is redrawn on resume)."""
        if self._generator is not None:
            drawn = self._store is not None and self._store_state is not None
            state = self._store_state if drawn else self._generator.get_state()
            checkpoint["gru4rec_negatives"] = {"generator": state.clone(), "drawn": drawn, "position": self._store_pos}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._resumed_negatives = checkpoint.get("gru4rec_negatives")

    def next_negatives(self) -> torch.Tensor | None:
        """The ``n_sample`` extra negatives of this step (a slice of the sample store), or None."""
        if self.n_sample == 0:
            return None
        if self._store is None or self._store_pos >= self._store.shape[0]:
            if self._generator is None:
                self._generator = sampling_generator(torch.initial_seed(), 0, self.global_rank, stream=6)
            self._draw_store()
        out = self._store[self._store_pos]
        self._store_pos += 1
        return out

    # -- training ------------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        self._train_state.clear()
        self._loss_sum, self._loss_steps = None, 0

    def step_loss(self, scores: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor | None) -> torch.Tensor:
        """Per-lane losses ``(b,)`` of a step's score matrix (targets on the diagonal)."""
        if self.loss_name == "cross-entropy":
            log_q = None
            if self.logq > 0:
                parts = [self.log_support[targets]]
                if negatives is not None:
                    parts.append(self.log_proposal[negatives])
                log_q = torch.cat(parts)
            return session_xe_loss(scores, log_q, self.logq)
        if self.loss_name == "bpr-max":
            return bpr_max_loss(scores, self.bpreg, self.elu_param)
        if self.loss_name == "top1":
            return top1_loss(scores)
        if self.loss_name == "bpr":
            return session_bpr_loss(scores)
        return top1_max_loss(scores)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        inputs, targets = batch["inputs"], batch["targets"]
        if inputs.numel() == 0:  # DDP padding step: a zero loss that still touches every parameter
            return sum(p.sum() for p in self.parameters()) * 0.0
        hidden = self._train_state.gather(batch["lanes"], batch["reset"])
        output, new_hidden = self.net(inputs, hidden)
        self._train_state.scatter(batch["lanes"], new_hidden)
        negatives = self.next_negatives()
        columns = targets if negatives is None else torch.cat([targets, negatives])
        scores = self.net.score_columns(output, columns)
        loss = self.step_loss(scores, targets, negatives).sum() / self.batch_size
        detached = loss.detach()
        self._loss_sum = detached if self._loss_sum is None else self._loss_sum + detached
        self._loss_steps += 1
        return loss

    def on_train_epoch_end(self) -> None:
        """``train/loss``: the mean over every real step of every rank. Each rank joins the sum, also one that
        had only padding steps (skipping it would leave the other ranks waiting in the reduction)."""
        loss_sum = self._loss_sum if self._loss_sum is not None else torch.zeros((), device=self.device)
        totals = torch.stack([loss_sum.float(), torch.tensor(float(self._loss_steps), device=self.device)])
        loss_sum, steps = self.trainer.strategy.reduce(totals, reduce_op="sum")
        if steps > 0:
            self.log("train/loss", loss_sum / steps, prog_bar=True, sync_dist=False)  # already global

    def configure_optimizers(self) -> torch.optim.Optimizer:
        optimizer = self.optimizer_factory(params=self.parameters())
        supports = isinstance(optimizer, (AdagradM, torch.optim.Adagrad, torch.optim.SparseAdam))
        # DDP (any strategy but a single device, even with one process) reduces dense buckets only: a sparse
        # gradient of a functional embedding fails in the first backward
        data_parallel = self._trainer is not None and not isinstance(self.trainer.strategy, SingleDeviceStrategy)
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
        momentum = float(optimizer.param_groups[0].get("momentum", 0.0) or 0.0)
        # auto: the official row-sparse updates when they change the result (momentum) or save work (many items)
        worth_it = momentum > 0 or self.num_items > 2 * (self.batch_size + self.n_sample)
        sparse = self.sparse_gradients == "true" or (
            self.sparse_gradients == "auto" and supports and not data_parallel and worth_it
        )
        self.net.set_sparse(sparse)
        return optimizer

    # -- evaluation ----------------------------------------------------------------------------
    def reset_eval_state(self) -> None:
        self._eval_state.clear()

    def eval_scores(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = self._eval_state.gather(batch["lanes"], batch["reset"])
        output, new_hidden = self.net(batch["inputs"], hidden)
        self._eval_state.scatter(batch["lanes"], new_hidden)
        return self.net.score_all(output)

    def forward(self, items: torch.Tensor, hidden: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Scores of all items after feeding ``items`` ``(b,)`` with ``hidden``; returns (scores, new hidden)."""
        output, new_hidden = self.net(items, hidden)
        return self.net.score_all(output), new_hidden


__all__ = ["GRU4Rec", "LaneState", "SessionRecommender", "next_item_ranks"]
