"""Callbacks the run artifacts depend on."""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl
import torch


class EpochTimer(pl.Callback):
    """Logs ``time/epoch_seconds``: wall time of each training epoch."""

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl_module.log("time/epoch_seconds", time.perf_counter() - self._start, on_step=False, on_epoch=True, sync_dist=True)


class BestMetricTracker(pl.Callback):
    """Remembers all ``val/*`` metrics of the validation where ``monitor`` was best, and its epoch."""

    def __init__(self, monitor: str, mode: str = "max") -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.monitor, self.mode = monitor, mode
        self.best_value: float | None = None
        self.best_epoch: int | None = None
        self.best_metrics: dict[str, float] = {}

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.monitor])
        better = self.best_value is None or (value > self.best_value if self.mode == "max" else value < self.best_value)
        if better:
            self.best_value, self.best_epoch = value, trainer.current_epoch
            self.best_metrics = {
                k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/") and torch.is_tensor(v) and v.numel() == 1
            }

    def state_dict(self) -> dict[str, Any]:
        return {"best_value": self.best_value, "best_epoch": self.best_epoch, "best_metrics": self.best_metrics}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_value = state_dict["best_value"]
        self.best_epoch = state_dict["best_epoch"]
        self.best_metrics = dict(state_dict["best_metrics"])


class ValidateLastEpoch(pl.Callback):
    """Validates after the last epoch as well. Lightning validates every ``check_val_every_n_epoch`` epochs
    only: without this, the epochs after the last multiple never reach model selection or the best
    checkpoint, and a run shorter than the interval is never validated at all."""

    def __init__(self) -> None:
        self._interval: int | None = None  # the configured interval while the last epoch runs with 1

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.on_train_epoch_start(trainer, pl_module)  # a run resumed mid-epoch skips on_train_epoch_start

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        interval = trainer.check_val_every_n_epoch
        last = trainer.max_epochs is not None and trainer.current_epoch == trainer.max_epochs - 1
        if last and interval is not None and interval > 1:
            self._interval, trainer.check_val_every_n_epoch = interval, 1

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._interval is not None:
            trainer.check_val_every_n_epoch, self._interval = self._interval, None


class ConfigInCheckpoint(pl.Callback):
    """Stores the resolved run config (plain containers) in every checkpoint under ``recsys_config``,
    so ``eval.py`` rebuilds the exact data and model; loadable with ``torch.load(weights_only=True)``."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint["recsys_config"] = self.config
