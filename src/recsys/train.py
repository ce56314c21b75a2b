"""``python train.py``: fit, validate, test the best checkpoint and write the run artifacts."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from recsys.builders import build_datamodule, build_model
from recsys.models.chunked import ChunkedTraining
from recsys.utils.allocator import retain_freed_memory
from recsys.utils.callbacks import (
    BestMetricTracker,
    ConfigInCheckpoint,
    EpochSeed,
    FiniteLossCheck,
    PerUserResults,
    ValidateLastEpoch,
)
from recsys.utils.checkpoint_io import AtomicCheckpointIO
from recsys.utils.dashboards import log_summary
from recsys.utils.ddp import ResetMetricStates
from recsys.utils.devices import resolve_trainer_config, step_options
from recsys.utils.instantiators import instantiate_callbacks, instantiate_loggers
from recsys.utils.loggers import CSVLogger
from recsys.utils.plots import csv_logger, curves_at_end
from recsys.utils.resume import fit_checkpoint
from recsys.utils.run import metric_value, run_task, write_metrics
from recsys.validation import validate_against_data

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train ``cfg.model`` on ``cfg.data``; return the flat metrics written to ``metrics.json``."""
    trainer_cfg = resolve_trainer_config(cfg.trainer)  # fails fast on impossible device requests
    steps = step_options(cfg.trainer)  # accumulation and clipping, taken by the chunked training loop
    # ckpt_path=last / a run folder / a file -> the checkpoint to resume from (recsys.utils.resume)
    resume_from = fit_checkpoint(cfg.get("ckpt_path"), cfg.paths.output_dir) if cfg.get("train") else None
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)

    datamodule = build_datamodule(cfg)
    validate_against_data(cfg, datamodule)  # K <= number of items of the loaded data
    model = build_model(cfg, datamodule)
    if isinstance(model, ChunkedTraining):
        model.step_options = steps
    num_parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)

    tracker = BestMetricTracker(cfg.monitor.metric, cfg.monitor.mode)
    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    # EpochSeed: the global RNG (dropout) per epoch from (seed, epoch), exact on resume; FiniteLossCheck: NaN/inf stop
    callbacks += [tracker, EpochSeed(cfg.get("seed")), FiniteLossCheck(), ValidateLastEpoch(),
                  ConfigInCheckpoint(OmegaConf.to_container(cfg, resolve=True)), ResetMetricStates(),
                  PerUserResults(cfg.paths.output_dir)]  # per_user.parquet of the test
    loggers = instantiate_loggers(cfg.get("logger"))
    if csv_logger(loggers) is None:  # plots/curves.png (and a resumed run's log) come from the CSV log
        loggers.append(CSVLogger(save_dir=cfg.paths.output_dir, name="csv", version=""))
    for lg in loggers:  # a resumed run continues its CSV log
        if resume_from and hasattr(lg, "append"):
            lg.append = True
    trainer: pl.Trainer = instantiate(trainer_cfg, callbacks=callbacks, logger=loggers or False,
                                      plugins=[AtomicCheckpointIO()])  # checkpoints appear whole or not at all
    for lg in loggers:
        lg.log_hyperparams({"cfg": OmegaConf.to_container(cfg, resolve=True), "num_parameters": num_parameters})

    metrics: dict[str, Any] = {"num_parameters": num_parameters, "fit_seconds": 0.0, "test_seconds": 0.0}
    if getattr(datamodule, "validate_on_test", False):
        log.warning("data.validate_on_test=true: model selection uses the TEST split (the papers' protocol)")
    metrics["validate_on_test"] = bool(getattr(datamodule, "validate_on_test", False))

    trainable = num_parameters > 0
    resume_from = resume_from if trainable else None
    if resume_from:
        log.info("Resuming training from %s", resume_from)
        metrics["resumed_from"] = resume_from
    if cfg.get("train"):
        start = time.perf_counter()
        if trainable:
            trainer.fit(model, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)
        else:  # e.g. MostPop: nothing to fit, evaluate once
            trainer.validate(model, datamodule=datamodule)
            tracker.on_validation_end(trainer, model)
        metrics["fit_seconds"] = time.perf_counter() - start
        # best-k checkpoints of the resumed run found nowhere (recsys.utils.resume.carry_best_k)
        lost = sorted({p for cb in trainer.checkpoint_callbacks for p in getattr(cb, "lost_on_resume", [])})
        if lost:
            metrics["resumed_from_lost"] = lost
        metrics.update(tracker.best_metrics)
        metrics["best_epoch"] = tracker.best_epoch
        metrics["epochs_trained"] = trainer.current_epoch

    if cfg.get("test"):
        ckpt = None
        checkpoint_cb = trainer.checkpoint_callback
        if trainable and checkpoint_cb is not None and getattr(checkpoint_cb, "best_model_path", ""):
            ckpt = checkpoint_cb.best_model_path
            metrics["best_checkpoint"] = ckpt
        elif trainable:
            log.warning("No best checkpoint (checkpointing off or no validation ran): testing current weights")
        start = time.perf_counter()
        trainer.test(model, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
        metrics["test_seconds"] = time.perf_counter() - start
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")})
        metrics["data_identity"] = datamodule.identity  # scripts/compare.py pairs only runs of the same data

    write_metrics(Path(cfg.paths.output_dir) / "metrics.json", metrics)
    log_summary(loggers, metrics)
    curves_at_end(cfg.paths.output_dir, loggers, cfg.monitor.metric, trainer.is_global_zero)  # plots/curves.png
    return metrics


def main(cfg: DictConfig) -> float | None:
    """Hydra task: train and return ``cfg.optimized_metric`` for sweepers."""
    retain_freed_memory()
    metrics = run_task(train, cfg)
    return metric_value(metrics, cfg.get("optimized_metric"))
