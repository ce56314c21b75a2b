"""Shared by every test: nothing a test puts in ``os.environ`` outlives it.

Code under test sets process-wide variables (``recsys.utils.resume`` marks a rewritten command line with
``RECSYS_RESUME_RESOLVED``; Lightning's in-process ``ddp_spawn`` leaves ``MASTER_PORT``); a script started by a
later test would inherit them. With ``pytest -n`` the order of tests on a worker changes from run to run, so such
a leak would fail an unrelated test only sometimes."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _restore_environment():
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def pytest_configure(config: pytest.Config) -> None:
    """Under ``pytest -n N`` (pytest-xdist) every worker and the scripts it starts use one intra-op thread: N
    workers with torch's default of one thread per core would oversubscribe the cores, and OpenMP threads that
    spin waiting for each other slow small tensor operations down by an order of magnitude."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)
