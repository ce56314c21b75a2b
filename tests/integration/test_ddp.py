"""Multi-process training: rank sharding, the Hydra × DDP child command, ddp_spawn state, and 2-process
runs of LightGCN, GRU4Rec and SASRec whose test metrics equal the single-process evaluation of the same weights."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import open_dict
from torch.utils.data import DistributedSampler

from recsys.data import bpr_batches
from recsys.data.bpr_batches import BPREpochSampler
from recsys.data.eval_batches import RankingEvalSet
from recsys.info import UserItemCSR
from recsys.metrics import TopKMetrics
from recsys.sampling import UniformNegativeSampler
from recsys.utils import ddp, ddp_command
from recsys.utils import lightning_launchers as launchers
from tests.integration.conftest import (
    ROOT,
    TINY_DATA,
    TRAIN_QUIET,
    assert_test_metrics_match_single_process,
    check,
    read_metrics,
    run_script,
)

CONFIGS = ROOT / "configs"
DDP_CPU = ["trainer=ddp_cpu", "trainer.devices=2"]


# -- sharding ---------------------------------------------------------------------------------------
def _random_csr(seed: int, num_users: int, num_items: int) -> UserItemCSR:
    g = torch.Generator().manual_seed(seed)
    users = torch.arange(num_users).repeat_interleave(3)
    items = torch.randint(num_items, (users.numel(),), generator=g)
    return UserItemCSR.from_pairs(users, items, num_users, num_items)


def test_bpr_epoch_sampler_gives_every_rank_the_same_number_of_steps(monkeypatch):
    """33 draws, batches of 8, 2 ranks: shards of 17 and 16 draws would give 3 and 2 batches (DDP's gradient
    all-reduce would then hang); every rank must yield the same number of batches of <= 8, with the shards
    disjoint and together the single-process epoch."""
    train = _random_csr(0, 12, 40)
    sampler = BPREpochSampler(train, UniformNegativeSampler().bind(train), batch_size=8, seed=3, num_samples=33)
    sampler.set_epoch(2)
    full = sampler.draw_epoch()
    shards, lengths = [], []
    for rank in (0, 1):
        monkeypatch.setattr(bpr_batches, "distributed_rank_and_world", lambda rank=rank: (rank, 2))
        batches = list(sampler.batches())
        lengths.append((sampler.num_batches(), len(batches)))
        assert all(0 < b["users"].numel() <= 8 for b in batches)
        shards.append(torch.stack([torch.cat([b["users"] for b in batches]), torch.cat([b["pos_items"] for b in batches])]))
    assert lengths == [(3, 3), (3, 3)]
    for rank, shard in enumerate(shards):
        assert torch.equal(shard, torch.stack([full["users"][rank::2], full["pos_items"][rank::2]]))
    assert sum(s.shape[1] for s in shards) == 33


def test_evaluation_users_are_sharded_without_padding():
    """9 evaluated users on 2 ranks: 5 + 4, each once (DistributedSampler would pad to 10)."""
    target = _random_csr(1, 9, 20)
    mask = UserItemCSR.from_pairs(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), 9, 20)
    shards = [RankingEvalSet(mask, target, batch_size=4, rank=r, world_size=2).users for r in (0, 1)]
    assert [s.numel() for s in shards] == [5, 4]
    assert sorted(torch.cat(shards).tolist()) == list(range(9))
    padded = sum(len(list(DistributedSampler(range(9), num_replicas=2, rank=r, shuffle=False))) for r in (0, 1))
    assert padded == 10  # the duplicate that our sharding avoids


def test_summed_metric_states_equal_the_single_process_metric():
    """Per-rank sums and counts reduce by summation (dist_reduce_fx='sum') to exactly the global mean, also
    with unequal shards (averaging per-rank means would not)."""
    g = torch.Generator().manual_seed(0)
    hits = torch.rand(9, 20, generator=g) < 0.2
    num_rel = torch.randint(1, 6, (9,), generator=g)
    single = TopKMetrics((5, 20))
    single.update(hits, num_rel)
    ranks = [TopKMetrics((5, 20)) for _ in range(2)]
    ranks[0].update(hits[0::2], num_rel[0::2])
    ranks[1].update(hits[1::2], num_rel[1::2])
    ranks[0].merge_state(ranks[1])
    expected, got = single.compute(), ranks[0].compute()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=1e-6)


# -- the Hydra × DDP child command ------------------------------------------------------------------
@pytest.fixture
def multirun_job(tmp_path, monkeypatch):
    """HydraConfig of job #1 of `python train.py -m model.embedding_dim=8,16 trainer=ddp_cpu`."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("train", overrides=["model.embedding_dim=16", "trainer=ddp_cpu"], return_hydra_config=True)
    out = tmp_path / "sweep dir" / "1"
    with open_dict(cfg):
        cfg.hydra.mode = "MULTIRUN"
        cfg.hydra.runtime.output_dir = str(out)
        cfg.hydra.runtime.cwd = str(ROOT)
        cfg.hydra.job.num = 1
        cfg.hydra.overrides.hydra = [
            f"hydra.sweep.dir={tmp_path / 'sweep dir'}", "hydra.mode=MULTIRUN", "hydra/launcher=basic",
            "hydra.sweeper.max_batch_size=2", "hydra.job.chdir=false",
        ]
    HydraConfig.instance().set_config(cfg)
    monkeypatch.setattr(sys, "argv", [str(ROOT / "train.py"), "-m", "model.embedding_dim=8,16", "trainer=ddp_cpu",
                                      "--config-name", "train"])
    monkeypatch.setattr(sys.modules["__main__"], "__spec__", None)
    yield out
    HydraConfig.instance().cfg = None
    GlobalHydra.instance().clear()


