"""Optuna search over the same ``train(cfg)`` as ``train.py`` (``scripts/optuna_search.py``, which hands
:func:`run_study` the training task: this module, below the tasks, imports none).

Why not Hydra's Optuna sweeper: hydra-optuna-sweeper 1.3 pins optuna < 3 (and SQLAlchemy < 2 for SQLite
storage), cannot resume a study and hides the trial from the training loop (no pruning). Here the study lives
in one process (the only one that talks to Optuna, also under DDP), with real Optuna storage (``optuna.storage``:
resume or extend a study by its name), TPE/random samplers and median pruning on the validation metric.

The search space (``optuna.params`` of an ``hparams_search`` config) uses Hydra's sweep grammar, as the Hydra
sweeper does: ``choice(a, b, …)`` (categorical, also config groups such as ``sampler``), ``range(a, b[, step])``
(integers, ``b`` excluded), ``interval(a, b)`` (float), ``tag(log, interval(a, b))`` (log scale),
``tag(int, interval(a, b))`` (integers, ``b`` included). A plain value is a fixed override.

Each trial is composed like a job of a sweep (the command-line overrides plus the trial's values), runs in
``<run dir>/<trial number>/`` with its own ``.hydra/`` files and ``metrics.json``, so
``scripts/collect_results.py <run dir>`` tabulates a study exactly like a multirun.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict

from recsys.errors import ConfigError, RecsysError
from recsys.utils.ddp_command import child_job
from recsys.utils.results import collect
from recsys.utils.run import run_task

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Param:
    """One searched hyper-parameter: ``kind`` is ``categorical``, ``int`` or ``float``."""

    kind: str
    choices: tuple = ()
    low: float = 0.0
    high: float = 0.0
    step: float | None = None
    log: bool = False


def parse_search_space(params: Mapping[str, Any]) -> tuple[dict[str, Param], list[str]]:
    """``{key: sweep expression}`` → (searched parameters, fixed overrides), with Hydra's override grammar."""
    parser = OverridesParser.create()
    space: dict[str, Param] = {}
    fixed: list[str] = []
    for key, expr in _flatten(params or {}).items():
        text = f"{key}={expr}"
        try:
            override = parser.parse_overrides([text])[0]
        except HydraException as err:
            raise ConfigError(f"optuna.params.{key}: cannot parse {expr!r} ({err})") from None
        value = override.value()
        if isinstance(value, ChoiceSweep):
            space[key] = Param("categorical", choices=tuple(value.list))
        elif isinstance(value, RangeSweep):
            values = [v for v in _frange(value.start, value.stop, value.step)]
            if not values:
                raise ConfigError(f"optuna.params.{key}: {expr} is empty")
            if all(float(v).is_integer() for v in values) and float(value.step).is_integer():
                space[key] = Param("int", low=int(values[0]), high=int(values[-1]), step=int(value.step))
            else:
                space[key] = Param("categorical", choices=tuple(values))
        elif isinstance(value, IntervalSweep):
            if not value.start < value.end:
                raise ConfigError(f"optuna.params.{key}: interval needs low < high, got {expr}")
            is_int = "int" in value.tags or (isinstance(value.start, int) and isinstance(value.end, int))
            space[key] = Param("int" if is_int else "float", low=value.start, high=value.end, log="log" in value.tags)
        else:
            fixed.append(text)
    return space, fixed


