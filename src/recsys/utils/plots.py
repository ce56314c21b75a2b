"""Training curves from a run's CSV log (``<run>/csv/metrics.csv``, configs/logger/csv.yaml).

* :func:`epoch_table`: the CSV as one row per epoch (Lightning writes training and validation values of an
  epoch on separate rows; the last non-empty value of each column per epoch is kept);
* :func:`plot_curves`: train loss and a validation metric per epoch, one line per run (a sweep = one figure);
* :func:`write_run_curves` / :func:`plot_folder`: ``plots/curves.png`` of one run or of a sweep folder;
* :func:`curves_at_end`: the last step of ``train()`` (rank 0; a missing CSV logger is a warning, never
  an error; the PNG goes to wandb when that logger is on).

Figures are drawn with matplotlib's Agg backend and written atomically (temporary file + rename).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import OmegaConf
from pytorch_lightning.loggers import CSVLogger as LightningCSVLogger

from recsys.errors import DataError
from recsys.io import atomic_write
from recsys.utils.dashboards import log_images
from recsys.utils.jobs import find_jobs
from recsys.utils.loggers import CSVLogger

log = logging.getLogger(__name__)

LOSS_KEY = "train/loss"
DEFAULT_METRIC = "val/recall@20"
CSV_NAME = Path("csv") / "metrics.csv"


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display needed); imported on first use, so importing this
    module never changes the backend of a notebook."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    """Write ``fig`` as a PNG atomically and close it."""
    path = Path(path)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=dpi)
    pyplot().close(fig)
    atomic_write(path, lambda f: f.write(buf.getvalue()))
    return path


def epoch_table(csv_path: str | Path):
    """``metrics.csv`` as a pandas frame indexed by epoch (columns: every logged key).

    Rows without an epoch and the test rows (logged after training, one epoch past the last) keep their own
    epoch; callers pick the columns they plot, so test-only rows never show up in a train/val curve."""
    path = Path(csv_path)
    try:
        frame = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise DataError(f"{path}: cannot read the CSV log ({err})") from None
    if "epoch" not in frame.columns:
        raise DataError(f"{path}: no 'epoch' column (expected a Lightning CSVLogger metrics.csv)")
    frame = frame.dropna(subset=["epoch"])
    frame["epoch"] = frame["epoch"].astype(int)
    return frame.groupby("epoch").last()  # last non-null value of each column per epoch


def run_metric(run_dir: str | Path, default: str = DEFAULT_METRIC) -> str:
    """The run's monitored metric (``monitor.metric`` of ``.hydra/config.yaml``), else ``default``."""
    cfg_file = Path(run_dir) / ".hydra" / "config.yaml"
    if cfg_file.is_file():
        try:
            value = OmegaConf.select(OmegaConf.load(cfg_file), "monitor.metric", default=None)
        except Exception:  # unreadable or unresolvable: fall back
            value = None
        if isinstance(value, str) and value:
            return value
    return default


def plot_curves(
    tables: Mapping[str, Any], out_path: str | Path, metric: str = DEFAULT_METRIC, loss: str = LOSS_KEY,
    title: str | None = None,
) -> Path:
    """Two panels, ``loss`` and ``metric`` against the epoch, one line per entry of ``tables`` (label → the
    frame of :func:`epoch_table`). Epochs without a value (e.g. no validation that epoch) are skipped."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key in zip(axes, (loss, metric), strict=True):
        drawn = 0
        for label, table in tables.items():
            if key not in table.columns:
                continue
            series = table[key].dropna()
            if series.empty:
                continue
            ax.plot(series.index, series.values, marker="o" if len(series) < 30 else None, markersize=3,
                    label=label if len(tables) > 1 else None)
            drawn += 1
        if drawn == 0:
            ax.text(0.5, 0.5, f"{key}: not logged", ha="center", va="center", transform=ax.transAxes)
        ax.set(xlabel="epoch", ylabel=key, title=key)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if drawn > 1:
            ax.legend(fontsize="x-small")
    if title:
        fig.suptitle(title, fontsize="medium")
    return save_figure(fig, out_path)


def write_run_curves(run_dir: str | Path, metric: str | None = None, out_path: str | Path | None = None,
                     csv_path: str | Path | None = None) -> Path:
    """``<run>/plots/curves.png`` (or ``out_path``) from ``<run>/csv/metrics.csv`` (or ``csv_path``)."""
    run_dir = Path(run_dir)
    csv_file = Path(csv_path) if csv_path is not None else run_dir / CSV_NAME
    if not csv_file.is_file():
        raise DataError(f"{csv_file}: no CSV log (train with logger=csv or logger=many)")
    metric = metric or run_metric(run_dir)
    out = Path(out_path) if out_path is not None else run_dir / "plots" / "curves.png"
    return plot_curves({run_dir.name: epoch_table(csv_file)}, out, metric=metric, title=str(run_dir.name))


def sweep_jobs(folder: Path) -> list[Path]:
    """The sweep's job folders (:func:`~recsys.utils.jobs.find_jobs`) that hold a CSV log."""
    return [job for job in find_jobs(folder) if (job / CSV_NAME).is_file()]


