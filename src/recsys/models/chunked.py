"""Training in chunks of optimiser steps: one Lightning ``training_step`` runs T steps (manual optimisation).

Lightning's automatic loop costs a fixed toll per batch (callback and module hooks, a closure, the progress
bar, the loader and the batch transfer). For small steps (GRU4Rec's session-parallel steps, BPR steps on a
small graph) that toll is as large as the math, so the loaders yield *chunks* of T steps
(``data.steps_per_chunk``) and :meth:`ChunkedTraining.training_step` runs them one after the other with one
``zero_grad → backward → optimiser step`` each, in the same order as T = 1: the same draws, the same
updates, the same results. Under DDP T = 1 (DDP allows one backward per forward of the wrapped module).

Each step goes through Lightning's ``manual_backward`` and ``LightningOptimizer.step`` (its callback and module
hooks, the precision plugin, the strategy) only when something needs them (:func:`lightning_steps_needed`):
otherwise ``loss.backward()`` and the optimiser's own ``step`` (:func:`unhooked_step`) do the same work without
~0.5 ms of hook dispatch per step, and the trainer still counts the optimiser steps (``global_step``). On that
path a module may also set its gradients itself (:meth:`ChunkedTraining.batch_gradients`; GRU4Rec does) instead
of running autograd.

The training loss is summed on the device over the epoch and logged once, at the epoch end, as the mean over
every step of every process (``train/loss`` and whatever else :meth:`batch_loss` returns, named by
``loss_names``), weighted by :meth:`step_weight`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
import torch.optim.optimizer as optimizer_hooks
from pytorch_lightning.plugins.precision import DoublePrecision, HalfPrecision, MixedPrecision, Precision
from pytorch_lightning.profilers import PassThroughProfiler
from pytorch_lightning.strategies import SingleDeviceStrategy
from pytorch_lightning.utilities.model_helpers import is_overridden

#: the hooks Lightning runs around every manual optimiser step
STEP_HOOKS = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")


def lightning_steps_needed(trainer: pl.Trainer, module: pl.LightningModule) -> bool:
    """Whether optimiser steps must go through ``manual_backward`` / ``LightningOptimizer.step``: a strategy
    other than one device (DDP prepares its reduction in ``pre_backward``), a precision plugin that scales the
    loss or wraps the step (``16-mixed``'s GradScaler, DeepSpeed, FSDP, …), a profiler, a custom
    ``LightningModule.backward``, or a callback or module that overrides a per-step hook (:data:`STEP_HOOKS`)."""
    precision = trainer.precision_plugin
    plain_precision = type(precision) in (Precision, HalfPrecision, DoublePrecision) or (
        type(precision) is MixedPrecision and precision.scaler is None)
    return (
        type(trainer.strategy) is not SingleDeviceStrategy
        or not plain_precision
        or not isinstance(trainer.profiler, PassThroughProfiler)
        or any(is_overridden(h, module, pl.LightningModule) for h in ("backward", *STEP_HOOKS))
        or any(is_overridden(h, cb, pl.Callback) for cb in trainer.callbacks for h in STEP_HOOKS)
    )


#: the code of the wrapper torch puts around every optimiser class's ``step`` (``Optimizer.profile_hook_step``)
_TORCH_STEP_WRAPPER = torch.optim.Optimizer.profile_hook_step(lambda *args, **kwargs: None).__code__


def unhooked_step(optimizer: torch.optim.Optimizer) -> Callable[[], Any]:
    """``optimizer.step`` without torch's per-call wrapper (``Optimizer.profile_hook_step``: a profiler range and
    the loops over step hooks, ~40 µs a call on the CPU) while no step hook is registered (on the optimiser or
    globally), no torch profiler runs and nothing replaced the instance's ``step`` (as an LR scheduler does to
    count the calls): the same update. Otherwise ``optimizer.step`` itself."""
    step = type(optimizer).step
    if getattr(step, "__code__", None) is not _TORCH_STEP_WRAPPER:  # only torch's own wrapper is left out
        return optimizer.step
    hooks = (optimizer_hooks._global_optimizer_pre_hooks, optimizer_hooks._global_optimizer_post_hooks,
             getattr(optimizer, "_optimizer_step_pre_hooks", None), getattr(optimizer, "_optimizer_step_post_hooks", None))
    inner = getattr(step, "__wrapped__", None)
    if (inner is None or "step" in vars(optimizer) or any(h is None or len(h) for h in hooks)
            or torch.autograd.profiler._is_profiler_enabled):
        return optimizer.step
    return functools.partial(inner, optimizer)


class ChunkedTraining:
    """Mixin for a LightningModule: manual optimisation over chunks (module docstring).

    To implement: :meth:`batch_loss` (``(loss, *more)`` of one step) and, unless a chunk is a list of step
    batches, :meth:`chunk_steps`.
    """

    #: names under which ``batch_loss``'s values are logged (``train/<name>``)
    loss_names: Sequence[str] = ("loss", "bpr")
    #: which of them the progress bar shows
    prog_bar_losses: Sequence[str] = ("loss",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.automatic_optimization = False
        self._loss_sums: torch.Tensor | None = None
        self._lightning_steps = True

    # -- to implement ----------------------------------------------------------------------------
    def batch_loss(self, batch: Any) -> tuple[torch.Tensor, ...]:
        """``(loss, *logged)`` of one step; ``loss`` is what is minimised."""
        raise NotImplementedError

    def batch_gradients(self, batch: Any) -> tuple[torch.Tensor, ...] | None:
        """Optional: :meth:`batch_loss`'s values with every parameter's ``.grad`` set by the module itself (its
        gradients written out); None (the default) lets autograd do it. Used where Lightning's step wrappers are
        not needed (:func:`lightning_steps_needed`)."""
        return None

    def chunk_steps(self, chunk: Any) -> Iterable[Any]:
        """The step batches of a chunk, in order (default: a chunk is a list of them)."""
        return chunk

    def step_weight(self, batch: Any) -> float:
        """Weight of a step in the epoch's logged mean (the number of rows it trains on)."""
        return float(batch["users"].numel())

    # -- Lightning hooks -------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        self._loss_sums = None
        # (the benchmark's bare loops call this hook without a trainer: nothing to step through)
        self._lightning_steps = self._trainer is not None and lightning_steps_needed(self._trainer, self)

    def training_step(self, chunk: Any, batch_idx: int) -> torch.Tensor:
        """One optimiser step per step batch of ``chunk``; returns the steps' losses ``(T,)`` (detached), which
        the finite-loss check reads."""
        optimizer = self.optimizers()
        plain = not self._lightning_steps
        optimizer_step = unhooked_step(optimizer.optimizer) if plain else optimizer.step
        values, weights = [], []
        for batch in self.chunk_steps(chunk):
            step_values = self.batch_gradients(batch) if plain else None
            if step_values is None:
                step_values = self.batch_loss(batch)
                optimizer.zero_grad()
                if plain:
                    step_values[0].backward()
                else:
                    self.manual_backward(step_values[0])
            if plain:  # what manual_backward and optimizer.step() do here, without their hook dispatch
                optimizer._on_before_step()  # the trainer's step count (global_step)
                optimizer_step()
                optimizer._on_after_step()
            else:
                optimizer_step()
            values.append(torch.stack(step_values).detach())
            weights.append(self.step_weight(batch))
        if not values:
            return torch.zeros(0, device=self.device)
        stacked = torch.stack(values).float()  # (T, len(loss_names))
        w = torch.tensor(weights, dtype=stacked.dtype, device=stacked.device)  # not the *-true default dtype
        total = torch.cat([w @ stacked, w.sum()[None]])
        self._loss_sums = total if self._loss_sums is None else self._loss_sums + total
        return stacked[:, 0]

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
