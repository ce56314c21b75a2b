"""Hydra multirun sweeps (also with DDP jobs), the SLURM launcher config and the Optuna search."""

from __future__ import annotations

import csv
import json

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from recsys.api import load_run
from recsys.utils import search
from recsys.utils.search import Param, parse_search_space
from tests.integration.conftest import ROOT, TINY_DATA, TRAIN_QUIET, check, read_metrics, run_script

CONFIGS = ROOT / "configs"
ONE_EPOCH = ["trainer.max_epochs=1", "trainer.check_val_every_n_epoch=1"]


def sweep_args(tmp_path) -> list[str]:
    return [f"hydra.sweep.dir={tmp_path / 'sweep'}", f"paths.data_dir={tmp_path / 'data'}", *TINY_DATA, *TRAIN_QUIET, *ONE_EPOCH]


def job_dirs(sweep):
    return sorted((p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))


@pytest.mark.slow
def test_grid_multirun_writes_one_run_folder_per_job_and_collects_them(tmp_path):
    check(run_script("train.py", "-m", "model.num_layers=1,2", "model.embedding_dim=8,16", *sweep_args(tmp_path)))
    sweep = tmp_path / "sweep"
    jobs = job_dirs(sweep)
    assert [j.name for j in jobs] == ["0", "1", "2", "3"]
    seen = set()
    for job in jobs:
        metrics = read_metrics(job)
        overrides = (job / ".hydra" / "overrides.yaml").read_text()
        layers = 1 if "model.num_layers=1" in overrides else 2
        dim = 8 if "model.embedding_dim=8" in overrides else 16
        seen.add((layers, dim))
        assert metrics["num_parameters"] == 500 * dim and "test/recall@20" in metrics
    assert seen == {(1, 8), (1, 16), (2, 8), (2, 16)}
    # collected at the end of the sweep by the Hydra callback (recsys.utils.results)
    rows = list(csv.DictReader((sweep / "results.csv").read_text().splitlines()))
    assert len(rows) == 4 and {r["status"] for r in rows} == {"ok"}
    assert {(int(r["depth"]), int(r["dim"])) for r in rows} == seen
    assert (sweep / "results.md").read_text().count("\n| ") == 5  # header + 4 jobs
    assert (sweep / "plot_metric_vs_depth.png").stat().st_size > 0
    assert (sweep / "plot_heatmap_depth_dim.png").stat().st_size > 0


@pytest.mark.slow
def test_multirun_with_ddp_jobs_runs_each_job_once_on_two_processes(tmp_path):
    """Also the 2-process CPU runs of SimGCL and XSimGCL (issue 26: no special-casing): each rank draws its own
    noise, the contrastive term is logged over both ranks, and ``recommend.py`` answers from the run as the API."""
    proc = check(run_script("train.py", "-m", "model=simgcl,xsimgcl", "trainer=ddp_cpu", "trainer.devices=2",
                            "model.embedding_dim=8", *sweep_args(tmp_path)))
    sweep = tmp_path / "sweep"
    jobs = job_dirs(sweep)
    assert [j.name for j in jobs] == ["0", "1"]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]  # no stray run folders
    assert proc.stderr.count("Launching 2 jobs locally") + proc.stdout.count("Launching 2 jobs locally") == 1
    for job, model in zip(jobs, ("simgcl", "xsimgcl"), strict=True):
        assert "test/recall@20" in read_metrics(job)
        logged = [r["train/cl"] for r in csv.DictReader((job / "csv" / "metrics.csv").read_text().splitlines())]
        assert [float(v) > 0 for v in logged if v] == [True]  # the epoch's contrastive term, over both ranks
        starts = [ln for ln in (job / "train.log").read_text().splitlines() if "Starting DDP rank 1" in ln]
        assert len(starts) == 1, starts  # rank 1 started once per job, for this job only
        # the command's arguments (not the log line: its timestamp may read e.g. "…:41,266", which holds "1,2")
        args = starts[0].split("Starting DDP rank 1: ", 1)[1].split()
        assert f"model={model}" in args and "model=simgcl,xsimgcl" not in args and "-m" not in args
        assert "hydra.mode=RUN" in args and f'hydra.run.dir="{job}"' in args

    # collect_results on that folder, into another folder
    out = tmp_path / "collected"
    done = check(run_script("scripts/collect_results.py", str(sweep), "--out", str(out), "--metric", "val/recall@20", "--no-wandb"))
    assert "2 jobs (0 failed)" in done.stdout
    rows = list(csv.DictReader((out / "results.csv").read_text().splitlines()))
    assert [r["job"] for r in rows] == ["0", "1"] and [r["swept"] for r in rows] == ["model=simgcl", "model=xsimgcl"]
    for row, job in zip(rows, jobs, strict=True):
        assert float(row["val/recall@20"]) == pytest.approx(read_metrics(job)["val/recall@20"])
    assert (out / "results.md").is_file() and (out / "plot_metric_vs_depth.png").stat().st_size > 0

    # recommend.py on the SimGCL job (its DDP-written checkpoint) gives the API's rows
    rec = tmp_path / "rec.csv"
    check(run_script("recommend.py", f"ckpt_path={jobs[0]}", "users=[0,7]", "k=4", f"output={rec}",
                     f"hydra.run.dir={tmp_path / 'rec'}", "extras.print_config=false", "progress=false"))
    cli = pd.read_csv(rec, dtype={"user": str, "item": str})
    api = load_run(jobs[0]).recommend(["0", "7"], 4)
    assert cli[["user", "rank", "item"]].equals(api[["user", "rank", "item"]])
    pd.testing.assert_series_equal(cli["score"], api["score"].astype(float), rtol=1e-6, check_dtype=False)


