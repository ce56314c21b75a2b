"""A test-only callback that SIGKILLs its own process at a chosen point of training (resume tests).

Added from the command line: ``+callbacks.killer._target_=tests.integration.killer.KillAt
+callbacks.killer.epoch=2 [+callbacks.killer.batch=3]``. Without ``batch``: at the start of ``epoch``, i.e.
right after the previous epoch's checkpoints; with ``batch``: after that training batch (mid-epoch)."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytorch_lightning as pl


class KillAt(pl.Callback):
    def __init__(self, epoch: int, batch: int | None = None) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.batch is None and trainer.current_epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.batch is not None and trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), signal.SIGKILL)


class ScaleLrAt(pl.Callback):
    """Multiplies every learning rate by ``factor`` at the start of ``epoch`` (a real divergence: NaN test)."""

    def __init__(self, epoch: int, factor: float = 1e30) -> None:
        self.epoch, self.factor = epoch, factor

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            for optimizer in trainer.optimizers:
                for group in optimizer.param_groups:
                    group["lr"] *= self.factor
