"""The private Lightning names :mod:`recsys.utils.lightning_launchers` patches still exist with the shape it relies
on: an upgrade that renames or reshapes one fails here, loudly, instead of silently running every sweep in every DDP
rank."""

from __future__ import annotations

import inspect

import pytest

from recsys.utils import ddp_command, lightning_launchers


@pytest.mark.parametrize(("module", "path"), lightning_launchers.PATCHED, ids=lambda v: getattr(v, "__name__", v))
def test_every_patched_private_name_exists(module, path):
    owner = module
    *parents, name = path.split(".")
    for part in parents:
        owner = getattr(owner, part, None)
        assert owner is not None, f"{module.__name__}.{part} is gone: update recsys.utils.lightning_launchers"
    assert callable(getattr(owner, name, None)), f"{module.__name__}.{path} is gone: update recsys.utils.lightning_launchers"


def test_patched_signatures_are_the_ones_replaced():
    """The child command takes the local rank and gives (command, cwd); the spawn hand-back keeps its arguments."""
    assert list(inspect.signature(ddp_command.hydra_subprocess_cmd).parameters) == ["local_rank"]
    spawn = lightning_launchers.pl_spawn._MultiProcessingLauncher
    assert list(inspect.signature(spawn.get_extra_results).parameters) == ["self", "trainer"]
    assert list(inspect.signature(spawn.update_main_process_results).parameters) == ["self", "trainer", "extra"]
    launcher = lightning_launchers.pl_subprocess._SubprocessScriptLauncher
    assert list(inspect.signature(launcher._call_children_scripts).parameters) == ["self"]
    assert "self.procs" in inspect.getsource(launcher.__init__)  # where the started children are kept


def test_installed_on_import():
    assert lightning_launchers.pl_subprocess._hydra_subprocess_cmd is ddp_command.hydra_subprocess_cmd
    assert lightning_launchers.fabric_subprocess._hydra_subprocess_cmd is ddp_command.hydra_subprocess_cmd
