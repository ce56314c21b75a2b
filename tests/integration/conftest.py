"""Helpers for integration tests: run the root scripts as subprocesses with tiny budgets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]

# a small version of the embedded default: seconds per run on 2 CPU cores
TINY_DATA = [
    "data.source.num_users=300",
    "data.source.num_items=200",
    "data.source.max_interactions=40",
]
# for eval.py (no callbacks group); TRAIN_QUIET for train.py
QUIET = ["extras.print_config=false", "trainer.enable_progress_bar=false"]
TRAIN_QUIET = [*QUIET, "~callbacks.progress_bar"]


# set by a launcher in the process that runs it (Lightning's ddp_spawn sets MASTER_PORT in the parent): a
# script started by a test must not inherit them, or every DDP run would share one fixed port
LAUNCHER_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE")


def shared_dataset(name: str, required_file: str) -> Path:
    """``../shared/datasets/<name>``: skipped when ``required_file`` is absent there; with ``CI=true`` its absence
    is a failure."""
    path = ROOT.parent / "shared" / "datasets" / name
    if not (path / required_file).is_file():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{path} is missing; CI must run the tests on {name}")
        pytest.skip(f"{path} not present")
    return path


def run_script(
    script: str, *overrides: str, env: dict[str, str] | None = None, timeout: int = 300, launcher: Sequence[str] = (),
) -> subprocess.CompletedProcess:
    """Run ``python [launcher] <script> <overrides>`` from the repository root (``launcher`` e.g.
    ``["-m", "torch.distributed.run", ...]``); return the completed process."""
    inherited = {k: v for k, v in os.environ.items() if k not in LAUNCHER_ENV}
    full_env = {**inherited, "WANDB_MODE": os.environ.get("WANDB_MODE", "disabled"), "HYDRA_FULL_ERROR": "1"}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, *launcher, str(ROOT / script), *overrides],
        cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout,
    )


def check(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    if proc.returncode != 0:
        pytest.fail(f"exit code {proc.returncode}\nSTDOUT:\n{proc.stdout[-4000:]}\nSTDERR:\n{proc.stderr[-6000:]}")
    return proc


def read_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def assert_test_metrics_match_single_process(tmp_path: Path, run: Path, expected_prefix_keys: int) -> None:
    """The test metrics a multi-process run wrote equal ``eval.py`` of its best checkpoint in one process, and so
    do its per-user rows (written by rank 0 for all ranks): the same rows, in the same order, the same values."""
    metrics = read_metrics(run)
    test_keys = [k for k in metrics if k.startswith("test/")]
    assert len(test_keys) >= expected_prefix_keys
    single_dir = tmp_path / f"single_{run.name}"
    check(run_script("eval.py", f"ckpt_path={metrics['best_checkpoint']}", "trainer=cpu",
                     f"hydra.run.dir={single_dir}", *QUIET))
    single = read_metrics(single_dir)
    for key in test_keys:
        assert abs(single[key] - metrics[key]) <= 1e-6, (key, single[key], metrics[key])
    rows, single_rows = pd.read_parquet(run / "per_user.parquet"), pd.read_parquet(single_dir / "per_user.parquet")
    assert len(rows) > 1 and not rows.duplicated([c for c in rows.columns if "@" not in c]).any()
    pd.testing.assert_frame_equal(rows, single_rows, check_exact=True)


@pytest.fixture
def tiny_train_args(tmp_path: Path) -> list[str]:
    """Overrides for a seconds-long training run writing into tmp_path."""
    return [
        f"hydra.run.dir={tmp_path / 'run'}",
        f"paths.data_dir={tmp_path / 'data'}",
        *TINY_DATA,
        *TRAIN_QUIET,
        "trainer.max_epochs=3",
        "trainer.check_val_every_n_epoch=1",
        "model.embedding_dim=16",
    ]
