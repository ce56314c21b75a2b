"""Build named collections of callbacks / loggers from config groups (each entry has ``_target_``)."""

from __future__ import annotations

import logging

from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning import Callback
from pytorch_lightning.loggers import Logger

from recsys.utils.dashboards import fill_wandb_defaults, wandb_has_credentials  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)


def instantiate_callbacks(cfg: DictConfig | None) -> list[Callback]:
    if not cfg:
        return []
    if not isinstance(cfg, DictConfig):
        raise TypeError("callbacks config must be a mapping of name -> {_target_: ...}")
    return [instantiate(c) for c in cfg.values() if isinstance(c, DictConfig) and "_target_" in c]


def instantiate_loggers(cfg: DictConfig | None) -> list[Logger]:
    """Instantiate loggers; a wandb logger gets its sweep group/run name and, without credentials (and no
    WANDB_MODE), runs offline (see :mod:`recsys.utils.dashboards`)."""
    if not cfg:
        return []
    loggers = []
    for name, c in cfg.items():
        if not (isinstance(c, DictConfig) and "_target_" in c):
            continue
        if "WandbLogger" in c._target_:
            fill_wandb_defaults(c, c.get("job_type"))
        loggers.append(instantiate(c))
        log.info("Logger %s: %s", name, type(loggers[-1]).__name__)
    return loggers
