"""``data.steps_per_chunk=auto``: the number of optimiser steps per Lightning training step, from the step's cost.

Before the first epoch (after the model is on its device), :class:`StepsPerChunk` times the model's
forward + backward on one training batch of the DataModule and sets ``T = ceil(target / step time)`` (at most
``max_steps``): enough steps to make a chunk cost ~``target_seconds``, so Lightning's per-batch toll is small
against the math (:mod:`recsys.models.chunked`). No weight changes (no optimiser step; gradients are cleared),
and the draws of the epochs do not depend on it. ``T = 1`` under DDP, and when ``trainer.limit_train_batches``,
an integer ``trainer.val_check_interval`` or ``trainer.max_steps`` is set (Lightning checks them between loader
batches: chunks).
"""

from __future__ import annotations

import logging
import math
import time

import pytorch_lightning as pl
import torch

from recsys.data.datamodule import AUTO

log = logging.getLogger(__name__)


class StepsPerChunk(pl.Callback):
    """Resolves ``data.steps_per_chunk=auto`` at the start of fitting (module docstring)."""

    def __init__(self, target_seconds: float = 0.5, max_steps: int = 256, repeats: int = 5) -> None:
        self.target_seconds = target_seconds
        self.max_steps = max_steps
        self.repeats = repeats

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        datamodule = trainer.datamodule
        if getattr(datamodule, "steps_per_chunk", None) != AUTO or not hasattr(pl_module, "batch_loss"):
            return
        counts_batches = (isinstance(trainer.limit_train_batches, int) or trainer.limit_train_batches != 1.0
                          or isinstance(trainer.val_check_interval, int) or trainer.max_steps not in (-1, None))
        if trainer.world_size > 1 or counts_batches:
            datamodule.steps_per_chunk = 1
            return
        seconds = self.step_seconds(pl_module, trainer.strategy.batch_to_device(datamodule.example_batch()))
        steps = max(1, min(self.max_steps, math.ceil(self.target_seconds / max(seconds, 1e-6))))
        datamodule.steps_per_chunk = steps
        log.info("data.steps_per_chunk=auto: %d optimiser steps per training batch (a step's forward + backward "
                 "takes %.2f ms)", steps, 1e3 * seconds)

    def step_seconds(self, model: pl.LightningModule, chunk) -> float:
        """Fastest of ``repeats`` timings (after one warm-up) of ``batch_loss`` + backward on the first step of
        ``chunk`` (the minimum: other work on the machine only ever slows a run down). The weights are left as
        they are, their gradients cleared before and after."""
        step = next(iter(model.chunk_steps(chunk)))
        model.zero_grad(set_to_none=True)
        times = []
        for _ in range(self.repeats + 1):
            start = time.perf_counter()
            model.batch_loss(step)[0].backward()
            if model.device.type == "cuda":
                torch.cuda.synchronize(model.device)
            times.append(time.perf_counter() - start)
        model.zero_grad(set_to_none=True)
        return min(times[1:])
