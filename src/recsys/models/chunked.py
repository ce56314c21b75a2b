"""Training in chunks of optimiser steps: one Lightning ``training_step`` runs T steps (manual optimisation).

Lightning's automatic loop costs a fixed toll per batch (the loader, the batch transfer, the progress bar, the
per-batch callback and module hooks). For small steps (GRU4Rec's session-parallel steps, BPR steps on a small
graph) that toll is as large as the math, so the loaders yield *chunks* of T steps (``data.steps_per_chunk``,
like Keras' ``steps_per_execution``) and :meth:`ChunkedTraining.training_step` runs them one after the other, in
the same order as T = 1: the same draws, the same updates, the same results.

A model defines the loss of one step (:meth:`ChunkedTraining.batch_loss`); autograd does the rest. Every step
goes through Lightning's public manual-optimisation API: ``manual_backward`` and the ``LightningOptimizer``'s
``step``, so every callback and module hook, the precision plugin, the strategy and the profiler see every
optimiser step, and ``trainer.global_step`` counts them. On top of that the mixin gives what Lightning's
automatic loop gives and manual optimisation leaves to the module (:class:`StepOptions`, set from the trainer
config by :func:`recsys.utils.devices.step_options`):

* gradient accumulation over ``k`` steps: each step's loss is divided by ``k`` and the optimiser steps after
  every ``k`` steps and after the epoch's last one (as Lightning's ``accumulate_grad_batches``);
* gradient clipping by norm or value in ``on_before_optimizer_step`` (after the precision plugin has unscaled
  the gradients, before the update, as Lightning's ``gradient_clip_val``).

The training loss is summed on the device over the epoch and logged once, at the epoch end, as the mean over
every step of every process (``train/loss`` and whatever else :meth:`batch_loss` returns, named by
``loss_names``), weighted by :meth:`step_weight`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from recsys.errors import ConfigError

CLIP_ALGORITHMS = ("norm", "value")


@dataclass(frozen=True)
class StepOptions:
    """How optimiser steps are taken: ``accumulate_grad_batches`` steps per update, gradients clipped at
    ``gradient_clip_val`` (None or 0: no clipping) by ``gradient_clip_algorithm`` (``norm``: the global 2-norm
    of all gradients; ``value``: each element)."""

    accumulate_grad_batches: int = 1
    gradient_clip_val: float | None = None
    gradient_clip_algorithm: str = "norm"

    def __post_init__(self) -> None:
        k = self.accumulate_grad_batches
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"trainer.accumulate_grad_batches={k!r}: must be an integer >= 1")
        clip = self.gradient_clip_val
        if clip is not None and (isinstance(clip, bool) or not isinstance(clip, (int, float)) or not clip >= 0):
            raise ConfigError(f"trainer.gradient_clip_val={clip!r}: must be a number >= 0 (or null: no clipping)")
        if self.gradient_clip_algorithm not in CLIP_ALGORITHMS:
            raise ConfigError(f"trainer.gradient_clip_algorithm={self.gradient_clip_algorithm}: must be one of "
                              f"{', '.join(CLIP_ALGORITHMS)}")


class ChunkedTraining:
    """Mixin for a LightningModule: manual optimisation over chunks (module docstring).

    To implement: :meth:`batch_loss` (``(loss, *more)`` of one step) and, unless a chunk is a list of step
    batches, :meth:`chunk_steps`. A subclass that overrides ``on_before_optimizer_step`` calls ``super()``'s
    (the clipping lives there).
    """

    #: names under which ``batch_loss``'s values are logged (``train/<name>``)
    loss_names: Sequence[str] = ("loss", "bpr")
    #: which of them the progress bar shows
    prog_bar_losses: Sequence[str] = ("loss",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.automatic_optimization = False
        self.step_options = StepOptions()
        self._loss_sums: torch.Tensor | None = None
        self._accumulated = 0  # steps whose gradients wait for the next optimiser step

    # -- to implement ----------------------------------------------------------------------------
    def batch_loss(self, batch: Any) -> tuple[torch.Tensor, ...]:
        """``(loss, *logged)`` of one step; ``loss`` is what is minimised."""
        raise NotImplementedError

    def chunk_steps(self, chunk: Any) -> Iterable[Any]:
        """The step batches of a chunk, in order (default: a chunk is a list of them)."""
        return chunk

    def step_weight(self, batch: Any) -> float:
        """Weight of a step in the epoch's logged mean (the number of rows it trains on)."""
        return float(batch["users"].numel())

    # -- Lightning hooks -------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        self._loss_sums = None
        self._accumulated = 0

    def training_step(self, chunk: Any, batch_idx: int) -> torch.Tensor:
        """One backward per step batch of ``chunk``, an optimiser step after every ``accumulate_grad_batches``
        of them and after the epoch's last; returns the steps' losses ``(T,)`` (detached), which the finite-loss
        check reads."""
        optimizer = self.optimizers()
        k = self.step_options.accumulate_grad_batches
        steps = list(self.chunk_steps(chunk))
        last_chunk = batch_idx + 1 >= self.trainer.num_training_batches
        values, weights = [], []
        for t, batch in enumerate(steps):
            if self._accumulated == 0:
                optimizer.zero_grad()
            step_values = self.batch_loss(batch)
            self.manual_backward(step_values[0] / k if k > 1 else step_values[0])
            self._accumulated += 1
            if self._accumulated == k or (last_chunk and t == len(steps) - 1):
                optimizer.step()
                self._accumulated = 0
            values.extend(v.detach() for v in step_values)
            weights.append(self.step_weight(batch))
        if not values:
            return torch.zeros(0, device=self.device)
        stacked = torch.stack(values).float().view(len(weights), -1)  # (T, len(loss_names))
        w = torch.tensor(weights, dtype=stacked.dtype, device=stacked.device)  # not the *-true default dtype
        total = torch.cat([w @ stacked, w.sum()[None]])
        self._loss_sums = total if self._loss_sums is None else self._loss_sums + total
        return stacked[:, 0]

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Clip the gradients (``step_options``), after the precision plugin has unscaled them."""
        clip = self.step_options.gradient_clip_val
        if clip:
            self.clip_gradients(optimizer, gradient_clip_val=clip,
                                gradient_clip_algorithm=self.step_options.gradient_clip_algorithm)

    def on_train_epoch_end(self) -> None:
        """``train/<name>``: the weighted mean over every step of every process. Each process joins the sum,
        also one without steps (skipping the reduction would leave the others waiting)."""
        sums = self._loss_sums
        if sums is None:
            sums = torch.zeros(len(self.loss_names) + 1, device=self.device)
        sums = self.trainer.strategy.reduce(sums, reduce_op="sum")
        if float(sums[-1]) > 0:
            for name, value in zip(self.loss_names, (sums[:-1] / sums[-1]).tolist(), strict=False):
                self.log(f"train/{name}", value, prog_bar=name in self.prog_bar_losses, sync_dist=False)