def job_labels(folder: Path, jobs: Sequence[Path]) -> list[str]:
    """``<job>: <overrides that differ between jobs>`` from each job's ``.hydra/overrides.yaml``."""
    overrides = []
    for job in jobs:
        f = job / ".hydra" / "overrides.yaml"
        try:
            overrides.append([str(o) for o in OmegaConf.load(f)] if f.is_file() else [])
        except Exception:
            overrides.append([])
    common = set.intersection(*(set(o) for o in overrides)) if len(overrides) > 1 else set()
    labels = []
    for job, ovr in zip(jobs, overrides, strict=True):
        varied = " ".join(o for o in ovr if o not in common and not o.startswith(("hydra", "paths.")))
        name = str(job.relative_to(folder))
        labels.append(f"{name}: {varied}" if varied else name)
    return labels


def plot_folder(folder: str | Path, metric: str | None = None, out_path: str | Path | None = None) -> Path:
    """Curves of a run folder (``<run>/plots/curves.png``) or of a sweep folder (one line per job,
    ``<sweep>/plots/curves.png``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder")
    if (folder / CSV_NAME).is_file():
        return write_run_curves(folder, metric, out_path)
    jobs = sweep_jobs(folder)
    if not jobs:
        raise DataError(f"{folder}: neither a run folder with {CSV_NAME} nor a sweep folder with job folders holding one")
    metric = metric or run_metric(jobs[0])
    tables = {label: epoch_table(job / CSV_NAME) for label, job in zip(job_labels(folder, jobs), jobs, strict=True)}
    out = Path(out_path) if out_path is not None else folder / "plots" / "curves.png"
    return plot_curves(tables, out, metric=metric, title=f"{folder.name} ({len(jobs)} jobs)")


def csv_logger(loggers: Sequence[Any]) -> Any | None:
    """The first CSV logger (recsys's or Lightning's) among ``loggers`` (None without one)."""
    return next((lg for lg in loggers if isinstance(lg, (CSVLogger, LightningCSVLogger))), None)


def csv_log_file(loggers: Sequence[Any]) -> Path | None:
    """``metrics.csv`` of the first CSV logger among ``loggers`` (None without one)."""
    lg = csv_logger(loggers)
    return Path(lg.log_dir) / "metrics.csv" if lg is not None else None


def curves_at_end(output_dir: str | Path, loggers: Sequence[Any], metric: str, is_global_zero: bool = True) -> Path | None:
    """End of a training run: ``<output_dir>/plots/curves.png`` from the CSV log, sent to wandb when that
    logger is on. Rank 0 only; any problem is logged as a warning and never fails the run."""
    if not is_global_zero:
        return None
    csv_file = csv_log_file(loggers)
    if csv_file is None:
        log.warning("No CSV logger (logger=csv or logger=many): no plots/curves.png for this run")
        return None
    try:
        csv_logger(loggers).save()  # the CSV writer buffers rows; make sure they are on disk (idempotent)
        path = write_run_curves(output_dir, metric, csv_path=csv_file)
    except Exception as err:  # plots are a by-product: never fail the run for them
        log.warning("Could not draw plots/curves.png: %s", err)
        return None
    log.info("Wrote %s", path)
    log_images(loggers, {"plots/curves": path})
    return path


def plot_embedding_panels(panels: Sequence[dict[str, Any]], out_path: str | Path, ncols: int = 4) -> Path:
    """One panel per run (NGCF Fig. 4): items as dots and users as stars in 2-D, coloured by user.

    Each panel is ``{"title", "user_xy" (n, 2), "item_xy" (m, 2), "labels" (m,) in [0, n)}``."""
    plt = pyplot()
    ncols = max(1, min(ncols, len(panels)))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 3.6 * nrows), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for ax, panel in zip(axes.flat, panels, strict=False):
        labels = np.asarray(panel["labels"])
        user_xy, item_xy = np.asarray(panel["user_xy"]), np.asarray(panel["item_xy"])
        for u in range(user_xy.shape[0]):
            color = cmap(u % 10)
            pts = item_xy[labels == u]
            ax.scatter(pts[:, 0], pts[:, 1], s=9, color=color, alpha=0.7, linewidths=0)
            ax.scatter(user_xy[u, 0], user_xy[u, 1], s=140, marker="*", color=color, edgecolors="k", linewidths=0.6)
        ax.set_title(panel["title"], fontsize="small")
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    return save_figure(fig, out_path, dpi=90)
