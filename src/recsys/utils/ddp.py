"""Lightning DDP inside Hydra runs and sweeps.

Lightning's ``ddp`` strategy starts ranks ``1..N-1`` by re-running the script
(``_SubprocessScriptLauncher``). With Hydra it re-uses ``sys.argv`` plus ``hydra.run.dir`` — right for a
single run, wrong in a multirun: the children get ``-m`` and the whole sweep, so every rank runs its own
copy of the sweep (right by accident for a fixed grid; with Optuna each rank asks the study for different
hyper-parameters and the ranks crash on mismatched shapes), in the wrong folder. That command is replaced by
:func:`hydra_subprocess_cmd` (the patch itself: :mod:`recsys.utils.lightning_launchers`): a *single run* of the
current job only — the job's own
overrides (``hydra.overrides.task``, i.e. the values the sweeper chose), ``hydra.mode=RUN``, the job's
output folder as ``hydra.run.dir`` and no ``.hydra`` dump (``hydra.output_subdir=null``). The parent
process, and only it, talks to the sweeper.

A multirun also runs several jobs in one process, so :func:`job_scope` undoes what a DDP job leaves
behind in rank 0: the process group (destroyed), the rendezvous variables Lightning put in ``os.environ``
(``LOCAL_RANK`` left there would make the next job believe its ranks were started externally), the torch
thread count, and the child processes (waited for, killed if the job failed).

``ddp_spawn`` runs every stage in fresh worker processes. Tensors handed to them travel in shared memory
and Lightning un-shares only parameters and buffers, not torchmetrics states: every rank then adds into
the *same* state tensors (26 users counted as 52). :class:`ResetMetricStates` resets the metrics once in
each worker (``reset()`` gives every state a fresh private tensor). The launcher patches also
carry the callbacks' states and the epoch counter back to the main process
(Lightning only carries the checkpoint path, the weights and ``callback_metrics``), so the
best-validation metrics and epoch count of ``metrics.json`` are those of the workers' fit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist

from recsys.utils import lightning_launchers as launchers

log = logging.getLogger(__name__)

#: environment variables Lightning's launchers set in the launching process
RENDEZVOUS_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", "OMP_NUM_THREADS")
#: hydra overrides that belong to the sweep, not to a job (dropped from the child command)
_SWEEP_ONLY_KEYS = (
    "hydra.mode", "hydra.sweep", "hydra.sweeper", "hydra/sweeper", "hydra.launcher", "hydra/launcher",
    "hydra.run.dir", "hydra.job.name", "hydra.output_subdir",
)
#: command-line flags that choose the primary config (kept, with their value)
_CONFIG_FLAGS = ("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd")

#: set by child_job(): the job the DDP children must run instead of the current Hydra job
_child_job: dict[str, Any] | None = None


# -- the child command ------------------------------------------------------------------------------
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
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import get_original_cwd, to_absolute_path

    import __main__

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


# -- one job in a long-lived process ----------------------------------------------------------------
def _restore_env(saved: dict[str, str | None]) -> None:
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _reap_children(failed: bool, timeout: float = 120.0) -> None:
    while launchers.children:
        proc = launchers.children.pop()
        if proc.poll() is None and not failed:
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.warning("DDP child process %d still running %.0f s after its job ended: killing it", proc.pid, timeout)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.returncode and not failed:
            log.warning("DDP child process %d exited with code %d", proc.pid, proc.returncode)


@contextlib.contextmanager
def job_scope() -> Iterator[None]:
    """Run one Hydra job; afterwards leave the process as a fresh one for the next multirun job.

    Only what Lightning created inside the job is undone: a process group whose ranks were started
    externally with ``RANK`` / ``LOCAL_RANK`` set (torchrun) is left alone.
    """
    launchers.install(hydra_subprocess_cmd)
    saved_env = {k: os.environ.get(k) for k in RENDEZVOUS_ENV}
    threads = torch.get_num_threads()
    external = saved_env["LOCAL_RANK"] is not None or "RANK" in os.environ
    failed = True
    try:
        yield
        failed = False
    finally:
        _reap_children(failed)
        if not external and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        if not external:
            _restore_env(saved_env)
            torch.set_num_threads(threads)


class ResetMetricStates(pl.Callback):
    """Resets every torchmetrics ``Metric`` of the module at ``setup``, which runs inside each worker: under
    ``ddp_spawn`` the states arrive in memory shared by all ranks, and ``reset()`` gives each rank its own."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        from torchmetrics import Metric

        for module in pl_module.modules():
            if isinstance(module, Metric):
                module.reset()


# Importing this module installs the patches, so they are active in ddp_spawn workers too: a worker is a
# fresh interpreter that imports recsys.utils.ddp when it unpickles the trainer's ResetMetricStates.
launchers.install(hydra_subprocess_cmd)
