"""Every config file composes, and every `_target_` in it names something importable."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
GROUPS = ["data", "model", "sampler", "trainer", "callbacks", "logger", "experiment", "debug", "hparams_search", "paths", "extras"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


def compose_train(*overrides: str) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides), return_hydra_config=True)


def targets(node) -> list[str]:
    found = []
    if isinstance(node, DictConfig):
        for key in node:
            if key == "_target_":
                found.append(node[key])
            else:
                found.extend(targets(node._get_node(key)))
    elif isinstance(node, ListConfig):
        for item in node:
            found.extend(targets(item))
    return found


def test_required_groups_exist_and_are_used():
    cfg = compose_train()
    for group in ["data", "model", "sampler", "trainer", "logger", "callbacks", "paths"]:
        assert group in cfg, group
    for group in ["data", "model", "sampler", "trainer", "logger", "callbacks", "paths", "hydra", "debug", "experiment"]:
        assert (CONFIGS / group).is_dir(), group
    choices = cfg.hydra.runtime.choices
    assert choices["data"] == "synthetic_graph" and choices["model"] == "lightgcn" and choices["sampler"] == "uniform"


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_config_composes_and_targets_import(group, option):
    cfg = compose_train(f"{group}={option}")
    for target in targets(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])):
        assert get_object(target) is not None, target


def test_eval_config_composes():
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="eval", overrides=["ckpt_path=x.ckpt"], return_hydra_config=True)
    assert cfg.ckpt_path == "x.ckpt" and cfg.task_name == "eval"


def test_trainer_gpus_is_declared_for_the_command_line():
    cfg = compose_train("trainer.gpus=2")
    assert cfg.trainer.gpus == 2
