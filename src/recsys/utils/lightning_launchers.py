"""The one module that touches Lightning's private launcher API (listed in docs/contributing.md, guarded by
``tests/unit/test_lightning_launchers.py``, which fails loudly when an upgrade renames what is patched here).

Why it cannot be avoided: Lightning's ``ddp`` launcher starts ranks ``1..N-1`` by re-running the script with
``sys.argv`` (``_hydra_subprocess_cmd`` under Hydra); inside a Hydra multirun that command re-runs the whole sweep
in every rank. Lightning has no public hook for the child command, the started child processes, or for state
that ``ddp_spawn`` workers hand back to the main process. :func:`install` patches exactly these (idempotent):

* ``lightning_fabric…subprocess_script._hydra_subprocess_cmd`` and its binding in ``pytorch_lightning…
  subprocess_script``: the child command (given by the caller: :func:`recsys.utils.ddp_command.hydra_subprocess_cmd`);
* ``_SubprocessScriptLauncher._call_children_scripts``: the started children are kept in :data:`children`, so a
  long-lived multirun process can wait for them after each job;
* ``_MultiProcessingLauncher.get_extra_results`` / ``update_main_process_results``: the callbacks' states and the
  epoch counter travel back from ``ddp_spawn`` workers (Lightning carries only the checkpoint path, the weights
  and ``callback_metrics``).
"""

from __future__ import annotations

import io
import subprocess
import warnings
from collections.abc import Callable
from typing import Any

import lightning_fabric.strategies.launchers.subprocess_script as fabric_subprocess
import pytorch_lightning as pl
import pytorch_lightning.strategies.launchers.multiprocessing as pl_spawn
import pytorch_lightning.strategies.launchers.subprocess_script as pl_subprocess
import torch

#: (module, attribute path) of every private name patched here
PATCHED = (
    (fabric_subprocess, "_hydra_subprocess_cmd"),
    (pl_subprocess, "_hydra_subprocess_cmd"),
    (pl_subprocess, "_SubprocessScriptLauncher._call_children_scripts"),
    (pl_spawn, "_MultiProcessingLauncher.get_extra_results"),
    (pl_spawn, "_MultiProcessingLauncher.update_main_process_results"),
)

#: DDP child processes started by Lightning's script launcher in this process
children: list[subprocess.Popen] = []
_installed = False


def _callback_states(trainer: pl.Trainer) -> dict[str, Any]:
    return {cb.state_key: cb.state_dict() for cb in trainer.callbacks if cb.state_dict()}


def _patched_get_extra_results(original):
    def get_extra_results(self, trainer: pl.Trainer) -> dict[str, Any]:
        extra = original(self, trainer)
        buffer = io.BytesIO()
        torch.save({"callbacks": _callback_states(trainer), "epoch_progress": trainer.fit_loop.epoch_progress.state_dict()}, buffer)
        extra["recsys_state_bytes"] = buffer.getvalue()
        return extra

    return get_extra_results


def _patched_update_main_process_results(original):
    def update_main_process_results(self, trainer: pl.Trainer, extra: dict[str, Any]) -> None:
        original(self, trainer, extra)
        if "recsys_state_bytes" not in extra:
            return
        state = torch.load(io.BytesIO(extra["recsys_state_bytes"]), weights_only=True)  # plain dicts of numbers
        for cb in trainer.callbacks:
            if cb.state_key in state["callbacks"]:
                cb.load_state_dict(state["callbacks"][cb.state_key])
        if trainer.state.fn == "fit":
            trainer.fit_loop.epoch_progress.load_state_dict(state["epoch_progress"])

    return update_main_process_results


def _patched_call_children_scripts(original):
    def _call_children_scripts(self) -> None:
        original(self)
        children.extend(self.procs)

    return _call_children_scripts


def install(subprocess_cmd: Callable[[int], tuple[list[str], str]]) -> None:
    """Patch Lightning's launchers (module docstring; once per process): ``subprocess_cmd(local_rank) -> (command,
    cwd)`` starts the DDP children; silence Lightning's ``sync_dist`` advice for our already-reduced metrics."""
    global _installed
    if _installed:
        return
    # both modules bind the name at import time: patch each
    fabric_subprocess._hydra_subprocess_cmd = subprocess_cmd
    pl_subprocess._hydra_subprocess_cmd = subprocess_cmd
    launcher = pl_subprocess._SubprocessScriptLauncher
    launcher._call_children_scripts = _patched_call_children_scripts(launcher._call_children_scripts)
    spawn = pl_spawn._MultiProcessingLauncher
    spawn.get_extra_results = _patched_get_extra_results(spawn.get_extra_results)
    spawn.update_main_process_results = _patched_update_main_process_results(spawn.update_main_process_results)
    # TopKMetrics.compute() sums the states over ranks, so every rank logs the same global value
    # (and GRU4Rec's train/loss is reduced over ranks before it is logged)
    warnings.filterwarnings("ignore", message=r".*self\.log\('(val|test)/.*sync_dist=True")
    warnings.filterwarnings("ignore", message=r".*self\.log\('train/.*sync_dist=True")
    _installed = True
