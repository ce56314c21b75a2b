"""Composition of the run objects from the Hydra config (shared by train and eval)."""

from __future__ import annotations

import logging

import pytorch_lightning as pl
from hydra.utils import get_class, instantiate
from hydra.errors import InstantiationException
from omegaconf import DictConfig

from recsys.errors import ConfigError, RecsysError

log = logging.getLogger(__name__)


def build_datamodule(cfg: DictConfig) -> pl.LightningDataModule:
    """DataModule from ``cfg.data`` with the negative sampler of ``cfg.sampler``; set up for fitting."""
    sampler = instantiate(cfg.sampler) if cfg.get("sampler") else None
    try:
        datamodule = instantiate(cfg.data, negative_sampler=sampler)
    except InstantiationException as err:  # a data source's own ConfigError/DataError: report it plainly
        if isinstance(err.__cause__, RecsysError):
            raise err.__cause__ from None
        raise
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
    try:
        return instantiate(cfg.model, info=datamodule.info, _convert_="object")
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, (TypeError, ValueError)):  # unknown key / impossible value in cfg.model
            raise ConfigError(f"model ({cfg.model._target_}): {cause}") from err
        raise
