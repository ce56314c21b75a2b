"""wandb dashboards: one run per job, grouped by sweep; summary metrics; sweep results upload.

* ``group`` (when ``logger.wandb.group`` is null): the experiment (or ``task_name``) for a single run, and
  ``<experiment or task_name>-<sweep folder name>`` for every job of a multirun, so a sweep is one group;
* ``name`` (when null) of a multirun job: ``<job number>:<its overrides>`` (paths and display flags left out);
* ``job_type`` = ``task_name`` (``train``/``eval``), ``tags`` = the experiment's ``tags`` (configs/logger/wandb.yaml);
* at the end of a run the ``metrics.json`` values go into the wandb summary (best validation, test, timings);
* :func:`upload_results` logs a collected sweep (table + plots) as a ``job_type=collect`` run of the group.

Without credentials (``WANDB_API_KEY`` / ``~/.netrc``) and without ``WANDB_MODE`` runs are logged offline and
the ``wandb sync`` command to upload them is printed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.loggers import Logger, WandbLogger
from pytorch_lightning.utilities import rank_zero_only

log = logging.getLogger(__name__)

#: override prefixes left out of a job's wandb run name (locations and display switches)
_NAME_SKIP = ("paths.", "hydra", "extras.", "logger", "trainer.enable_progress_bar", "callbacks.progress_bar")


def wandb_has_credentials() -> bool:
    """Whether wandb could log in: an API key in the environment or in ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


def wandb_should_run_offline(offline_flag: bool | None) -> bool:
    """Offline when asked, or when there are neither credentials nor an explicit ``WANDB_MODE``."""
    return bool(offline_flag) or ("WANDB_MODE" not in os.environ and not wandb_has_credentials())


def sweep_group(task_name: str, experiment: str | None, sweep_dir: str | None) -> str:
    """The wandb group of a run: ``<experiment or task>`` or, inside a sweep, ``…-<sweep folder name>``."""
    base = experiment or task_name
    return f"{base}-{Path(sweep_dir).name}" if sweep_dir else base


def job_run_name(job_num: int | str, overrides: Iterable[str], max_len: int = 120) -> str:
    """``<job number>:<overrides>`` without location/display overrides, e.g. ``3:model=ngcf,model.num_layers=2``."""
    kept = [o for o in overrides if not o.lstrip("+~").startswith(_NAME_SKIP)]
    name = f"{job_num}:{','.join(kept)}" if kept else str(job_num)
    return name if len(name) <= max_len else name[: max_len - 1] + "…"


def hydra_run_context() -> dict[str, Any]:
    """``{multirun, sweep_dir, job_num, overrides, experiment}`` of the current Hydra job (empty outside Hydra)."""
    if not HydraConfig.initialized():
        return {}
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    overrides = list(hc.overrides.task)
    if multirun:  # name the job by what the sweep varies, when the sweep's command line says so
        swept = swept_keys(Path(hc.sweep.dir) / "multirun.yaml")
        overrides = [o for o in overrides if _key(o) in swept] or overrides
    return {
        "multirun": multirun,
        "sweep_dir": str(hc.sweep.dir) if multirun else None,
        "job_num": hc.job.get("num"),
        "overrides": overrides,
        "experiment": hc.runtime.choices.get("experiment"),
    }


def _key(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0]


def swept_keys(multirun_yaml: Path) -> set[str]:
    """Keys of the sweep overrides (``a=1,2``, ``choice(…)``, ``range(…)``…) in a sweep's ``multirun.yaml``."""
    try:
        task = OmegaConf.select(OmegaConf.load(multirun_yaml), "hydra.overrides.task") or []
        parsed = OverridesParser.create().parse_overrides([str(o) for o in task])
    except Exception:  # missing or unreadable: no information
        return set()
    return {o.get_key_element().lstrip("+~") for o in parsed if o.is_sweep_override()}


def fill_wandb_defaults(c: DictConfig, task_name: str | None) -> None:
    """Fill a WandbLogger config's null ``group``/``name`` from the Hydra job; switch to offline when no
    credentials are available (the sync command is printed when the run ends)."""
    ctx = hydra_run_context()
    with open_dict(c):
        if c.get("group") is None:
            c.group = sweep_group(task_name or "run", ctx.get("experiment"), ctx.get("sweep_dir"))
        if c.get("name") is None and ctx.get("multirun"):
            c.name = job_run_name(ctx["job_num"], ctx["overrides"])
        if not c.get("offline") and wandb_should_run_offline(False):
            log.warning("No wandb credentials found: logging offline (the `wandb sync` command is printed at the end)")
            c.offline = True


@rank_zero_only
def log_summary(loggers: Sequence[Logger], metrics: dict[str, Any]) -> None:
    """Put the run's final numbers (``metrics.json``) into the wandb summary of every wandb logger."""
    numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    for lg in loggers:
        if isinstance(lg, WandbLogger):
            lg.experiment.summary.update(numbers)


@rank_zero_only
def log_images(loggers: Sequence[Logger], images: dict[str, str | Path]) -> None:
    """Log PNG files (``{key: path}``) as ``wandb.Image`` to every wandb logger (e.g. ``plots/curves``)."""
    wandb_loggers = [lg for lg in loggers if isinstance(lg, WandbLogger)]
    if not wandb_loggers:
        return
    import wandb

    for lg in wandb_loggers:
        try:
            lg.experiment.log({key: wandb.Image(str(path)) for key, path in images.items()})
        except Exception as err:  # a dashboard problem never fails the run
            log.warning("Could not log %s to wandb: %s", sorted(images), err)


def sync_hint(run_dir: str | Path) -> str:
    return f"wandb: offline run saved in {run_dir}; upload it with: wandb sync {run_dir}"


def upload_results(
    table_csv: Path,
    plots: Sequence[Path],
    *,
    project: str,
    group: str,
    save_dir: Path,
    entity: str | None = None,
    tags: Sequence[str] = (),
    offline: bool | None = None,
    key: str = "results",
) -> Path:
    """Log a collected sweep as one ``job_type=collect`` run of ``group``: the table (a ``wandb.Table`` under
    ``key``: ``results``, ``comparison``) and every plot (``wandb.Image``). Returns the wandb run folder."""
    import wandb

    mode = "offline" if wandb_should_run_offline(offline) else None
    run = wandb.init(
        project=project, entity=entity, group=group, job_type="collect", name=f"{group}:{key}",
        tags=list(tags), dir=str(save_dir), mode=mode, reinit="finish_previous",
    )
    try:
        frame = pd.read_csv(table_csv)
        run.log({key: wandb.Table(dataframe=frame.astype(str) if frame.empty else frame)})
        if plots:
            run.log({f"plots/{p.stem}": wandb.Image(str(p)) for p in plots})
        run.save(str(table_csv), base_path=str(table_csv.parent), policy="now")
        run_dir = Path(run.dir).parent
    finally:
        offline_run = run.offline
        run.finish()
    if offline_run:
        print(sync_hint(run_dir), flush=True)
    return run_dir