def _overrides_of(command: list[str]) -> list[str]:
    overrides = [a for a in command[2:] if "=" in a and not a.startswith("-")]
    OverridesParser.create().parse_overrides(overrides)  # the child's Hydra must accept every one
    return overrides


def test_ddp_children_run_only_the_current_job(multirun_job):
    import lightning_fabric.strategies.launchers.subprocess_script as fabric_launcher
    import pytorch_lightning.strategies.launchers.subprocess_script as pl_launcher

    assert pl_launcher._hydra_subprocess_cmd is ddp_command.hydra_subprocess_cmd
    assert fabric_launcher._hydra_subprocess_cmd is ddp_command.hydra_subprocess_cmd
    command, cwd = pl_launcher._hydra_subprocess_cmd(local_rank=1)
    assert command[:2] == [sys.executable, str(ROOT / "train.py")] and cwd == str(ROOT)
    assert "-m" not in command and "--multirun" not in command
    assert command[command.index("--config-name") + 1] == "train"
    overrides = _overrides_of(command)
    # this job's values (not the sweep's lists), a single run in the job's folder, no config dump
    assert "model.embedding_dim=16" in overrides and "trainer=ddp_cpu" in overrides
    assert not any("8,16" in o for o in overrides)
    assert "hydra.mode=RUN" in overrides and "hydra.output_subdir=null" in overrides
    assert f'hydra.run.dir="{multirun_job}"' in overrides
    assert "hydra.job.name=train_ddp_process_1" in overrides
    assert "hydra.job.chdir=false" in overrides  # a job setting is kept
    assert not any(o.startswith(("hydra.sweep", "hydra/launcher", "hydra.sweeper")) for o in overrides)


def test_driver_scripts_can_hand_their_job_to_the_ddp_children(multirun_job, tmp_path):
    trial_dir = tmp_path / "trial 3"
    with ddp_command.child_job(ROOT / "train.py", ["model.num_layers=2", "model.optimizer.lr=0.005"], trial_dir):
        command, _ = ddp_command.hydra_subprocess_cmd(1)
    overrides = _overrides_of(command)
    assert command[1] == str(ROOT / "train.py")
    assert overrides[:2] == ["model.num_layers=2", "model.optimizer.lr=0.005"]
    assert f'hydra.run.dir="{trial_dir}"' in overrides and "model.embedding_dim=16" not in overrides
    command, _ = ddp_command.hydra_subprocess_cmd(1)  # outside the block: the Hydra job again
    assert "model.embedding_dim=16" in command


