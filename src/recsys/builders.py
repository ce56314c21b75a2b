"""Composition of the run objects from the Hydra config (shared by train and eval)."""

from __future__ import annotations

import logging
from typing import Any

import pytorch_lightning as pl
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig

from recsys.errors import ConfigError, RecsysError
from recsys.validation import check_kinds, check_train_batches

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
    """DataModule from ``cfg.data`` with the negative sampler of ``cfg.sampler``; set up for fitting. With a
    ``cfg.model``, the model must train on that kind of data (:func:`recsys.validation.check_kinds`, before any
    data is read)."""
    if cfg.get("model") and cfg.model.get("_target_") and cfg.data.get("_target_"):
        check_kinds(cfg, get_class(cfg.model._target_), get_class(cfg.data._target_))
    sampler = instantiate_group(cfg.sampler, "sampler") if cfg.get("sampler") else None
    datamodule = instantiate_group(cfg.data, "data", negative_sampler=sampler)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def build_model(cfg: DictConfig, datamodule: pl.LightningDataModule) -> pl.LightningModule:
    """Model from ``cfg.model``, given the DataModule's ``info`` (sizes, train graph); the model must train on the
    DataModule's kind of data (:func:`recsys.validation.check_kinds`)."""
    model_cls = get_class(cfg.model._target_)
    check_kinds(cfg, model_cls, type(datamodule))
    info = datamodule.info
    if hasattr(info, "train_batches"):
        check_train_batches(cfg, model_cls, info.train_batches)
    return instantiate_group(cfg.model, "model", info=info, _convert_="object")