@pytest.mark.filterwarnings("ignore::UserWarning")  # Hydra: file checked against the plugin schema
def test_submitit_slurm_launcher_asks_for_one_task_per_device():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install -e '.[cluster]'")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=submitit_slurm", "trainer=slurm", "trainer.devices=4",
                                          "trainer.num_nodes=2"], return_hydra_config=True)
    GlobalHydra.instance().clear()
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 4, 4)
    assert launcher.signal_delay_s == 120  # a field of the plugin's own schema: the two are merged


def test_hparams_search_configs_define_optuna_spaces():
    searches = sorted(p.stem for p in (CONFIGS / "hparams_search").glob("*.yaml"))
    assert {"lightgcn_optuna", "ngcf_optuna"} <= set(searches)
    for name in searches:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
            cfg = compose("train", overrides=[f"hparams_search={name}"])
        GlobalHydra.instance().clear()
        assert cfg.optimized_metric == "val/recall@20" and cfg.optuna.direction == "maximize"
        space, _ = parse_search_space(cfg.optuna.params)
        assert space, name
    space, _ = parse_search_space({"model.num_layers": "range(1, 5)"})
    assert space["model.num_layers"] == Param("int", low=1, high=4, step=1)


def test_search_space_grammar():
    space, fixed = parse_search_space({
        "lr": "tag(log, interval(1e-4, 1e-2))", "dim": "choice(32, 64)", "sampler": "choice(uniform, popularity)",
        "layers": "tag(int, interval(1, 3))", "drop": "interval(0.0, 0.5)", "seed": "7",
        "model": {"dropout": "choice(0.1, 0.2)"},  # nested, as `+optuna.params.model.dropout=...` makes it
    })
    assert space["model.dropout"] == Param("categorical", choices=(0.1, 0.2))
    assert space["lr"] == Param("float", low=1e-4, high=1e-2, log=True)
    assert space["dim"] == Param("categorical", choices=(32, 64))
    assert space["sampler"] == Param("categorical", choices=("uniform", "popularity"))
    assert space["layers"].kind == "int" and (space["layers"].low, space["layers"].high) == (1, 3)
    assert space["drop"] == Param("float", low=0.0, high=0.5)
    assert fixed == ["seed=7"]


@pytest.mark.slow
def test_optuna_search_runs_trials_through_train_and_reports_the_best(tmp_path):
    pytest.importorskip("optuna")
    common = ["hparams_search=lightgcn_optuna", "optuna.pruner.name=none", f"optuna.storage=sqlite:///{tmp_path / 'optuna.db'}",
              f"paths.data_dir={tmp_path / 'data'}", *TINY_DATA, *TRAIN_QUIET, *ONE_EPOCH]
    out = tmp_path / "study"
    check(run_script("scripts/optuna_search.py", *common, "optuna.n_trials=2", f"hydra.run.dir={out}"))
    best = json.loads((out / "optuna_best.json").read_text())
    assert best["num_complete"] == 2 and best["metric"] == "val/recall@20"
    trials = {int(p.name): p for p in job_dirs(out)}
    assert sorted(trials) == [0, 1]
    values = {n: read_metrics(p)["val/recall@20"] for n, p in trials.items()}
    assert best["best_value"] == pytest.approx(max(values.values()))
    assert best["best_trial"] == max(values, key=values.get)
    for trial in trials.values():  # each trial trained with its own suggested values
        cfg = OmegaConf.load(trial / ".hydra" / "config.yaml")
        assert read_metrics(trial)["num_parameters"] == 500 * cfg.model.embedding_dim
        assert f"model.embedding_dim={cfg.model.embedding_dim}" in (trial / ".hydra" / "overrides.yaml").read_text()
    assert len(list(csv.DictReader((out / "results.csv").read_text().splitlines()))) == 2
    # the study is stored: a second call adds a trial to it
    check(run_script("scripts/optuna_search.py", *common, "optuna.n_trials=1", f"hydra.run.dir={tmp_path / 'more'}"))
    assert json.loads((tmp_path / "more" / "optuna_best.json").read_text())["num_trials"] == 3


class _Trial:
    number = 4

    def __init__(self, prune_after: int) -> None:
        self.reports: list[tuple[float, int]] = []
        self.prune_after = prune_after

    def report(self, value: float, step: int) -> None:
        self.reports.append((value, step))

    def should_prune(self) -> bool:
        return len(self.reports) >= self.prune_after


class _Trainer:
    sanity_checking = False

    def __init__(self, world_size: int = 1) -> None:
        self.world_size, self.current_epoch, self.should_stop = world_size, 0, False
        self.callback_metrics = {"val/recall@20": 0.25}


def test_pruning_reports_each_validation_and_stops_single_process_fits(monkeypatch):
    trial = _Trial(prune_after=2)
    monkeypatch.setattr(search, "_active", {"trial": trial, "monitor": "val/recall@20"})
    callback = search.OptunaPruning()
    trainer = _Trainer()
    for epoch in (0, 5):
        trainer.current_epoch = epoch
        callback.on_validation_end(trainer, None)
    assert trial.reports == [(0.25, 0), (0.25, 5)] and trainer.should_stop and callback.pruned
    ddp_trial = _Trial(prune_after=1)
    monkeypatch.setattr(search, "_active", {"trial": ddp_trial, "monitor": "val/recall@20"})
    ddp_trainer = _Trainer(world_size=2)  # other ranks could not follow a stop: never prune under DDP
    search.OptunaPruning().on_validation_end(ddp_trainer, None)
    assert ddp_trial.reports == [] and not ddp_trainer.should_stop
