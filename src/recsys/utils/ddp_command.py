"""The command of the DDP child ranks of a Hydra job.

Lightning's ``ddp`` strategy starts ranks ``1..N-1`` by re-running the script
(``_SubprocessScriptLauncher``). With Hydra it re-uses ``sys.argv`` plus ``hydra.run.dir`` — right for a
single run, wrong in a multirun: the children get ``-m`` and the whole sweep, so every rank runs its own
copy of the sweep (right by accident for a fixed grid; with Optuna each rank asks the study for different
hyper-parameters and the ranks crash on mismatched shapes), in the wrong folder. That command is replaced by
:func:`hydra_subprocess_cmd` (the patch itself: :mod:`recsys.utils.lightning_launchers`): a *single run* of the
current job only — the job's own overrides (``hydra.overrides.task``, i.e. the values the sweeper chose),
``hydra.mode=RUN``, the job's output folder as ``hydra.run.dir`` and no ``.hydra`` dump
(``hydra.output_subdir=null``). The parent process, and only it, talks to the sweeper.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_original_cwd, to_absolute_path

import __main__  # the script or module this process runs

log = logging.getLogger(__name__)

#: hydra overrides that belong to the sweep, not to a job (dropped from the child command)
_SWEEP_ONLY_KEYS = (
    "hydra.mode", "hydra.sweep", "hydra.sweeper", "hydra/sweeper", "hydra.launcher", "hydra/launcher",
    "hydra.run.dir", "hydra.job.name", "hydra.output_subdir",
)
#: command-line flags that choose the primary config (kept, with their value)
_CONFIG_FLAGS = ("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd")

#: set by child_job(): the job the DDP children must run instead of the current Hydra job
_child_job: dict[str, Any] | None = None


def _hydra_quote(value: str) -> str:
    """A Hydra override value that keeps any path literal (quoted, with quotes/backslashes escaped)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _override_key(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0]


def _is_sweep_only(override: str) -> bool:
    key = _override_key(override)
    return any(key == k or key.startswith(k + ".") for k in _SWEEP_ONLY_KEYS)


def config_flags(argv: Sequence[str]) -> list[str]:
    """The ``--config-path/--config-name/--config-dir`` flags (and values) of a command line."""
    out: list[str] = []
    it = iter(range(len(argv)))
    for i in it:
        arg = argv[i]
        if arg in _CONFIG_FLAGS and i + 1 < len(argv):
            out += [arg, argv[i + 1]]
            next(it, None)
        elif arg.split("=", 1)[0] in _CONFIG_FLAGS and "=" in arg:
            out.append(arg)
    return out


def hydra_subprocess_cmd(local_rank: int) -> tuple[list[str], str]:
    """Command (and cwd) that starts DDP rank ``local_rank`` of the *current Hydra job* as a single run.

    Replaces ``lightning_fabric.strategies.launchers.subprocess_script._hydra_subprocess_cmd`` (same
    signature): script + config flags + the job's task overrides + its non-sweep hydra overrides +
    ``hydra.mode=RUN hydra.run.dir=<job output dir> hydra.job.name=train_ddp_process_<rank>
    hydra.output_subdir=null``.
    """
    hc = HydraConfig.get()
    if _child_job is not None:  # a job composed by a driver script (e.g. an Optuna trial)
        command = [sys.executable, str(_child_job["script"])]
        task_overrides, output_dir = list(_child_job["overrides"]), str(_child_job["output_dir"])
    else:
        if __main__.__spec__ is None:
            command = [sys.executable, to_absolute_path(sys.argv[0])]
        else:
            command = [sys.executable, "-m", __main__.__spec__.name]
        task_overrides, output_dir = list(hc.overrides.task), str(hc.runtime.output_dir)
    command += config_flags(sys.argv[1:])
    command += task_overrides
    command += [o for o in hc.overrides.hydra if not _is_sweep_only(o)]
    command += [
        "hydra.mode=RUN",
        f"hydra.run.dir={_hydra_quote(output_dir)}",
        f"hydra.job.name=train_ddp_process_{local_rank}",
        "hydra.output_subdir=null",
    ]
    log.info("Starting DDP rank %d: %s", local_rank, " ".join(command))
    return command, get_original_cwd()


@contextlib.contextmanager
def child_job(script: str | os.PathLike, overrides: Sequence[str], output_dir: str | os.PathLike) -> Iterator[None]:
    """Inside this block, DDP ranks ``1..N-1`` run ``python <script> <overrides>`` as a single run in
    ``output_dir`` instead of the current Hydra job: for jobs a driver composes itself (an Optuna trial of
    ``scripts/optuna_search.py`` runs ``train.py`` with the trial's overrides)."""
    global _child_job
    previous, _child_job = _child_job, {"script": script, "overrides": list(overrides), "output_dir": output_dir}
    try:
        yield
    finally:
        _child_job = previous
