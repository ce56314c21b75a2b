"""Trainer device settings, including the ``trainer.gpus=N`` shorthand removed in Lightning 2."""

from __future__ import annotations

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from recsys.errors import ConfigError
from recsys.models.chunked import StepOptions

#: trainer keys of Lightning's automatic loop that recsys's chunked steps implement (:class:`StepOptions`)
STEP_KEYS = ("accumulate_grad_batches", "gradient_clip_val", "gradient_clip_algorithm")


def visible_gpus() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve_trainer_config(trainer_cfg: DictConfig) -> DictConfig:
    """Copy of the trainer config with ``gpus`` translated, device requests checked up front and the
    :data:`STEP_KEYS` left out (Lightning refuses them under manual optimisation; :func:`step_options` hands them
    to the model).

    ``trainer.gpus=N`` → ``accelerator=gpu, devices=N`` and ``strategy=ddp`` when N > 1 (unless a
    strategy was chosen). Asking for more GPUs than are visible fails here, before any data is loaded.
    """
    cfg = OmegaConf.create(OmegaConf.to_container(trainer_cfg, resolve=True))
    with open_dict(cfg):
        gpus = cfg.pop("gpus", None)
        for key in STEP_KEYS:
            cfg.pop(key, None)
    if gpus is not None:
        if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 1:
            raise ConfigError(f"trainer.gpus must be a positive number of GPUs, got {gpus!r}")
        cfg.accelerator = "gpu"
        cfg.devices = gpus
        if gpus > 1 and cfg.get("strategy") in (None, "auto"):
            cfg.strategy = "ddp"
    if str(cfg.get("accelerator")) in ("gpu", "cuda"):
        wanted = cfg.get("devices")
        count = wanted if isinstance(wanted, int) and wanted > 0 else len(wanted) if isinstance(wanted, (list, tuple)) else 1
        have = visible_gpus()
        if have < count:
            key = f"trainer.gpus={gpus}" if gpus is not None else f"trainer.accelerator={cfg.accelerator} trainer.devices={wanted}"
            raise ConfigError(
                f"{key} asks for {count} GPU(s) but {have or 'none'} "
                f"{'is' if have <= 1 else 'are'} visible; train on CPU with trainer=cpu (or drop trainer.gpus)"
            )
    return cfg


def step_options(trainer_cfg: DictConfig) -> StepOptions:
    """``trainer.accumulate_grad_batches``, ``trainer.gradient_clip_val`` and ``trainer.gradient_clip_algorithm``
    as the chunked training loop takes them (:class:`~recsys.models.chunked.StepOptions`; Lightning's defaults
    where unset)."""
    given = {k: trainer_cfg.get(k) for k in STEP_KEYS if trainer_cfg.get(k) is not None}
    if "gradient_clip_algorithm" in given:
        given["gradient_clip_algorithm"] = str(given["gradient_clip_algorithm"]).lower()
    return StepOptions(**given)
