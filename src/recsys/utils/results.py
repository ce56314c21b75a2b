"""Collect a multirun folder into a results table and plots (``scripts/collect_results.py``).

A job folder is any folder below the sweep folder with a ``.hydra/overrides.yaml`` (written by Hydra) or a
``metrics.json`` (written by ``train.py``); a job without ``metrics.json`` is listed with status ``failed``.
One row per job: job, status, overrides (all, and ``swept``: those that differ between jobs), the choices of ``model``/``sampler``/``data``, depth and embedding
size (``model.num_layers`` / ``model.embedding_dim`` by default), best validation and test metrics, best
epoch, epochs trained and timings. Outputs (into the sweep folder unless told otherwise):

* ``results.csv`` (every column) and ``results.md`` (a Markdown table of the main columns);
* ``plot_metric_vs_depth.png``: the metric against depth, one panel per model, one line per (dim, sampler);
* ``plot_heatmap_depth_dim.png``: depth × embedding size heatmap of the metric, one panel per (model, sampler);
* ``plot_metric_by_sampler.png``: the best value per sampler, grouped by model.

Repeated configurations (e.g. seeds) are averaged in the plots. Plots whose axes do not vary are skipped.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from hydra.experimental.callback import Callback as HydraCallback
from omegaconf import DictConfig, OmegaConf

from recsys.utils.dashboards import sweep_group, upload_results
from recsys.utils.jobs import find_jobs

log = logging.getLogger(__name__)

INFO_COLUMNS = ["job", "status", "overrides", "swept", "model", "sampler", "data", "depth", "dim"]
RUN_COLUMNS = ["best_epoch", "epochs_trained", "fit_seconds", "test_seconds", "num_parameters"]
TABLE_METRICS = ("recall@20", "ndcg@20")


@dataclass
class Collected:
    """What :func:`collect` wrote."""

    table_csv: Path
    table_md: Path
    plots: list[Path] = field(default_factory=list)
    num_jobs: int = 0
    num_failed: int = 0


def _load_yaml(path: Path) -> Any:
    return OmegaConf.load(path) if path.is_file() else None


def _select(cfg: DictConfig | None, key: str) -> Any:
    if cfg is None:
        return None
    try:
        value = OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)
    except Exception:  # an interpolation that cannot be resolved outside the run
        return None
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def job_row(job_dir: Path, root: Path, depth_key: str, dim_key: str) -> dict[str, Any]:
    """One results row from a job folder."""
    overrides = _load_yaml(job_dir / ".hydra" / "overrides.yaml")
    cfg = _load_yaml(job_dir / ".hydra" / "config.yaml")
    hydra_cfg = _load_yaml(job_dir / ".hydra" / "hydra.yaml")
    choices = _select(hydra_cfg, "hydra.runtime.choices") or {}
    row: dict[str, Any] = {
        "job": str(job_dir.relative_to(root)),
        "overrides": " ".join(OmegaConf.to_container(overrides)) if overrides is not None else "",
        "model": choices.get("model") or _target_name(_select(cfg, "model._target_")),
        "sampler": choices.get("sampler"),
        "data": choices.get("data"),
        "depth": _select(cfg, depth_key),
        "dim": _select(cfg, dim_key),
    }
    metrics_file = job_dir / "metrics.json"
    if metrics_file.is_file():
        metrics = json.loads(metrics_file.read_text())
        row["status"] = "ok"
        row.update({k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool)) or v is None})
    else:
        row["status"] = "failed"
    return row


def _target_name(target: str | None) -> str | None:
    return target.rsplit(".", 1)[-1] if isinstance(target, str) else None


def collect_frame(root: Path, depth_key: str = "model.num_layers", dim_key: str = "model.embedding_dim"):
    """The results table of a sweep folder as a pandas DataFrame (one row per job)."""
    rows = [job_row(j, root, depth_key, dim_key) for j in find_jobs(root)]
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=INFO_COLUMNS)
    # the overrides that differ between jobs (what the sweep varied); all of them are in "overrides"
    split = [set(o.split()) for o in frame["overrides"]]
    common = set.intersection(*split) if len(split) > 1 else set()
    frame.insert(frame.columns.get_loc("overrides") + 1, "swept",
                 [" ".join(x for x in o.split() if x not in common) for o in frame["overrides"]])
    for col in ("depth", "dim", "best_epoch", "epochs_trained", "num_parameters"):  # integers stay integers
        if col in frame.columns:
            values = pd.to_numeric(frame[col], errors="coerce")
            if values.notna().any() and (values.dropna() % 1 == 0).all():
                frame[col] = values.astype("Int64")
    metric_cols = sorted(c for c in frame.columns if c.startswith(("val/", "test/")))
    metric_cols.sort(key=lambda c: (not c.startswith("val/"), c))
    ordered = [c for c in INFO_COLUMNS + metric_cols + RUN_COLUMNS if c in frame.columns]
    rest = [c for c in frame.columns if c not in ordered]
    return frame[ordered + rest]


def _fmt(value: Any) -> str:
    if value is None or (not isinstance(value, (list, tuple)) and pd.isna(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value).replace("|", "\\|")


def markdown_table(frame, metrics: Sequence[str] = TABLE_METRICS) -> str:
    """A Markdown table of the main columns (no extra dependency)."""
    cols = [c for c in ["job", "status", "swept" if len(frame) > 1 else "overrides"] if c in frame.columns]
    cols += [f"{split}/{m}" for split in ("val", "test") for m in metrics if f"{split}/{m}" in frame.columns]
    cols += [c for c in ["best_epoch", "epochs_trained", "fit_seconds"] if c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(_fmt(row[c]) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def _varies(frame, col: str) -> bool:
    return col in frame.columns and frame[col].notna().any() and frame[col].nunique(dropna=True) > 1


def make_plots(frame, out_dir: Path, metric: str) -> list[Path]:
    """The PNG plots of :mod:`recsys.utils.results` for ``metric``; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    ok = frame[frame["status"] == "ok"] if "status" in frame.columns else frame
    if metric not in ok.columns or ok[metric].notna().sum() == 0:
        log.warning("No job logged %s: no plots", metric)
        return []
    ok = ok[ok[metric].notna()].copy()
    for col in ("model", "sampler"):
        ok[col] = ok[col].fillna("-").astype(str) if col in ok.columns else "-"
    written: list[Path] = []
    models = sorted(ok["model"].unique())
    samplers = sorted(ok["sampler"].unique())

    if _varies(ok, "depth"):
        fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 4), squeeze=False)
        for ax, model in zip(axes[0], models, strict=True):
            sub = ok[ok["model"] == model]
            series_keys = [c for c in ("dim", "sampler") if c in sub.columns]
            for key, grp in sub.groupby(series_keys, dropna=False):
                mean = grp.groupby("depth")[metric].mean().sort_index()
                label = ", ".join(f"{k}={v}" for k, v in zip(series_keys, key if isinstance(key, tuple) else (key,), strict=True))
                ax.plot(mean.index, mean.values, marker="o", label=label)
            ax.set(title=str(model), xlabel="depth (layers)", ylabel=metric)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.legend(fontsize="small")
            ax.grid(alpha=0.3)
        written.append(_save(fig, out_dir / "plot_metric_vs_depth.png"))

    if _varies(ok, "depth") and _varies(ok, "dim"):
        pairs = [(m, s) for m in models for s in samplers if ((ok["model"] == m) & (ok["sampler"] == s)).any()]
        ncols = min(len(pairs), 4)
        nrows = math.ceil(len(pairs) / ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(4.5 * ncols, 3.8 * nrows), squeeze=False)
        for ax, (model, sampler) in zip(axes.flat, pairs, strict=False):
            sub = ok[(ok["model"] == model) & (ok["sampler"] == sampler)]
            grid = sub.pivot_table(index="depth", columns="dim", values=metric, aggfunc="mean").sort_index()
            image = ax.imshow(grid.values, cmap="viridis", aspect="auto", origin="lower")
            ax.set_xticks(range(grid.shape[1]), [str(c) for c in grid.columns])
            ax.set_yticks(range(grid.shape[0]), [str(i) for i in grid.index])
            for (i, j), v in _cells(grid.values):
                ax.text(j, i, f"{v:.3f}", ha="center", va="center", color="w", fontsize="small")
            ax.set(title=f"{model} / {sampler}", xlabel="embedding dim", ylabel="depth")
            fig.colorbar(image, ax=ax, label=metric)
        for ax in list(axes.flat)[len(pairs):]:
            ax.axis("off")
        written.append(_save(fig, out_dir / "plot_heatmap_depth_dim.png"))

    if _varies(ok, "sampler") or len(samplers) > 1:
        best = ok.groupby(["model", "sampler"])[metric].max().unstack("sampler")
        fig, ax = plt.subplots(figsize=(max(5, 1.5 * len(models) * len(samplers)), 4))
        width = 0.8 / max(len(best.columns), 1)
        for k, sampler in enumerate(best.columns):
            ax.bar([i + k * width for i in range(len(best.index))], best[sampler].values, width, label=str(sampler))
        ax.set_xticks([i + width * (len(best.columns) - 1) / 2 for i in range(len(best.index))], [str(m) for m in best.index])
        ax.set(ylabel=f"best {metric}", title="per sampler")
        ax.legend(title="sampler")
        ax.grid(alpha=0.3, axis="y")
        written.append(_save(fig, out_dir / "plot_metric_by_sampler.png"))
    return written


