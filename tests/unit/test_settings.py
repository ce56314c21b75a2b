"""One declaration per setting (recsys.settings): the class that owns a setting declares what values it takes; its
constructor and validate_config run that declaration and give the same one-line message."""

from __future__ import annotations

import copy
import fnmatch
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from recsys.builders import instantiate_group
from recsys.errors import ConfigError
from recsys.info import DatasetInfo, SessionInfo, SessionSequences, UserItemCSR
from recsys.settings import (
    DROP_RATES,
    POSITIVE_INT,
    Relation,
    check_settings,
    declared_keys,
    either,
    one_of,
    optional,
    show,
)
from recsys.validation import OWNED_GROUPS, RULES, owners, validate_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
#: candidate bad values; every declared setting refuses at least one of them
BAD_VALUES = (-1, 1.5, "x")


def compose_cfg(*overrides: str) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides), return_hydra_config=True)


def group_files() -> list[tuple[str, str]]:
    return [(group, p.stem) for group in OWNED_GROUPS for p in sorted((CONFIGS / group).glob("*.yaml"))]


@cache
def file_cfg(group: str, name: str) -> DictConfig:
    """The train config with ``group=name``, and a model of the data's kind (session data, GRU4Rec's sampler)."""
    session = name == "gru4rec" or (group == "data" and "session" in OmegaConf.load(CONFIGS / group / f"{name}.yaml")._target_)
    return compose_cfg(f"{group}={name}", *(["model=gru4rec"] if session and group != "model" else []))


def validation_error(cfg: DictConfig) -> str:
    with pytest.raises(ConfigError) as info:
        validate_config(cfg, "train")
    return str(info.value)


# ---------------------------------------------------------------------------------------------- the declarations
def test_values_describe_themselves_in_the_one_message_format():
    assert show([1, 2]) == "[1,2]" and show(None) == "null" and show((0.1, 1.5)) == "[0.1,1.5]"
    assert optional(POSITIVE_INT).description == "null or an integer > 0"
    assert either(one_of("auto"), POSITIVE_INT).description == "auto or an integer > 0"
    assert DROP_RATES.test(0.5) and DROP_RATES.test([0.1, 0.2]) and not DROP_RATES.test([]) and not DROP_RATES.test(1)
    assert not POSITIVE_INT.test(True) and not POSITIVE_INT.test(2.0) and POSITIVE_INT.test(np.int64(2))

    class Owner:
        settings = {"size": POSITIVE_INT, "mode": one_of("a", "b")}
        relations = (Relation("size", ("width",), lambda v: v["width"] % v["size"] == 0, "a divisor of {width}"),)

    check_settings("model", {"size": 2, "width": 4, "other": -1}, Owner)  # undeclared keys are not checked
    with pytest.raises(ConfigError, match=r"^model\.mode=c: must be one of a, b$"):
        check_settings("model", {"mode": "c"}, Owner)
    with pytest.raises(ConfigError, match=r"^model\.size=3: must be a divisor of model\.width=4$"):
        check_settings("model", {"size": 3, "width": 4}, Owner)
    assert declared_keys(Owner) == ["size", "mode", "width"]


# ------------------------------------------------------------------------- (a) every declared key of every file
@pytest.mark.parametrize(("group", "name"), group_files())
def test_every_declared_setting_of_a_config_file_is_checked_before_any_work(group, name):
    cfg = file_cfg(group, name)
    validate_config(cfg, "train")  # the shipped file is valid
    classes = owners(cfg, group)
    settings = {k: v for cls in reversed(classes) for k, v in getattr(cls, "settings", {}).items()}
    keys = [k for k in settings if k in cfg[group]]
    assert keys, f"{group}={name}: its classes {classes} declare no setting of the file"
    for key in keys:
        bad = [v for v in BAD_VALUES if not settings[key].test(v)]
        assert bad, f"{group}.{key}: no bad value among {BAD_VALUES}"
        for value in bad:
            broken = copy.deepcopy(cfg)
            OmegaConf.update(broken, f"{group}.{key}", value)
            message = validation_error(broken)
            assert message.startswith(f"{group}.{key}={show(value)}: must be "), (name, message)


# --------------------------------------------------------------------- (b) the constructor: the same message
def graph_info() -> DatasetInfo:
    users, items = torch.tensor([0, 0, 1, 2, 2, 3]), torch.tensor([0, 1, 1, 2, 3, 0])
    return DatasetInfo(4, 4, UserItemCSR.from_pairs(users, items, 4, 4))


def session_info() -> SessionInfo:
    train = SessionSequences.from_lengths([3, 2], [0, 1, 2, 3, 1], np.arange(5, dtype=np.float64))
    return SessionInfo(4, torch.tensor([1, 2, 1, 1]), 4, 0, 0.0, train, "sequences", None)


@pytest.mark.parametrize("overrides", [
    ["model.edge_dropout=1.0"], ["model.reg_weight=-1"], ["model.topk=[10,0]"], ["model.init=uniform"],
    ["model=ngcf", "model.message_dropout=[0.1,0.1]"],  # a relation: one rate per layer
    ["model=simgcl", "model.num_layers=0"], ["model=simgcl", "model.temperature=0"],
    ["model=xsimgcl", "model.cross_layer=3"],  # a relation across the module and its encoder
    ["model=sasrec", "model.embedding_dim=10", "model.num_heads=3"], ["model=sasrec", "model.loss=softmax"],
    ["model=gru4rec", "model.dropout_hidden=1"], ["model=gru4rec", "model.embedding=dense"],
])
def test_a_model_constructor_raises_the_validation_message(overrides):
    cfg = compose_cfg(*overrides)
    message = validation_error(cfg)
    info = session_info() if "session" in cfg.data._target_ else graph_info()
    with pytest.raises(ConfigError) as built:
        instantiate_group(cfg.model, "model", info=info, _convert_="object")
    assert str(built.value) == message


@pytest.mark.parametrize(("group", "overrides"), [
    ("data", ["data.batch_size=0"]), ("data", ["data.steps_per_chunk=fast"]), ("data", ["data.num_workers=-1"]),
    ("data", ["data=gowalla", "data.validate_fraction=1.0"]), ("data", ["model=sasrec", "data.windows=every"]),
    ("data", ["model=gru4rec", "data.eval_batch_size=0"]),
    ("sampler", ["sampler=hard", "sampler.candidates=0"]), ("sampler", ["sampler=in_batch", "sampler.num_negatives=0"]),
    ("sampler", ["sampler=popularity", "sampler.alpha=-1"]), ("sampler", ["sampler.n_sample=-2"]),
])
def test_a_datamodule_or_sampler_constructor_raises_the_validation_message(group, overrides):
    cfg = compose_cfg(*overrides)
    message = validation_error(cfg)
    with pytest.raises(ConfigError) as built:
        instantiate_group(cfg[group], group)
    assert str(built.value) == message


# ------------------------------------------------------------------- (c) RULES keep to the settings nobody owns
def test_rules_hold_no_setting_a_class_declares():
    owned = {f"{group}.{key}" for group, name in group_files()
             for key in declared_keys(*owners(file_cfg(group, name), group))}
    assert {"model.topk", "model.edge_dropout", "data.batch_size", "sampler.num_negatives"} <= owned
    clashes = sorted((rule.pattern, key) for rule in RULES for key in owned if fnmatch.fnmatchcase(key, rule.pattern))
    assert not clashes, f"RULES repeat settings their classes declare: {clashes}"
