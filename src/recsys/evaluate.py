"""``python eval.py ckpt_path=...``: test a checkpoint with the data and model config it was trained with."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from recsys.builders import build_datamodule, build_model
from recsys.errors import ConfigError
from recsys.runs import merge_data_overrides
from recsys.utils.callbacks import PerUserResults
from recsys.utils.ddp import ResetMetricStates
from recsys.utils.devices import resolve_trainer_config
from recsys.utils.instantiators import instantiate_loggers
from recsys.utils.run import run_task, write_metrics

log = logging.getLogger(__name__)


def load_run_config(ckpt_path: str | Path) -> DictConfig:
    """The resolved training config stored in a checkpoint (read with ``weights_only=True``)."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise ConfigError(f"ckpt_path={str(ckpt_path)!r}: no such checkpoint file")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if "recsys_config" not in payload:
        raise ConfigError(f"ckpt_path={str(ckpt_path)!r} was not written by recsys (no 'recsys_config' entry)")
    return OmegaConf.create(payload["recsys_config"])


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Rebuild data and model from the checkpoint's config (``data``/``model``/``sampler``, with
    any ``data.*`` overrides from the command line), load the weights and run the test split."""
    trainer_cfg = resolve_trainer_config(cfg.trainer)
    run_cfg = load_run_config(cfg.ckpt_path)
    if cfg.get("data"):
        merge_data_overrides(run_cfg, cfg.data)
    datamodule = build_datamodule(run_cfg)
    model = build_model(run_cfg, datamodule)
    loggers = instantiate_loggers(cfg.get("logger"))
    callbacks = [ResetMetricStates(), PerUserResults(cfg.paths.output_dir)]  # + per_user.parquet
    trainer: pl.Trainer = instantiate(trainer_cfg, logger=loggers or False, callbacks=callbacks)
    start = time.perf_counter()
    trainer.test(model, datamodule=datamodule, ckpt_path=cfg.ckpt_path, weights_only=True)
    metrics: dict[str, Any] = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
    metrics["test_seconds"] = time.perf_counter() - start
    metrics["ckpt_path"] = str(cfg.ckpt_path)
    metrics["data_identity"] = datamodule.identity
    write_metrics(Path(cfg.paths.output_dir) / "metrics.json", metrics)
    return metrics


def main(cfg: DictConfig) -> None:
    run_task(evaluate, cfg)
