"""wandb dashboards offline: one run per job grouped by sweep, config/metrics/epoch time/summary logged
(read back from the offline run files), the collected sweep uploaded, the sync command printed."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from recsys.utils.dashboards import fill_wandb_defaults, job_run_name, sweep_group
from tests.integration.conftest import ROOT, TINY_DATA, TRAIN_QUIET, read_metrics

CONFIGS = ROOT / "configs"


def offline_env(tmp_path: Path) -> dict[str, str]:
    """No key, no ~/.netrc, no WANDB_MODE: recsys must switch to offline by itself (never the network)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB")}
    env.update(HOME=str(tmp_path / "home"), NETRC=str(tmp_path / "no_netrc"), HYDRA_FULL_ERROR="1")
    return env


def wandb_records(run_dir: Path) -> list:
    """The protobuf records of an offline run (``run-<id>.wandb``: wandb's leveldb-style log of 32 KiB blocks,
    7-byte record headers crc/length/type, FULL=1 FIRST=2 MIDDLE=3 LAST=4)."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = run_dir.glob("run-*.wandb")
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, pending, out = 7, 32768, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:  # block padding
            pos += left
            continue
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 1:
            out.append(chunk)
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            out.append(pending + chunk)
    records = []
    for raw in out:
        rec = pb.Record()
        rec.ParseFromString(raw)
        records.append(rec)
    return records


def read_run(run_dir: Path) -> dict:
    """run info, config keys, history rows, final summary and exit code of an offline run."""
    info: dict = {"history": [], "summary": {}, "config": set()}
    for rec in wandb_records(run_dir):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            info.update(group=rec.run.run_group, job_type=rec.run.job_type, name=rec.run.display_name, tags=list(rec.run.tags))
        elif kind == "config":
            info["config"] |= {i.key or "/".join(i.nested_key) for i in rec.config.update}
        elif kind == "history":
            info["history"].append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item})
        elif kind == "summary":
            info["summary"].update({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.summary.update})
        elif kind == "exit":
            info["exit_code"] = rec.exit.exit_code
    return info


def test_group_and_name_of_sweep_jobs():
    assert sweep_group("train", None, None) == "train"
    assert sweep_group("train", "lightgcn_synthetic", "/logs/train/multiruns/2026-01-01_10-00-00") == "lightgcn_synthetic-2026-01-01_10-00-00"
    assert job_run_name(3, ["model=ngcf", "paths.data_dir=/x", "model.num_layers=2", "extras.print_config=false"]) == "3:model=ngcf,model.num_layers=2"
    assert len(job_run_name(1, [f"k{i}=v" for i in range(100)])) == 120


@pytest.fixture
def sweep_job(tmp_path):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("train", overrides=["logger=wandb", "model.num_layers=2", "experiment=lightgcn_synthetic"], return_hydra_config=True)
    sweep = tmp_path / "depth_sweep"
    sweep.mkdir()
    OmegaConf.save(OmegaConf.create({"hydra": {"overrides": {"task": ["model.num_layers=1,2", "logger=wandb"]}}}), sweep / "multirun.yaml")
    with open_dict(cfg):
        cfg.hydra.mode = "MULTIRUN"
        cfg.hydra.sweep.dir = str(sweep)
        cfg.hydra.job.num = 1
    HydraConfig.instance().set_config(cfg)
    yield cfg
    HydraConfig.instance().cfg = None
    GlobalHydra.instance().clear()


def test_wandb_logger_config_of_a_sweep_job(sweep_job, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    c = sweep_job.logger.wandb
    fill_wandb_defaults(c, c.job_type)
    assert c.group == "lightgcn_synthetic-depth_sweep" and c.name == "1:model.num_layers=2"
    assert c.job_type == "train" and list(c.tags) == ["lightgcn", "synthetic_graph"] and c.offline is False
    monkeypatch.delenv("WANDB_API_KEY")
    monkeypatch.setenv("NETRC", "/nonexistent")
    c.group = "mine"
    fill_wandb_defaults(c, c.job_type)
    assert c.group == "mine" and c.offline is True  # an explicit group stays; no credentials: offline


def test_eval_runs_are_tagged_as_eval_jobs():
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("eval", overrides=["ckpt_path=x.ckpt", "logger=wandb"])
    GlobalHydra.instance().clear()
    assert cfg.logger.wandb.job_type == "eval"


@pytest.mark.slow
def test_wandb_offline_sweep_logs_each_job_and_uploads_the_results(tmp_path):
    sweep = tmp_path / "sweep"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "-m", "logger=wandb", "model.num_layers=1,2", "model.embedding_dim=8",
         f"hydra.sweep.dir={sweep}", f"paths.data_dir={tmp_path / 'data'}", *TINY_DATA, *TRAIN_QUIET,
         "trainer.max_epochs=2", "trainer.check_val_every_n_epoch=1"],
        cwd=ROOT, env=offline_env(tmp_path), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    output = proc.stdout + proc.stderr
    for num, layers in ((0, 1), (1, 2)):
        job = sweep / str(num)
        (run_dir,) = (job / "wandb").glob("offline-run-*")
        assert f"wandb sync {run_dir}" in output
        run = read_run(run_dir)
        metrics = read_metrics(job)
        assert run["group"] == "train-sweep" and run["job_type"] == "train" and run["tags"] == ["dev"]
        assert run["name"] == f"{num}:model.num_layers={layers}"
        assert {"cfg", "num_parameters"} <= run["config"]
        assert run["exit_code"] == 0
        # per-epoch validation metrics, epoch time, test metrics; final numbers in the summary
        val = {row["epoch"]: row["val/recall@20"] for row in run["history"] if "val/recall@20" in row}
        assert sorted(val) == [0, 1]
        assert val[metrics["best_epoch"]] == pytest.approx(metrics["val/recall@20"])
        assert sum("time/epoch_seconds" in row for row in run["history"]) == 2
        assert any(row.get("test/recall@20") == pytest.approx(metrics["test/recall@20"]) for row in run["history"])
        assert run["summary"]["test/recall@20"] == pytest.approx(metrics["test/recall@20"])
        assert run["summary"]["fit_seconds"] == pytest.approx(metrics["fit_seconds"])
    # the collected table and plots, uploaded at the end of the sweep into the same group
    (collect_dir,) = (sweep / "wandb").glob("offline-run-*")
    run = read_run(collect_dir)
    assert run["group"] == "train-sweep" and run["job_type"] == "collect"
    logged = {k: v for row in run["history"] for k, v in row.items()}
    assert logged["results/_type"] == "table-file" and logged["results/nrows"] == 2
    assert logged["plots/plot_metric_vs_depth/_type"] == "image-file"
    assert (collect_dir / "files" / "results.csv").read_text() == (sweep / "results.csv").read_text()