def _cells(values):
    for idx in np.ndindex(values.shape):
        if not np.isnan(values[idx]):
            yield idx, float(values[idx])


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def collect(
    root: str | Path,
    out_dir: str | Path | None = None,
    metric: str = "test/recall@20",
    depth_key: str = "model.num_layers",
    dim_key: str = "model.embedding_dim",
) -> Collected:
    """Write ``results.csv``, ``results.md`` and the plots of the sweep folder ``root`` into ``out_dir``."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such multirun folder")
    out = Path(out_dir).resolve() if out_dir else root
    out.mkdir(parents=True, exist_ok=True)
    frame = collect_frame(root, depth_key, dim_key)
    result = Collected(out / "results.csv", out / "results.md", num_jobs=len(frame))
    result.num_failed = int((frame["status"] == "failed").sum()) if "status" in frame.columns else 0
    frame.to_csv(result.table_csv, index=False)
    result.table_md.write_text(
        f"# Results of {root.name}\n\n{len(frame)} jobs ({result.num_failed} failed); plots: `{metric}`.\n\n"
        + markdown_table(frame)
    )
    result.plots = make_plots(frame, out, metric) if len(frame) else []
    log.info("Collected %d jobs of %s into %s", len(frame), root, out)
    return result


def sweep_wandb_settings(root: Path) -> dict[str, Any] | None:
    """``{project, entity, group, tags}`` of the sweep's wandb logger (from ``multirun.yaml`` or the first job's
    config), or None when the sweep did not log to wandb."""
    sweep_cfg = _load_yaml(root / "multirun.yaml")
    hydra_sweep_dir = _select(sweep_cfg, "hydra.sweep.dir")
    experiment = _select(sweep_cfg, "hydra.runtime.choices.experiment")
    candidates = [sweep_cfg] + [_load_yaml(j / ".hydra" / "config.yaml") for j in find_jobs(root)]
    cfg = next((c for c in candidates if _select(c, "logger.wandb") is not None), None)
    if cfg is None:
        return None
    wandb_cfg = _select(cfg, "logger.wandb") or {}
    task = _select(cfg, "task_name") or "train"
    group = wandb_cfg.get("group") or sweep_group(task, experiment, hydra_sweep_dir or str(root))
    tags = _select(cfg, "tags") or []
    return {"project": wandb_cfg.get("project") or "recsys", "entity": wandb_cfg.get("entity"), "group": group, "tags": list(tags)}


def add_upload_arguments(parser: Any, what: str = "the table") -> None:
    """The wandb flags of the result scripts: ``--wandb`` / ``--no-wandb`` (``upload``), ``--project``, ``--group``
    (read back by :func:`upload_settings`)."""
    upload = parser.add_mutually_exclusive_group()
    upload.add_argument("--wandb", dest="upload", action="store_true", default=None,
                        help=f"upload {what} to wandb (default: when the sweep logged to wandb)")
    upload.add_argument("--no-wandb", dest="upload", action="store_false")
    parser.add_argument("--project", default=None, help="wandb project (default: the sweep's logger.wandb.project)")
    parser.add_argument("--group", default=None, help="wandb group (default: the sweep's group)")


def upload_settings(
    root: Path, upload: bool | None = None, project: str | None = None, group: str | None = None
) -> dict[str, Any] | None:
    """The wandb settings of an upload for the sweep ``root`` (``upload``: True forces it, False never, None when
    the sweep logged to wandb): :func:`sweep_wandb_settings`, or project ``recsys`` and the folder's name as group
    when the sweep did not log to wandb; ``project``/``group`` override them. None: no upload."""
    settings = sweep_wandb_settings(root.resolve()) if upload is not False else None
    if upload is False or (upload is None and settings is None):
        return None
    settings = settings or {"project": "recsys", "entity": None, "group": root.resolve().name, "tags": []}
    settings["project"] = project or settings["project"]
    settings["group"] = group or settings["group"]
    return settings


class CollectResultsCallback(HydraCallback):
    """Hydra callback: collect the sweep folder at the end of every multirun (table + plots), and upload it
    to wandb when the sweep logged to wandb. Never fails the sweep (problems are logged)."""

    def __init__(self, metric: str = "test/recall@20", upload: bool = True) -> None:
        self.metric = metric
        self.upload = upload

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            root = Path(config.hydra.sweep.dir)
            if not root.is_dir():
                return
            result = collect(root, metric=self.metric)
            log.info("Sweep results: %s (+ %d plots)", result.table_md, len(result.plots))
            settings = sweep_wandb_settings(root) if self.upload else None
            if settings is not None:
                upload_results(result.table_csv, result.plots, save_dir=root, **settings)
        except Exception:  # collecting is a convenience: never turn a finished sweep into a failure
            log.exception("Collecting the sweep results failed; run scripts/collect_results.py by hand")
