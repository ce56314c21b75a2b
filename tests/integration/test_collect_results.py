"""scripts/collect_results.py on a sweep folder: table (CSV + Markdown) and plots, checked on a folder whose
jobs' metrics are known (written here, no training)."""

from __future__ import annotations

import csv
import json
from itertools import product
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from recsys.utils.jobs import find_jobs
from recsys.utils.results import collect, collect_frame
from tests.integration.conftest import check, run_script

PNG = b"\x89PNG\r\n\x1a\n"


def known_metric(model: str, layers: int, dim: int, sampler: str) -> float:
    return 0.1 * layers + 0.001 * dim + (0.05 if model == "ngcf" else 0.0) + (0.02 if sampler == "popularity" else 0.0)


def write_job(job: Path, model: str, layers: int, dim: int, sampler: str, finished: bool = True) -> None:
    overrides = [f"model={model}", f"model.num_layers={layers}", f"model.embedding_dim={dim}", f"sampler={sampler}",
                 "paths.data_dir=/data"]
    (job / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(overrides), job / ".hydra" / "overrides.yaml")
    OmegaConf.save(OmegaConf.create({"model": {"num_layers": layers, "embedding_dim": dim, "lr": "${oc.env:NOPE}"}}),
                   job / ".hydra" / "config.yaml")
    choices = {"model": model, "sampler": sampler, "data": "synthetic_graph"}
    OmegaConf.save(OmegaConf.create({"hydra": {"runtime": {"choices": choices}}}), job / ".hydra" / "hydra.yaml")
    if finished:
        value = known_metric(model, layers, dim, sampler)
        metrics = {"val/recall@20": value - 0.01, "val/ndcg@20": value / 2, "test/recall@20": value,
                   "test/ndcg@20": value / 3, "best_epoch": layers, "epochs_trained": 10, "fit_seconds": 12.5,
                   "test_seconds": 0.5, "num_parameters": 100 * dim, "best_checkpoint": str(job / "x.ckpt")}
        (job / "metrics.json").write_text(json.dumps(metrics))


@pytest.fixture
def sweep(tmp_path) -> Path:
    """16 finished jobs (model x depth x dim x sampler) and one that failed (no metrics.json)."""
    root = tmp_path / "sweep"
    grid = list(product(["lightgcn", "ngcf"], [1, 2], [8, 16], ["uniform", "popularity"]))
    for num, (model, layers, dim, sampler) in enumerate(grid):
        write_job(root / str(num), model, layers, dim, sampler)
    write_job(root / str(len(grid)), "ngcf", 3, 8, "uniform", finished=False)
    (root / ".hydra").mkdir()  # the sweep's own files are not a job
    OmegaConf.save(OmegaConf.create(["x=1"]), root / ".hydra" / "overrides.yaml")
    return root


def test_jobs_are_found_in_numeric_order(sweep):
    assert [p.name for p in find_jobs(sweep)] == [str(i) for i in range(17)]


def test_table_has_one_row_per_job_with_its_settings_and_metrics(sweep):
    result = collect(sweep)
    assert result.table_csv == sweep / "results.csv" and result.num_jobs == 17 and result.num_failed == 1
    rows = list(csv.DictReader(result.table_csv.read_text().splitlines()))
    assert len(rows) == 17
    for row in rows[:16]:
        model, layers, dim, sampler = row["model"], int(row["depth"]), int(row["dim"]), row["sampler"]
        assert row["status"] == "ok" and f"model.num_layers={layers}" in row["overrides"]
        assert float(row["test/recall@20"]) == pytest.approx(known_metric(model, layers, dim, sampler))
        assert int(row["epochs_trained"]) == 10 and float(row["fit_seconds"]) == 12.5
        assert "paths.data_dir" not in row["swept"] and f"model={model}" in row["swept"]
    assert rows[16]["status"] == "failed" and rows[16]["test/recall@20"] == ""
    md = result.table_md.read_text()
    assert md.count("\n| ") == 18  # header + 17 jobs
    header = md.splitlines()[4]
    for col in ("swept", "val/recall@20", "test/recall@20", "test/ndcg@20", "best_epoch", "epochs_trained", "fit_seconds"):
        assert col in header
    assert "| 0 | ok | model=lightgcn model.num_layers=1 model.embedding_dim=8 sampler=uniform | 0.0980 |" in md


def test_plots_are_written_as_png(sweep, tmp_path):
    result = collect(sweep, tmp_path / "out", metric="test/recall@20")
    names = sorted(p.name for p in result.plots)
    assert names == ["plot_heatmap_depth_dim.png", "plot_metric_by_sampler.png", "plot_metric_vs_depth.png"]
    for path in result.plots:
        assert path.parent == tmp_path / "out" and path.read_bytes()[:8] == PNG and path.stat().st_size > 5000


def test_repeated_settings_are_averaged(tmp_path, monkeypatch):
    """make_plots draws the mean of repeated settings: read the plotted line back from the figure."""
    from recsys.utils import results

    root = tmp_path / "seeds"
    for num, layers in enumerate([1, 1, 2]):
        write_job(root / str(num), "lightgcn", layers, 8, "uniform")
    frame = collect_frame(root)
    frame.loc[1, "test/recall@20"] = 0.5  # two runs of depth 1: their mean is plotted
    plotted = {}
    save = results._save

    def keep_lines(fig, path):
        plotted[path.name] = [(list(line.get_xdata()), list(line.get_ydata())) for ax in fig.axes
                              for line in ax.get_lines()]
        return save(fig, path)

    monkeypatch.setattr(results, "_save", keep_lines)
    (tmp_path / "out").mkdir()
    written = results.make_plots(frame, tmp_path / "out", "test/recall@20")
    assert [p.name for p in written] == ["plot_metric_vs_depth.png"] and written[0].read_bytes()[:8] == PNG
    ((xs, ys),) = plotted["plot_metric_vs_depth.png"]
    assert xs == [1, 2]
    assert ys[0] == pytest.approx((known_metric("lightgcn", 1, 8, "uniform") + 0.5) / 2)
    assert ys[1] == pytest.approx(known_metric("lightgcn", 2, 8, "uniform"))


def test_cli_writes_into_the_sweep_folder_by_default(sweep):
    proc = check(run_script("scripts/collect_results.py", str(sweep), "--no-wandb"))
    assert "17 jobs (1 failed)" in proc.stdout
    for name in ("results.csv", "results.md", "plot_metric_vs_depth.png", "plot_heatmap_depth_dim.png", "plot_metric_by_sampler.png"):
        assert (sweep / name).is_file(), name


def test_cli_rejects_a_folder_without_jobs(tmp_path):
    proc = run_script("scripts/collect_results.py", str(tmp_path), "--no-wandb")
    assert proc.returncode == 2 and "error: no job folder" in proc.stderr
    proc = run_script("scripts/collect_results.py", str(tmp_path / "missing"))
    assert proc.returncode == 2 and "no such folder" in proc.stderr
