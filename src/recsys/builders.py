"""Composition of the run objects from the Hydra config (shared by train and eval)."""

from __future__ import annotations

import logging
from typing import Any

import pytorch_lightning as pl
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig

from recsys.errors import ConfigError, RecsysError

log = logging.getLogger(__name__)


def instantiate_group(node: DictConfig, group: str, **kwargs: Any) -> Any:
    """``instantiate(node, **kwargs)`` reporting user errors plainly: our own ``RecsysError`` as it is, and
    ``TypeError``/``ValueError`` from a constructor (unknown key, impossible value) as a ``ConfigError``
    naming the config group."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, RecsysError):
            raise cause from None
        if isinstance(cause, (TypeError, ValueError)):
            raise ConfigError(f"{group} ({node.get('_target_')}): {cause}") from None
        raise


def build_datamodule(cfg: DictConfig) -> pl.LightningDataModule:
    """DataModule from ``cfg.data`` with the negative sampler of ``cfg.sampler``; set up for fitting."""
    sampler = instantiate_group(cfg.sampler, "sampler") if cfg.get("sampler") else None
    datamodule = instantiate_group(cfg.data, "data", negative_sampler=sampler)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def build_model(cfg: DictConfig, datamodule: pl.LightningDataModule) -> pl.LightningModule:
    """Model from ``cfg.model``, given the DataModule's ``info`` (sizes, train graph)."""
    model_kind = getattr(get_class(cfg.model._target_), "data_kind", "graph")
    data_kind = getattr(datamodule, "kind", "graph")
    if model_kind != data_kind:
        raise ConfigError(
            f"model {cfg.model._target_.rsplit('.', 1)[-1]} needs {model_kind} data but data={cfg.data._target_.rsplit('.', 1)[-1]} "
            f"is {data_kind} data; choose a {model_kind} dataset (e.g. data=synthetic_{'sessions' if model_kind == 'session' else 'graph'})"
        )
    return instantiate_group(cfg.model, "model", info=datamodule.info, _convert_="object")
