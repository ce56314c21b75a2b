"""Configuration checks that run before any work: before data is loaded and before the run folder exists.

* ``validate_config(cfg, task)``: the table ``RULES`` of (key pattern, values) for the settings no class of ours
  owns (optimiser learning rates, Lightning's ``trainer.*``, the ``recommend`` task's ``k`` and ``chunk_size``);
  the settings of ``model``, ``data`` and ``sampler``, each checked by the class that owns it
  (:func:`check_owned_settings`: the node's ``_target_`` class, and for a graph model its ``encoder._target_``,
  declare ``settings`` and ``relations``, :mod:`recsys.settings`, that their constructors run too, so a bad value
  gets the same message before any work and from the constructor); the model/data kind check
  (:func:`check_kinds`, naming the matching model, e.g. ``model=session_pop``), K against the synthetic sources'
  ``num_items`` and the device request (``recsys.utils.devices.resolve_trainer_config``).
* ``check_kinds(cfg, model_cls, data_cls)``: the one model/data kind check, run on the config's targets by
  ``validate_config`` and on the built DataModule by :func:`recsys.builders.build_model`.
* ``ValidateConfig``: the Hydra callback (``hydra.callbacks.validate_config``) that runs it in
  ``on_run_start`` (before Hydra's ``run_job`` creates the run folder) and, for a basic-sweeper multirun, over
  every job's composed config in ``on_multirun_start`` (before the sweep folder exists). Other sweepers
  (Optuna) are validated per job in ``on_job_start``, when that job's folder already exists.
* ``check_group_choices(argv, config_dir)``: unknown config-group choices on the command line
  (``sampler=nosuch``), checked by the root scripts before Hydra composes anything.
* ``validate_against_data(cfg, datamodule)``: K against the number of items of a loaded dataset.

A failure is one ``ConfigError`` naming the key, the value and what is valid; the CLI prints ``error: …`` and
exits with code 2.
"""

from __future__ import annotations

import fnmatch
import itertools
import math
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra import compose
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from hydra.utils import get_class
from omegaconf import DictConfig, ListConfig, OmegaConf

from recsys.errors import ConfigError
from recsys.settings import (
    NON_NEGATIVE_INT,
    POSITIVE_INT,
    POSITIVE_NUMBER,
    Values,
    check_settings,
    declared_keys,
    invalid,
    is_int,
    optional,
    show,
)
from recsys.utils.devices import resolve_trainer_config, step_options

# ---------------------------------------------------------------------------------------------------------------
# the settings no class of ours owns

#: Lightning's epoch/step limits: a non-negative int, -1 (Lightning's 'unlimited'), or null
EPOCHS = Values(lambda v: v is None or (is_int(v) and v >= -1), "an integer >= 0, or -1 for no limit (Lightning)")


@dataclass(frozen=True)
class Rule:
    """``pattern``: a dotted key, ``*`` matching any run of characters (``*.lr`` = every ``lr`` at any depth)."""

    pattern: str
    values: Values
    tasks: tuple[str, ...] = ("train",)


#: settings of torch's optimisers, Lightning's trainer and the recommend task; a setting of a class of ours is
#: declared by that class instead (:mod:`recsys.settings`, :data:`OWNED_GROUPS`)
RULES: tuple[Rule, ...] = (
    Rule("*.lr", Values(POSITIVE_NUMBER.test, "a learning rate > 0")),
    Rule("trainer.max_epochs", EPOCHS, ("train", "eval")),
    Rule("trainer.min_epochs", optional(NON_NEGATIVE_INT)),
    Rule("trainer.max_steps", EPOCHS),
    Rule("trainer.check_val_every_n_epoch", optional(POSITIVE_INT)),
    Rule("k", POSITIVE_INT, ("recommend",)),
    Rule("chunk_size", POSITIVE_INT, ("recommend",)),
)

#: the config groups whose ``_target_`` class declares the settings of the node (checked in the train task)
OWNED_GROUPS = ("model", "data", "sampler")

# the model of the other data kind to suggest: model=pop on session data -> model=session_pop
MATCHING_MODEL = {
    ("pop", "session"): "session_pop",
    ("session_pop", "graph"): "pop",
    ("spop", "graph"): "pop",
    ("item_knn", "graph"): "lightgcn",
    ("gru4rec", "graph"): "lightgcn",
    ("sasrec", "graph"): "lightgcn",
}
DEFAULT_MATCH = {"session": "gru4rec", "graph": "lightgcn"}
SAMPLERS_OF = {"graph": ("uniform", "popularity", "in_batch", "hard"), "session": ("gru4rec", "uniform", "popularity")}
EXAMPLE_DATA = {"session": "synthetic_sessions", "graph": "synthetic_graph"}


