"""Running a task: error reporting, wandb clean-up and the ``metrics.json`` artifact."""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import rich
import rich.syntax
import rich.tree
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only

from recsys.errors import RecsysError
from recsys.io import atomic_write_text
from recsys.utils.dashboards import sync_hint
from recsys.utils.ddp import job_scope

log = logging.getLogger(__name__)

#: when this process imported the package (before Hydra makes the run folder): what it made is newer
PROCESS_STARTED = time.time() - 1.0


def run_task(task: Callable[[DictConfig], dict[str, Any]], cfg: DictConfig) -> dict[str, Any]:
    """Run ``task(cfg)``; user errors end the process with one clear line, other errors are logged and
    re-raised. Any active wandb run is finished with the matching exit code (so multirun jobs never
    share a run and failed jobs show as failed)."""
    exit_code = 1
    try:
        apply_extras(cfg)
        with job_scope():  # DDP in Hydra runs and multirun jobs: see recsys.utils.ddp
            result = task(cfg)
        exit_code = 0
        return result
    except RecsysError as err:
        log.error("%s", err)
        print(f"error: {err}", file=sys.stderr, flush=True)
        discard_unused_run_folder(cfg.paths.get("output_dir"))
        raise SystemExit(2) from None
    except Exception:
        log.exception("Run failed; output folder: %s", cfg.paths.get("output_dir"))
        raise
    finally:
        finish_wandb(exit_code)


def discard_unused_run_folder(output_dir: str | None) -> None:
    """Delete the run folder of a run stopped by a user error before it produced anything: a folder this process
    made (its ``.hydra/`` written since the process started) that holds only what Hydra writes at start
    (``.hydra/`` and ``*.log`` files), e.g. for ``model.topk`` beyond the number of items of a dataset, known only
    once it is loaded. Anything else (an earlier run's folder, checkpoints of a run being resumed, the logs of a
    started fit) is kept."""
    if not output_dir:
        return
    folder = Path(output_dir)
    try:
        entries = list(folder.iterdir())
        made_here = (folder / ".hydra").stat().st_mtime >= PROCESS_STARTED
        logs = [e for e in entries if e.name != ".hydra"]
        made_here = made_here and all(e.stat().st_mtime >= PROCESS_STARTED for e in logs)
    except OSError:
        return
    if made_here and all(e.is_file() and e.suffix == ".log" for e in logs):
        shutil.rmtree(folder, ignore_errors=True)


def finish_wandb(exit_code: int) -> None:
    if "wandb" not in sys.modules:
        return
    import wandb  # only here, when a run has logged to wandb (a heavy import)

    if wandb.run is not None:
        log.info("Closing wandb run %s (exit code %d)", wandb.run.id, exit_code)
        offline, run_dir = bool(getattr(wandb.run, "offline", False)), Path(wandb.run.dir).parent
        wandb.finish(exit_code=exit_code)
        if offline:
            print(sync_hint(run_dir), flush=True)


@rank_zero_only
def write_metrics(path: str | Path, metrics: dict[str, Any]) -> None:
    """Write ``metrics.json`` atomically (flat keys, sorted)."""
    text = json.dumps(metrics, indent=2, sort_keys=True) + "\n"
    atomic_write_text(path, text)
    log.info("Wrote %s", path)


def metric_value(metrics: dict[str, Any], name: str | None) -> float | None:
    """The value to return to a Hydra sweeper; errors clearly if it was never logged."""
    if not name:
        return None
    if name not in metrics:
        raise RecsysError(f"optimized_metric={name!r} was not logged; available: {sorted(metrics)}")
    return float(metrics[name])


@rank_zero_only
def apply_extras(cfg: DictConfig) -> None:
    """``extras`` group: silence warnings; print the composed config as a tree (and save it)."""
    extras = cfg.get("extras") or {}
    if extras.get("ignore_warnings"):
        warnings.filterwarnings("ignore")
    if extras.get("print_config"):
        tree = rich.tree.Tree("CONFIG", guide_style="dim")
        for key, value in cfg.items():
            text = OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(value)
            tree.add(str(key)).add(rich.syntax.Syntax(text, "yaml"))
        rich.print(tree)
        output_dir = cfg.get("paths", {}).get("output_dir")
        if output_dir:
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            with open(Path(output_dir) / "config_tree.log", "w") as f:
                rich.print(tree, file=f)
