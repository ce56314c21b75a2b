"""A DDP job inside a long-lived Hydra process (a run, or one job of a multirun).

Lightning's ``ddp`` strategy starts ranks ``1..N-1`` by re-running the script; the command they get is
:func:`recsys.utils.ddp_command.hydra_subprocess_cmd` (installed by :mod:`recsys.utils.lightning_launchers`
when this module is imported).

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
from collections.abc import Iterator

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from torchmetrics import Metric

from recsys.utils import lightning_launchers as launchers
from recsys.utils.ddp_command import hydra_subprocess_cmd

log = logging.getLogger(__name__)

#: environment variables Lightning's launchers set in the launching process
RENDEZVOUS_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", "OMP_NUM_THREADS")


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
        for module in pl_module.modules():
            if isinstance(module, Metric):
                module.reset()


# Importing this module installs the patches, so they are active in ddp_spawn workers too: a worker is a
# fresh interpreter that imports recsys.utils.ddp when it unpickles the trainer's ResetMetricStates.
launchers.install(hydra_subprocess_cmd)