# ---------------------------------------------------------------------------------------------------------------
# the checks


NOT_SETTINGS = ("hydra", "optuna")


def _leaves(node: DictConfig, prefix: str = "") -> Iterator[str]:
    """Dotted keys of every non-mapping value (lists are values), outside ``hydra`` and ``optuna`` (a search
    space of sweep expressions, not settings: each trial's values are validated as that trial's config)."""
    for key, child in node.items_ex(resolve=False):
        path = f"{prefix}{key}"
        if path in NOT_SETTINGS:
            continue
        if isinstance(child, DictConfig) and child != None and not OmegaConf.is_missing(node, key):  # noqa: E711
            yield from _leaves(child, f"{path}.")
        else:
            yield path


def _value(cfg: DictConfig, key: str) -> Any:
    value = OmegaConf.select(cfg, key, throw_on_missing=False)
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value


def hydra_choice(group: str) -> str | None:
    """The config-group choice of the running Hydra app (``None`` outside one)."""
    try:
        return HydraConfig.get().runtime.choices.get(group)
    except ValueError:
        return None


def _choice(cfg: DictConfig, group: str) -> str | None:
    """The choice of ``group`` recorded in ``cfg`` (a composed config with its ``hydra`` node), else the running
    app's."""
    choice = OmegaConf.select(cfg, f"hydra.runtime.choices.{group}", default=None)
    return hydra_choice(group) if choice is None else choice


def _check_rules(cfg: DictConfig, task: str) -> None:
    keys = list(_leaves(cfg))
    for rule in RULES:
        if task not in rule.tasks:
            continue
        for key in (k for k in keys if fnmatch.fnmatchcase(k, rule.pattern)):
            value = _value(cfg, key)
            if not rule.values.test(value):
                raise invalid(key, value, rule.values.description)


def owners(cfg: DictConfig, group: str) -> tuple[type, ...]:
    """The classes that declare the settings of the ``group`` node: its ``_target_`` class and the ``_target_``
    classes of the nodes it names in ``settings_from`` (a graph model's ``encoder``); none for an unknown target
    (reported when the node is instantiated, or by :func:`check_kinds`)."""
    node = cfg.get(group)
    cls = _class_or_none(OmegaConf.select(node, "_target_", default=None)) if isinstance(node, DictConfig) else None
    if cls is None:
        return ()
    nested = (_class_or_none(OmegaConf.select(node, f"{key}._target_", default=None))
              for key in getattr(cls, "settings_from", ()))
    return (cls, *(c for c in nested if c is not None))


def check_owned_settings(cfg: DictConfig) -> None:
    """Each node of :data:`OWNED_GROUPS` against the ``settings`` and ``relations`` its classes declare
    (:func:`owners`): the check their constructors run, on the node's resolved values."""
    for group in OWNED_GROUPS:
        classes = owners(cfg, group)
        node = cfg.get(group)
        values = {key: _value(cfg, f"{group}.{key}") for key in declared_keys(*classes)
                  if key in node and not OmegaConf.is_missing(node, key)}
        check_settings(group, values, *classes)


def check_kinds(cfg: DictConfig, model_cls: type, data_cls: type) -> None:
    """The model trains on the kind of data the DataModule gives (``model_cls.data_kind == data_cls.kind``, both
    ``graph`` when unset); else a ``ConfigError`` naming the config choices (from ``cfg``'s ``hydra`` node or the
    running app, else the class names), a dataset of the model's kind and the matching model for the data."""
    model_kind, data_kind = getattr(model_cls, "data_kind", "graph"), getattr(data_cls, "kind", "graph")
    if model_kind == data_kind:
        return
    model_name = _choice(cfg, "model") or model_cls.__name__
    data_name = _choice(cfg, "data") or data_cls.__name__
    hints = [f"choose a {model_kind} dataset (e.g. data={EXAMPLE_DATA[model_kind]})"] if model_kind in EXAMPLE_DATA else []
    match = MATCHING_MODEL.get((model_name, data_kind), DEFAULT_MATCH.get(data_kind))
    hints += [f"model={match} for {data_kind} data"] if match else []
    raise ConfigError(f"model={model_name} needs {model_kind} data but data={data_name} is {data_kind} data; "
                      + " or ".join(hints or ["choose a model and a dataset of the same kind"]))


