"""Build named collections of callbacks / loggers from config groups (each entry has ``_target_``)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict
from pytorch_lightning import Callback
from pytorch_lightning.loggers import Logger

log = logging.getLogger(__name__)


def instantiate_callbacks(cfg: DictConfig | None) -> list[Callback]:
    if not cfg:
        return []
    if not isinstance(cfg, DictConfig):
        raise TypeError("callbacks config must be a mapping of name -> {_target_: ...}")
    return [instantiate(c) for c in cfg.values() if isinstance(c, DictConfig) and "_target_" in c]


def wandb_has_credentials() -> bool:
    """Whether wandb could log in: an API key in the environment or in ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


def instantiate_loggers(cfg: DictConfig | None) -> list[Logger]:
    """Instantiate loggers; a wandb logger without credentials (and no WANDB_MODE) runs offline."""
    if not cfg:
        return []
    loggers = []
    for name, c in cfg.items():
        if not (isinstance(c, DictConfig) and "_target_" in c):
            continue
        if "WandbLogger" in c._target_ and not c.get("offline") and "WANDB_MODE" not in os.environ and not wandb_has_credentials():
            log.warning("No wandb credentials found: logging offline. Upload later with `wandb sync %s`", c.get("save_dir"))
            with open_dict(c):
                c.offline = True
        loggers.append(instantiate(c))
        log.info("Logger %s: %s", name, type(loggers[-1]).__name__)
    return loggers
