"""``data.steps_per_chunk=auto``: the number of optimiser steps per Lightning training step, from the step's cost.

When a fit first asks the DataModule for its training loader (the model is on its device by then),
:func:`auto_steps_per_chunk` times the model's forward + backward on one training batch and returns
``T = ceil(target / step time)`` (at most ``max_steps``): enough steps to make a chunk cost ~``target_seconds``, so
Lightning's per-batch toll is small against the math (:mod:`recsys.models.chunked`). No weight changes (no optimiser
step; gradients are cleared), and the draws of the epochs do not depend on it. ``T = 1`` for a model without
``batch_loss``, and when ``trainer.limit_train_batches``, an integer ``trainer.val_check_interval`` or
``trainer.max_steps`` is set (Lightning checks them between loader batches: chunks).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch

log = logging.getLogger(__name__)

#: seconds of optimiser steps per chunk
TARGET_SECONDS = 0.5
#: at most this many steps per chunk
MAX_STEPS = 256


def auto_steps_per_chunk(trainer: pl.Trainer, example_chunk: Callable[[], Any], target_seconds: float = TARGET_SECONDS,
                         max_steps: int = MAX_STEPS, repeats: int = 5) -> int:
    """Steps per chunk for ``trainer``'s model (module docstring); ``example_chunk()`` gives one training chunk (on
    the CPU) whose first step is timed."""
    model = trainer.lightning_module
    counts_batches = (isinstance(trainer.limit_train_batches, int) or trainer.limit_train_batches != 1.0
                      or isinstance(trainer.val_check_interval, int) or trainer.max_steps not in (-1, None))
    if counts_batches or not hasattr(model, "batch_loss"):
        return 1
    seconds = step_seconds(model, trainer.strategy.batch_to_device(example_chunk()), repeats)
    steps = max(1, min(max_steps, math.ceil(target_seconds / max(seconds, 1e-6))))
    log.info("data.steps_per_chunk=auto: %d optimiser steps per training batch (a step's forward + backward "
             "takes %.2f ms)", steps, 1e3 * seconds)
    return steps


def step_seconds(model: pl.LightningModule, chunk: Any, repeats: int = 5) -> float:
    """Fastest of ``repeats`` timings (after one warm-up) of ``batch_loss`` + backward on the first step of
    ``chunk`` (the minimum: other work on the machine only ever slows a run down). The weights are left as
    they are, their gradients cleared before and after."""
    step = next(iter(model.chunk_steps(chunk)))
    model.zero_grad(set_to_none=True)
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        model.batch_loss(step)[0].backward()
        if model.device.type == "cuda":
            torch.cuda.synchronize(model.device)
        times.append(time.perf_counter() - start)
    model.zero_grad(set_to_none=True)
    return min(times[1:])