def _flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model": {"dropout": e}}`` (as a command-line ``+optuna.params.model.dropout=…`` makes it) →
    ``{"model.dropout": e}``; keys written with dots in YAML stay as they are."""
    if OmegaConf.is_config(params):
        params = OmegaConf.to_container(params)
    flat: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _frange(start: float, stop: float, step: float):
    n = max(0, math.ceil((stop - start) / step))
    return [start + i * step for i in range(n)]


def suggest(trial: Any, key: str, p: Param) -> Any:
    """Ask the trial for ``key`` from ``p``."""
    if p.kind == "categorical":
        return trial.suggest_categorical(key, list(p.choices))
    if p.kind == "int":
        return trial.suggest_int(key, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
    return trial.suggest_float(key, float(p.low), float(p.high), log=p.log)


def override_value(value: Any) -> str:
    """A trial value written as a Hydra override value."""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str) and any(c in value for c in " ,[]{}()=\"'"):
        return '"' + value.replace('"', '\\"') + '"'
    return str(value)


# -- pruning --------------------------------------------------------------------------------------
_active: dict[str, Any] = {}


class OptunaPruning(pl.Callback):
    """Reports the monitored validation metric of every validation to the running trial and stops the fit
    when the pruner says so (single process only: under DDP the other ranks could not follow)."""

    def __init__(self) -> None:
        self.trial = _active.get("trial")
        self.monitor = _active.get("monitor")
        self.pruned = False
        _active["callback"] = self

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.trial is None or trainer.sanity_checking or trainer.world_size > 1:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        self.trial.report(float(value), step=trainer.current_epoch)
        if self.trial.should_prune():
            log.info("Optuna pruned trial %d at epoch %d (%s=%.4f)", self.trial.number, trainer.current_epoch,
                     self.monitor, float(value))
            self.pruned = True
            trainer.should_stop = True


# -- the study --------------------------------------------------------------------------------------
def _make_sampler(spec: Mapping[str, Any]):
    import optuna

    name = str(spec.get("name", "tpe")).lower()
    seed = spec.get("seed")
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=int(spec.get("n_startup_trials", 10)))
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ConfigError(f"optuna.sampler.name must be 'tpe' or 'random', got {name!r}")


def _make_pruner(spec: Mapping[str, Any] | None):
    import optuna

    name = str((spec or {}).get("name", "none")).lower()
    if name in ("none", "null"):
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=int(spec.get("n_startup_trials", 5)), n_warmup_steps=int(spec.get("n_warmup_steps", 0))
        )
    raise ConfigError(f"optuna.pruner.name must be 'median' or 'none', got {name!r}")


def _save_job_files(composed: DictConfig, overrides: list[str], job_dir: Path) -> None:
    """``.hydra/{config,hydra,overrides}.yaml`` of a trial, as Hydra writes them for a job."""
    hydra_dir = job_dir / ".hydra"
    hydra_dir.mkdir(parents=True, exist_ok=True)
    task = OmegaConf.masked_copy(composed, [k for k in composed if k != "hydra"])
    OmegaConf.save(task, hydra_dir / "config.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": {"runtime": {"choices": OmegaConf.to_container(composed.hydra.runtime.choices)}}}),
                   hydra_dir / "hydra.yaml")
    OmegaConf.save(OmegaConf.create(list(overrides)), hydra_dir / "overrides.yaml")


def run_study(cfg: DictConfig, train: Callable[[DictConfig], dict[str, Any]]) -> dict[str, Any]:
    """Run (or extend) the study described by ``cfg.optuna``, each trial a ``train(trial config)`` (the training
    task, :func:`recsys.train.train`); return ``{best_value, best_params, …}``."""
    import optuna

    search = cfg.get("optuna")
    if not search:
        raise ConfigError("no search space: choose one with hparams_search=<name> (configs/hparams_search/*.yaml)")
    metric = cfg.get("optimized_metric")
    if not metric:
        raise ConfigError("optimized_metric is not set: the study needs a validation metric to optimise")
    space, fixed = parse_search_space(search.get("params"))
    if not space:
        raise ConfigError("optuna.params has no searched parameter (use choice/range/interval)")

    hc = HydraConfig.get()
    out = Path(cfg.paths.output_dir)
    base = list(hc.overrides.task) + fixed
    root = Path(os.environ.get("RECSYS_ROOT", Path.cwd()))
    study_name = str(search.get("study_name") or "recsys")
    study = optuna.create_study(
        study_name=study_name, storage=search.get("storage"), load_if_exists=True,
        direction=str(search.get("direction", "maximize")), sampler=_make_sampler(search.get("sampler") or {}),
        pruner=_make_pruner(search.get("pruner")),
    )

    def objective(trial: optuna.Trial) -> float:
        values = {key: suggest(trial, key, p) for key, p in space.items()}
        overrides = base + [f"{k}={override_value(v)}" for k, v in values.items()]
        job_dir = out / str(trial.number)
        composed = compose(config_name=hc.job.config_name, overrides=[*overrides, f"paths.output_dir={job_dir}"],
                           return_hydra_config=True)
        _save_job_files(composed, overrides, job_dir)
        with open_dict(composed):
            del composed["hydra"]
            if composed.get("callbacks") is None:
                composed.callbacks = {}
            composed.callbacks.optuna_pruning = {"_target_": f"{__name__}.OptunaPruning"}
            if composed.get("logger") and composed.logger.get("wandb") is not None:
                composed.logger.wandb.group = composed.logger.wandb.get("group") or f"optuna-{study_name}"
                composed.logger.wandb.name = composed.logger.wandb.get("name") or f"trial {trial.number}"
        log.info("Trial %d: %s", trial.number, " ".join(f"{k}={v}" for k, v in values.items()))
        _active.clear()
        _active.update(trial=trial, monitor=metric)
        try:
            with child_job(root / "train.py", overrides, job_dir):
                metrics = run_task(train, composed)
        except SystemExit as err:  # a RecsysError: already reported in one line
            raise RuntimeError(f"trial {trial.number} failed (exit code {err.code})") from None
        finally:
            callback = _active.pop("callback", None)
            _active.clear()
        if metric not in metrics:
            raise RecsysError(f"optimized_metric={metric!r} was not logged by trial {trial.number}")
        if callback is not None and callback.pruned:
            raise optuna.TrialPruned()
        return float(metrics[metric])

    study.optimize(objective, n_trials=search.get("n_trials"), timeout=search.get("timeout"), catch=(RuntimeError,))

    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    summary: dict[str, Any] = {"study_name": study_name, "metric": metric, "direction": study.direction.name.lower(),
                               "num_trials": len(study.trials), "num_complete": len(finished)}
    if finished:
        best = study.best_trial
        summary.update(best_trial=best.number, best_value=best.value, best_params=best.params,
                       best_overrides=[f"{k}={override_value(v)}" for k, v in best.params.items()])
        log.info("Best trial %d: %s=%.5f with %s", best.number, metric, best.value, " ".join(summary["best_overrides"]))
    (out / "optuna_best.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    study.trials_dataframe().to_csv(out / "optuna_trials.csv", index=False)
    try:
        collect(out, metric=f"test/{metric.split('/', 1)[-1]}" if cfg.get("test") else metric)
    except Exception:  # the study is done; a table problem must not hide it
        log.exception("Collecting the trials failed; run scripts/collect_results.py %s", out)
    return summary
