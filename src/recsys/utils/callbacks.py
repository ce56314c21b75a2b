"""Callbacks the run artifacts depend on."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.trainer.states import TrainerFn

from recsys.data.cache import splits_identity
from recsys.errors import RecsysError
from recsys.metrics import TopKMetrics
from recsys.utils import per_user
from recsys.utils.resume import carry_best_k

log = logging.getLogger(__name__)


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

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """A best restored from a checkpoint is kept only while the checkpoint callbacks selecting on the same
        metric still hold best-k checkpoints: a resume that lost them restarts model selection, here as well
        (so ``best_epoch`` is the epoch of the best checkpoint)."""
        selecting = [cb for cb in trainer.checkpoint_callbacks
                     if isinstance(cb, ModelCheckpoint) and cb.monitor == self.monitor and cb.save_top_k != 0]
        if self.best_epoch is not None and selecting and not any(cb.best_k_models for cb in selecting):
            log.info("The best checkpoint of epoch %d was not restored: the best %s restarts from this run's "
                     "validations", self.best_epoch, self.monitor)
            self.best_value, self.best_epoch, self.best_metrics = None, None, {}

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
    so ``eval.py`` rebuilds the exact data and model, the identity of its dataset under ``recsys_dataset``
    (:func:`~recsys.data.cache.splits_identity`: a checkpoint of another dataset is refused on loading), and the
    run's command-line overrides under ``recsys_overrides`` (for resuming); loadable with
    ``torch.load(weights_only=True)``."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self._dataset: str | None = None

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint["recsys_config"] = self.config
        splits = getattr(trainer.datamodule, "splits", None)
        if splits is not None:
            if self._dataset is None:
                self._dataset = splits_identity(splits)
            checkpoint["recsys_dataset"] = self._dataset
        if HydraConfig.initialized():  # the command line, to recompose the config on resume (recsys.utils.resume)
            checkpoint["recsys_overrides"] = [str(o) for o in HydraConfig.get().overrides.task]


class PortableModelCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose run can move: the loggers' files are flushed with every checkpoint, and a fit
    resumed from another folder keeps its model selection (the files themselves are written atomically by
    :class:`~recsys.utils.checkpoint_io.AtomicCheckpointIO`).

    A fit resumed from a checkpoint saved for another ``dirpath`` (resumed into another run folder, a moved or
    copied run) keeps its best-k state: rank 0 copies the original best-k checkpoints into ``dirpath``
    (:func:`~recsys.utils.resume.carry_best_k`), where Lightning would restore only ``best_model_path`` (the
    first validation would then become the best). When the best checkpoint is found nowhere, one warning names
    it, model selection restarts with this run's validations and ``lost_on_resume`` lists the missing files.
    A checkpoint loaded to validate or test does not change the state."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lost_on_resume: list[str] = []  # best-k checkpoints of the resumed run that were not found
        self._restoring: pl.Trainer | None = None

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        self._restoring = trainer  # for load_state_dict, which Lightning calls next with this callback's state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        trainer, self._restoring = self._restoring, None
        if trainer is not None and trainer.state.fn != TrainerFn.FITTING:
            return  # a checkpoint loaded to validate/test/predict: nothing is saved, this run's state stays
        stored_dir = state_dict.get("dirpath", self.dirpath)
        if trainer is None or stored_dir == self.dirpath or "://" in f"{stored_dir}{self.dirpath}":
            return super().load_state_dict(state_dict)
        if self.monitor is None:  # the newest file (e.g. last.ckpt), nothing selected: Lightning's restore, quietly
            self.best_model_path = state_dict["best_model_path"]
            return None
        found: tuple[dict[str, Any], list[str]] = ({}, [])
        if trainer.is_global_zero:
            found = carry_best_k(state_dict, self.dirpath, trainer.ckpt_path, self.mode)
        attributes, self.lost_on_resume = trainer.strategy.broadcast(found)  # after rank 0's copies
        for name, value in attributes.items():
            setattr(self, name, value)
        if self.lost_on_resume and trainer.is_global_zero:
            gone = ", ".join(self.lost_on_resume)
            if attributes:
                what = f"the top-{self.save_top_k} checkpoint {gone}", f"keeping the others (best: {self.best_model_path})"
            else:
                what = f"the best checkpoint {gone}", ("model selection restarts with this run's validations "
                                                       "(best_epoch, best_checkpoint and val/ metrics of metrics.json)")
            log.warning("Resuming %s into %s: %s of the original run is not found (nor next to the resumed "
                        "checkpoint): %s", trainer.ckpt_path, self.dirpath, *what)
        return None

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        """The logs on disk reach as far as the checkpoint (a resumed run appends to them)."""
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.save()


def epoch_seed(base: int, epoch: int, rank: int = 0) -> int:
    """The seed of the global RNGs for training epoch ``epoch`` of process ``rank`` (numpy ``SeedSequence``)."""
    words = [int(base) % (1 << 63), int(epoch), int(rank), 7]
    return int(np.random.SeedSequence(words).generate_state(1, dtype=np.uint32)[0])


class EpochSeed(pl.Callback):
    """Reseeds torch (all devices), numpy and ``random`` at the first training batch of every epoch with
    :func:`epoch_seed` ``(base, epoch, rank)``: what the global RNG drives during training (dropout, edge
    dropout) is then a function of the epoch alone, so a run resumed from an epoch-end checkpoint draws
    exactly what the uninterrupted run drew. (Restoring a saved RNG state would not be enough: Lightning
    creates the train iterator, which draws from the global RNG, before the restore on resume but after the
    checkpoint in the uninterrupted run.) ``base``: the run's ``seed``, else ``torch.initial_seed()`` of the
    first start (kept in the checkpoint)."""

    def __init__(self, base: int | None = None) -> None:
        self.base = base

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.base is None:
            self.base = int(torch.initial_seed())

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        if batch_idx != 0:
            return
        seed = epoch_seed(self.base if self.base is not None else 0, trainer.current_epoch, trainer.global_rank)
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)

    def state_dict(self) -> dict[str, Any]:
        return {"base": self.base}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("base") is not None:
            self.base = int(state_dict["base"])


class NonFiniteLossError(RecsysError):
    """The training loss became NaN or infinite (a diverging learning rate, bad data, an overflow)."""


class FiniteLossCheck(pl.Callback):
    """Stops training with :class:`NonFiniteLossError` at the first NaN/inf training loss, naming the epoch,
    the step and the last good checkpoint.

    Per step one ``torch.isfinite`` on the loss. On CPU it is read at once; on an accelerator the first bad
    ``(epoch, batch, global step)`` is recorded on the device and read every ``check_every_n_steps`` steps and at
    the last batch of every epoch (before validation and the epoch-end checkpoints), so the check adds no
    host-device synchronisation to the other steps."""

    def __init__(self, check_every_n_steps: int = 50, defer: bool | None = None) -> None:
        if check_every_n_steps < 1:
            raise ValueError(f"check_every_n_steps must be >= 1, got {check_every_n_steps}")
        self.check_every_n_steps = check_every_n_steps
        self.defer = defer  # None: defer the read on accelerators only
        self._first_bad: torch.Tensor | None = None

    @staticmethod
    def _loss(outputs: Any) -> torch.Tensor | None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        return loss if torch.is_tensor(loss) else None

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = self._loss(outputs)
        if loss is None:
            return
        bad = ~torch.isfinite(loss.detach()).all()
        where = (trainer.current_epoch, batch_idx, trainer.global_step)
        if not (self.defer if self.defer is not None else loss.device.type != "cpu"):
            if bool(bad):
                self._raise(trainer, loss.detach(), *where)
            return
        here = torch.tensor(where, device=loss.device)
        if self._first_bad is None:
            self._first_bad = torch.full((3,), -1, dtype=here.dtype, device=loss.device)
        self._first_bad = torch.where(bad & (self._first_bad[0] < 0), here, self._first_bad)
        last = trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        if last or (batch_idx + 1) % self.check_every_n_steps == 0:
            first = [int(v) for v in self._first_bad.tolist()]
            if first[0] >= 0:
                self._raise(trainer, None, *first)

    def _raise(self, trainer: pl.Trainer, loss: torch.Tensor | None, epoch: int, batch: int, step: int) -> None:
        value = f" ({loss.float().mean().item()})" if loss is not None else ""
        raise NonFiniteLossError(
            f"training loss is not finite{value} at epoch {epoch}, batch {batch} (global step {step}); "
            f"{last_good_checkpoint(trainer)}. Lower model.optimizer.lr (or check the data) and train again "
            "(resuming restores the optimiser with its stored learning rate)"
        )


def last_good_checkpoint(trainer: pl.Trainer) -> str:
    """'last good checkpoint: <path>' of the newest checkpoint written by this run, or that none was written."""
    paths = []
    for cb in trainer.checkpoint_callbacks:
        for p in (getattr(cb, "last_model_path", ""), getattr(cb, "best_model_path", "")):
            if p and Path(p).is_file():
                paths.append(Path(p))
    if not paths:
        return "no checkpoint was written before it"
    return f"last good checkpoint: {max(paths, key=lambda p: p.stat().st_mtime_ns)}"


class PerUserResults(pl.Callback):
    """Writes the test's per-user rows (:mod:`recsys.utils.per_user`: ``per_user.parquet``) into ``output_dir``
    on rank 0.

    Runs at the end of the test epoch, before the module's own ``on_test_epoch_end`` (Lightning calls the
    callbacks' hook first), which computes the metrics and resets their kept rows."""

    def __init__(self, output_dir: str | Path) -> None:
        self.output_dir = Path(output_dir)
        self.written: Path | None = None

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metric = getattr(pl_module, "test_metrics", None)
        if not isinstance(metric, TopKMetrics) or not metric.keep_rows:
            return
        ids, values = per_user.gather_rows(trainer, *metric.rows())
        if not trainer.is_global_zero:
            return
        datamodule = trainer.datamodule
        units = getattr(datamodule, "evaluation_units", None)
        if units is None or len(ids) == 0:
            log.warning("No per-user test results to write (%s)", "no rows" if len(ids) == 0 else "no datamodule")
            return
        import pandas as pd

        frame = pd.DataFrame({**units("test", ids), **dict(zip(metric.row_columns, values.T, strict=True))})
        self.written = per_user.write_table(frame, self.output_dir)
        log.info("Wrote %s (%d rows)", self.written, len(frame))
