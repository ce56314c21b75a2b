"""Processes started by existing engines, not by Lightning: torchrun, and SLURM through the submitit launcher
(a one-machine stand-in for sbatch/srun/sacct, ``fake_slurm``, so the real submitit and Lightning code run)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path

import pytest
from lightning_fabric.plugins.environments.lightning import find_free_network_port

from tests.integration import fake_slurm
from tests.integration.conftest import (
    TINY_DATA,
    TRAIN_QUIET,
    assert_test_metrics_match_single_process,
    check,
    read_metrics,
    run_script,
)

TINY_TRAIN = [*TINY_DATA, *TRAIN_QUIET, "trainer.max_epochs=2", "trainer.check_val_every_n_epoch=1",
              "model.embedding_dim=16"]


def _assert_one_log_per_rank(run: Path) -> None:
    rank0, rank1 = (run / "train.log").read_text(), (run / "train_rank1.log").read_text()
    for text in (rank0, rank1):  # each rank logged its own data set-up, once
        assert text.count("Dataset synthetic_graph: 300 users") == 1, text
    assert "Wrote " in rank0 and "metrics.json" not in rank1  # only rank 0 writes metrics.json


@pytest.mark.slow
def test_torchrun_starts_the_ranks_and_lightning_joins_them(tmp_path):
    run = tmp_path / "run"
    proc = check(run_script(
        "train.py", "trainer=ddp_cpu", "trainer.devices=2", f"hydra.run.dir={run}", f"paths.data_dir={tmp_path / 'data'}",
        *TINY_TRAIN, launcher=["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"],
    ))
    assert "MEMBER: 2/2" in proc.stderr + proc.stdout
    assert "Starting DDP rank" not in (run / "train.log").read_text()  # torchrun started rank 1, not Lightning
    assert read_metrics(run)["epochs_trained"] == 2
    _assert_one_log_per_rank(run)
    assert_test_metrics_match_single_process(tmp_path, run, expected_prefix_keys=15)


@pytest.fixture
def fake_slurm_env(tmp_path):
    env = fake_slurm.install(tmp_path / "bin", tmp_path / "slurm")
    yield env
    # the detached job runner may still be recording the last job's state: let it finish, then end whatever
    # is left of it (after a failed or timed-out sweep: the runner, srun and the ranks)
    for pid_file in (tmp_path / "slurm").glob("*.pid"):
        pid = int(pid_file.read_text())
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


@pytest.mark.slow
def test_submitit_slurm_sweep_runs_every_job_as_a_two_task_slurm_job(tmp_path, fake_slurm_env):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install -e '.[cluster]'")
    sweep = tmp_path / "sweep"
    check(run_script(
        "train.py", "-m", "hydra/launcher=submitit_slurm", "trainer=slurm", "trainer.accelerator=cpu",
        "trainer.devices=2", "hydra.launcher.cpus_per_task=1", "model.num_layers=1,2", f"hydra.sweep.dir={sweep}",
        f"paths.data_dir={tmp_path / 'data'}", *TINY_TRAIN,
        env={**fake_slurm_env, "MASTER_PORT": str(find_free_network_port())}, timeout=600,
    ))
    # one sbatch call: a 2-job array, each job one node with one task (and one GPU) per device
    (submitted,) = [json.loads(p.read_text()) for p in (tmp_path / "slurm").glob("*.sbatch.json")]
    options = submitted["options"]
    assert options["array"] == "0-1%2" and options["nodes"] == "1"
    assert options["ntasks-per-node"] == "2" and options["gpus-per-node"] == "2" and options["job-name"] == "train"
    for job in ("0", "1"):
        run = sweep / job
        metrics = read_metrics(run)
        assert metrics["epochs_trained"] == 2 and "test/recall@20" in metrics
        _assert_one_log_per_rank(run)
    task_logs = "".join(p.read_text() for p in (sweep / ".submitit").rglob("*_log.err"))
    assert task_logs.count("MEMBER: 2/2") == 2  # rank 1 of each job joined through SLURMEnvironment
    assert (sweep / "results.csv").read_text().count("\n") == 3  # header + 2 jobs, collected after the sweep
    assert_test_metrics_match_single_process(tmp_path, sweep / "1", expected_prefix_keys=15)


def test_a_process_started_as_rank_1_leaves_the_config_dump_and_log_file_to_rank_0(tmp_path):
    # what torchrun/srun give rank 1 before Hydra starts; alone it trains as a 1-process job
    run = tmp_path / "run"
    check(run_script("train.py", f"hydra.run.dir={run}", f"paths.data_dir={tmp_path / 'data'}", *TINY_DATA,
                     *TRAIN_QUIET, "trainer.max_epochs=1", "model.embedding_dim=8", env={"RANK": "1"}))
    assert not (run / ".hydra").exists() and not (run / "metrics.json").exists()
    assert not (run / "train.log").exists()
    assert "Dataset synthetic_graph: 300 users" in (run / "train_rank1.log").read_text()


def test_rank_resolvers(monkeypatch):
    from omegaconf import OmegaConf
    from pytorch_lightning.utilities import rank_zero_only

    from recsys.utils.resolvers import register_resolvers

    register_resolvers()
    cfg = OmegaConf.create({"subdir": "${rank_zero_only:.hydra}", "log": "train${rank_suffix:}.log"})
    assert (cfg.subdir, cfg.log) == (".hydra", "train.log")
    monkeypatch.setattr(rank_zero_only, "rank", 3)
    assert (cfg.subdir, cfg.log) == (None, "train_rank3.log")