def check_train_batches(cfg: DictConfig, model_cls: type, given: str | None) -> None:
    """A session model that trains on one kind of batches (its ``train_batches``: ``session_parallel`` or
    ``sequences``) gets them: ``given`` is ``data.train_batches`` (None: the DataModule's default)."""
    wanted = getattr(model_cls, "train_batches", None)
    given = given or "session_parallel"
    if wanted is not None and wanted != given:
        model_name = _choice(cfg, "model") or model_cls.__name__
        raise ConfigError(f"data.train_batches={given}: model={model_name} trains on data.train_batches={wanted} "
                          "(drop the override)")


def _check_kinds(cfg: DictConfig) -> None:
    """:func:`check_kinds` on the classes of ``model._target_`` and ``data._target_``, then the sampler's kind and
    the training batches (:func:`check_train_batches`)."""
    model_target = OmegaConf.select(cfg, "model._target_", default=None)
    data_target = OmegaConf.select(cfg, "data._target_", default=None)
    if not model_target or not data_target:
        return
    try:
        model_cls, data_cls = get_class(model_target), get_class(data_target)
    except Exception as err:
        raise ConfigError(f"model._target_={model_target} / data._target_={data_target}: {err}") from None
    check_kinds(cfg, model_cls, data_cls)
    data_kind = getattr(data_cls, "kind", "graph")
    if data_kind == "session":
        check_train_batches(cfg, model_cls, OmegaConf.select(cfg, "data.train_batches", default=None))
    sampler_target = OmegaConf.select(cfg, "sampler._target_", default=None)
    sampler_kind = getattr(_class_or_none(sampler_target), "data_kind", None)
    if sampler_kind not in (None, data_kind):
        raise ConfigError(f"sampler={_choice(cfg, 'sampler') or sampler_target} draws negatives for {sampler_kind} "
                          f"data but data={_choice(cfg, 'data') or data_cls.__name__} is {data_kind} data; "
                          f"{data_kind} models take sampler={', '.join(SAMPLERS_OF[data_kind])}")


def _class_or_none(target: str | None) -> type | None:
    try:
        return get_class(target) if target else None
    except Exception:
        return None  # an unknown sampler target is reported when it is instantiated


def check_topk(cfg: DictConfig, num_items: int, where: str) -> None:
    """Every K of ``model.topk`` is at most the number of items."""
    topk = _value(cfg, "model.topk")
    if isinstance(topk, list) and topk and all(is_int(k) for k in topk) and max(topk) > num_items:
        raise ConfigError(f"model.topk={show(topk)}: K={max(topk)} exceeds the {num_items} items of {where}; "
                          f"must be integers in [1, {num_items}]")


def _check_devices(cfg: DictConfig) -> None:
    trainer = cfg.get("trainer")
    if not isinstance(trainer, DictConfig):
        return
    keys = [k for k in ("gpus", "accelerator", "devices", "strategy") if k in trainer]
    resolve_trainer_config(OmegaConf.masked_copy(trainer, keys))
    step_options(trainer)  # accumulation and clipping settings


def validate_config(cfg: DictConfig, task: str = "train") -> None:
    """Raise a ``ConfigError`` for the first impossible setting of the composed ``cfg`` of ``task``
    (``train`` | ``eval`` | ``recommend``); reads no data and writes nothing."""
    _check_rules(cfg, task)
    if task == "train":
        check_owned_settings(cfg)
        _check_kinds(cfg)
        num_items = _value(cfg, "data.source.num_items")
        if is_int(num_items):
            check_topk(cfg, num_items, f"data.source (data.source.num_items={num_items})")
    if task in ("train", "eval"):
        _check_devices(cfg)


def validate_against_data(cfg: DictConfig, datamodule: Any) -> None:
    """Checks that need the loaded data (after ``build_datamodule``, before the model is built)."""
    info = getattr(datamodule, "info", None)
    num_items = getattr(info, "num_items", None)
    if is_int(num_items):
        check_topk(cfg, num_items, f"data={_choice(cfg, 'data') or type(datamodule).__name__}")