def test_job_scope_leaves_a_fresh_process_for_the_next_job(tmp_path, monkeypatch):
    for key in (*ddp.RENDEZVOUS_ENV, "RANK"):
        monkeypatch.delenv(key, raising=False)
    threads = torch.get_num_threads()
    with ddp.job_scope():  # what a DDP job leaves in rank 0
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29999", NODE_RANK="0", LOCAL_RANK="0",
                          WORLD_SIZE="2", OMP_NUM_THREADS="1")
        torch.set_num_threads(1)
        dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5)"])
        launchers.children.append(child)
    assert not any(key in os.environ for key in ddp.RENDEZVOUS_ENV)
    assert torch.get_num_threads() == threads
    assert not dist.is_initialized()
    assert child.returncode == 0 and not launchers.children


def test_job_scope_leaves_externally_started_ranks_alone(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")  # torchrun / SLURM started this process
    monkeypatch.setenv("MASTER_PORT", "29500")
    with ddp.job_scope():
        os.environ["WORLD_SIZE"] = "4"
    assert os.environ["LOCAL_RANK"] == "1" and os.environ["WORLD_SIZE"] == "4"
    monkeypatch.delenv("WORLD_SIZE")


# -- ddp_spawn --------------------------------------------------------------------------------------
class EvalCountProbe(pl.Callback):
    """Rank 0's local metric count and shard size at every validation; handed back to the main process."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, int]] = []

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_rank == 0:  # runs before the module computes and resets its metrics
            self.seen.append((float(pl_module.val_metrics.count), len(trainer.val_dataloaders.dataset.users)))

    def state_dict(self) -> dict:
        return {"seen": self.seen}

    def load_state_dict(self, state: dict) -> None:
        self.seen = [tuple(x) for x in state["seen"]]


@pytest.mark.slow
def test_ddp_spawn_counts_every_user_once_and_hands_state_back(tmp_path):
    from recsys.builders import build_datamodule, build_model

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("train", overrides=[*TINY_DATA, f"paths.data_dir={tmp_path}", "model.embedding_dim=8"])
    GlobalHydra.instance().clear()
    datamodule = build_datamodule(cfg)
    model = build_model(cfg, datamodule)
    probe = EvalCountProbe()
    trainer = pl.Trainer(
        accelerator="cpu", devices=2, strategy="ddp_spawn", max_epochs=2, check_val_every_n_epoch=1,
        num_sanity_val_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, use_distributed_sampler=False, callbacks=[ddp.ResetMetricStates(), probe],
    )
    trainer.fit(model, datamodule=datamodule)
    # sanity check + 2 epochs; without the reset both ranks add into one shared state (150 users counted as 300)
    assert len(probe.seen) == 3, probe.seen
    assert all(count == users for count, users in probe.seen), probe.seen
    assert trainer.current_epoch == 2  # the workers' epoch counter came back too


# -- 2-process runs end to end ----------------------------------------------------------------------
def _assert_rank_zero_artifacts(run: Path) -> None:
    # one run folder, one config dump (rank 1 writes none), one metrics.json
    assert (run / ".hydra" / "config.yaml").is_file() and (run / "metrics.json").is_file()
    assert sorted(p.name for p in run.iterdir() if p.is_dir()) == [".hydra", "checkpoints", "csv", "plots"]
    assert (run / "plots" / "curves.png").is_file()  # drawn once, by rank 0
    log_text = (run / "train.log").read_text()
    assert "Starting DDP rank 1" in log_text  # rank 1 was started by recsys.utils.ddp, for this run


@pytest.mark.slow
def test_lightgcn_trains_on_two_processes_and_matches_single_process_evaluation(tmp_path):
    run = tmp_path / "run"
    check(run_script("train.py", *DDP_CPU, f"hydra.run.dir={run}", f"paths.data_dir={tmp_path / 'data'}",
                     *TINY_DATA, *TRAIN_QUIET, "trainer.max_epochs=2", "trainer.check_val_every_n_epoch=1",
                     "model.embedding_dim=16"))
    metrics = read_metrics(run)
    assert metrics["epochs_trained"] == 2 and metrics["best_epoch"] in (0, 1)
    assert metrics["num_parameters"] == (300 + 200) * 16
    assert "val/recall@20" in metrics
    _assert_rank_zero_artifacts(run)
    assert_test_metrics_match_single_process(tmp_path, run, expected_prefix_keys=15)


SESSION_MODELS = {
    "gru4rec": ["model=gru4rec", "sampler.n_sample=64", "model.layers=[16]"],
    # 1,500 sessions over 2 ranks: ~600 training windows each, 5 steps of 128 per rank and epoch
    "sasrec": ["model=sasrec", "model.embedding_dim=16", "model.num_blocks=1"],
}


@pytest.mark.slow
@pytest.mark.parametrize("model", ["gru4rec", "sasrec"])
def test_session_model_trains_on_two_processes_and_matches_single_process_evaluation(tmp_path, model):
    run = tmp_path / "run"
    check(run_script(
        "train.py", *SESSION_MODELS[model], *DDP_CPU, f"hydra.run.dir={run}", f"paths.data_dir={tmp_path / 'data'}",
        "data.source.num_items=100", "data.source.num_sessions=1500", "data.source.num_days=5",
        *TRAIN_QUIET, "trainer.max_epochs=2", "trainer.check_val_every_n_epoch=1",
    ))
    metrics = read_metrics(run)
    assert metrics["epochs_trained"] == 2 and "val/recall@20" in metrics
    for k in (5, 10, 20):  # the session metrics all exist and are consistent
        recall, mrr = metrics[f"test/recall@{k}"], metrics[f"test/mrr@{k}"]
        assert 0.0 < mrr <= recall <= 1.0, (k, recall, mrr)
    assert metrics["test/recall@5"] <= metrics["test/recall@10"] <= metrics["test/recall@20"]
    _assert_rank_zero_artifacts(run)
    assert_test_metrics_match_single_process(tmp_path, run, expected_prefix_keys=6)


def test_trainer_configs_compose_to_ddp_settings():
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cpu = compose("train", overrides=["trainer=ddp_cpu"]).trainer
        gpu = compose("train", overrides=["trainer=ddp", "trainer.gpus=4"]).trainer
        spawn = compose("train", overrides=["trainer=ddp_spawn"]).trainer
        slurm = compose("train", overrides=["trainer=slurm", "trainer.num_nodes=2", "trainer.devices=4"]).trainer
    GlobalHydra.instance().clear()
    assert (cpu.accelerator, cpu.devices, cpu.strategy) == ("cpu", 2, "ddp")
    assert (gpu.accelerator, gpu.strategy, gpu.gpus) == ("gpu", "ddp", 4)
    assert spawn.strategy == "ddp_spawn"
    assert (slurm.num_nodes, slurm.devices, slurm.strategy) == (2, 4, "ddp")
    for t in (cpu, gpu, spawn, slurm):
        assert t.use_distributed_sampler is False  # our loaders shard by rank themselves


def test_slurm_trainer_reads_nodes_and_tasks_from_the_allocation(monkeypatch):
    monkeypatch.setenv("SLURM_NNODES", "3")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "4")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        slurm = compose("train", overrides=["trainer=slurm"]).trainer
    GlobalHydra.instance().clear()
    assert (slurm.num_nodes, slurm.devices, slurm.accelerator) == (3, 4, "gpu")