# ---------------------------------------------------------------------------------------------------------------
# command line and Hydra


def _report(err: ConfigError) -> None:
    print(f"error: {err}", file=sys.stderr, flush=True)
    raise SystemExit(2)


# flags of the Hydra command line that take a value
_FLAGS_WITH_VALUE = {"--config-path", "-cp", "--config-name", "-cn", "--cfg", "-c", "--package", "-p",
                     "--info", "-i", "--experimental-rerun"}


def check_group_choices(argv: Sequence[str], config_dir: str | Path) -> None:
    """``group=choice`` overrides (comma lists of ``-m`` included) must name a file ``configs/<group>/<choice>.yaml``.

    Skipped: ``+``/``~`` overrides, ``hydra/…`` groups (plugins), keys with ``.``, ``null``, sweep functions
    (``choice(...)``), and the whole check when the command line adds config directories."""
    config_dir = Path(config_dir)
    if any(a in ("--config-dir", "-cd") or a.startswith(("--config-dir=", "hydra.searchpath")) for a in argv):
        return
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in _FLAGS_WITH_VALUE:
            skip = True
            continue
        if arg.startswith(("-", "+", "~")) or "=" not in arg:
            continue
        key, value = arg.split("=", 1)
        if "." in key or "@" in key or key.startswith("hydra/") or key == "hydra" or not (config_dir / key).is_dir():
            continue
        if not value or "(" in value or "[" in value or value == "null":
            continue
        valid = sorted(str(p.relative_to(config_dir / key).with_suffix(""))
                       for p in (config_dir / key).rglob("*.yaml"))
        for choice in (c.strip() for c in value.split(",")):
            if choice and choice != "null" and choice not in valid:
                raise ConfigError(f"{key}={choice}: unknown choice; valid: {', '.join(valid)}")


def preflight(argv: Sequence[str], config_dir: str | Path) -> None:
    """``check_group_choices`` for a root script: one ``error:`` line and exit code 2 on an unknown choice."""
    try:
        check_group_choices(argv, config_dir)
    except ConfigError as err:
        _report(err)


def _task_of(config: DictConfig) -> str:
    return str(OmegaConf.select(config, "hydra.job.config_name", default=None) or "train")


class ValidateConfig(Callback):
    """Hydra callback: ``validate_config`` before the run (or sweep) folder is created; exit code 2 on failure.

    ``max_jobs``: a basic-sweeper multirun with more jobs than this is validated per job instead."""

    def __init__(self, max_jobs: int = 256) -> None:
        self.max_jobs = max_jobs
        self._sweep_validated = False

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._validate(config)

    def on_multirun_start(self, config: DictConfig, config_name: str | None = None, **kwargs: Any) -> None:
        jobs = self._sweep_jobs(config)
        if jobs is None:
            return
        for overrides in jobs:
            self._validate(compose(config_name=config_name, overrides=overrides, return_hydra_config=True))
        self._sweep_validated = True

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if str(OmegaConf.select(config, "hydra.mode", default="")) == "RunMode.MULTIRUN" and not self._sweep_validated:
            self._validate(config)

    def _validate(self, config: DictConfig) -> None:
        try:
            validate_config(config, _task_of(config))
        except ConfigError as err:
            _report(err)

    def _sweep_jobs(self, config: DictConfig) -> list[list[str]] | None:
        """Every job's overrides, as the basic sweeper expands them; ``None`` for other sweepers or too many."""
        target = str(OmegaConf.select(config, "hydra.sweeper._target_", default=""))
        if not target.endswith("BasicSweeper"):
            return None
        params = OmegaConf.select(config, "hydra.sweeper.params", default=None) or {}
        arguments = [f"{k}={v}" for k, v in params.items()]
        arguments += list(OmegaConf.select(config, "hydra.overrides.task", default=None) or [])
        choices = []  # per override, its job values (as the basic sweeper: the cartesian product, in order)
        for o in OverridesParser.create().parse_overrides(arguments):
            key = o.get_key_element()
            if not o.is_sweep_override():
                choices.append([f"{key}={o.get_value_element_as_str()}"])
            elif o.is_discrete_sweep():
                choices.append([f"{key}={v}" for v in o.sweep_string_iterator()])
            else:
                return None
        if math.prod(len(c) for c in choices) > self.max_jobs:
            return None
        return [list(job) for job in itertools.product(*choices)]
