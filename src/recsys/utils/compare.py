"""Compare configurations over seeds, with paired significance tests over users (``scripts/compare.py``).

Input: a multirun folder or run folders, each run with ``metrics.json``, ``.hydra/`` and the per-user test
results (:mod:`recsys.utils.per_user`); an ``eval.py`` run is described by the training run of its checkpoint.

1. **Groups.** Runs are grouped by their config with ``seed`` (and what does not change a result: paths, loggers,
   display settings) left out; a group is named by the overrides that differ between groups (``model=ngcf``).
2. **Same data.** Every run must have evaluated the same dataset and split (``data_identity`` of ``metrics.json``;
   the data config for older runs) and the same units (users, or test events): pairing needs the same users.
   Otherwise :class:`~recsys.errors.DataError`, before anything is written.
3. **Per group and metric:** mean, standard deviation and the 95 % t confidence interval over the seeds, and n.
4. **Against the baseline group** (``baseline``: a group name or one of its overrides; default the first group):
   each unit's metric averaged over the group's seeds, then the paired t-test and the Wilcoxon signed-rank test
   over the units, the mean difference with its 95 % CI (:mod:`recsys.significance`). Holm–Bonferroni over all
   comparisons of the table (groups × metrics), per test. ▲/▼: significantly better/worse (the ``test`` chosen,
   ``t`` by default, adjusted p ≤ α; all metrics are higher-is-better).

Outputs: ``comparison.md``, ``comparison.csv`` (one row per group × metric; empty cells where a statistic does not
exist), ``comparison.png`` (a bar per group with its CI, one panel per metric), written atomically;
:class:`CompareCallback` does it at the end of every multirun with ≥ 2 seeds of some configuration.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from hydra.experimental.callback import Callback as HydraCallback
from omegaconf import DictConfig, OmegaConf

from recsys.errors import ConfigError, DataError, RecsysError
from recsys.io import atomic_write_text
from recsys.significance import holm, paired_test, seed_summary
from recsys.utils import per_user
from recsys.utils.dashboards import upload_results
from recsys.utils.jobs import find_jobs
from recsys.utils.plots import pyplot, save_figure
from recsys.utils.results import upload_settings

log = logging.getLogger(__name__)

#: top-level config keys that do not change a run's result (left out when grouping)
IGNORED_KEYS = ("seed", "paths", "logger", "extras", "hydra", "tags", "task_name", "ckpt_path")
#: override prefixes never part of a group's name
NAME_SKIP = ("seed=", "paths.", "hydra", "logger", "extras.", "tags=", "trainer.enable_progress_bar",
             "callbacks.progress_bar", "ckpt_path=")
TESTS = ("t", "wilcoxon")
FILES = ("comparison.md", "comparison.csv", "comparison.png")


@dataclass
class RunRecord:
    """A finished run: its folder, overrides, config (unresolved, :data:`IGNORED_KEYS` left out), seed, metrics
    and per-user table."""

    path: Path
    overrides: list[str]
    config: dict[str, Any]
    seed: Any
    metrics: dict[str, Any]
    table: Any


@dataclass
class Group:
    """Runs of one configuration (its seeds), named by the overrides that set it apart."""

    name: str
    overrides: list[str]
    runs: list[RunRecord]

    @property
    def seeds(self) -> list[Any]:
        return [r.seed for r in self.runs]


@dataclass
class Comparison:
    """The statistics of a comparison: ``table`` has one row per group × metric (columns of ``comparison.csv``)."""

    table: Any
    groups: list[Group]
    baseline: int
    metrics: list[str]
    units: list[str]
    num_units: int
    alpha: float
    confidence: float
    test: str


# -- runs and groups --------------------------------------------------------------------------------
def run_folders(paths: Sequence[str | Path]) -> list[Path]:
    """The finished runs (folders with ``metrics.json``) given as run folders or below multirun folders."""
    found: list[Path] = []
    for given in map(Path, paths):
        if not given.is_dir():
            raise DataError(f"{given}: no such folder")
        if (given / "metrics.json").is_file():
            found.append(given.resolve())
            continue
        jobs = find_jobs(given.resolve())
        done = [j for j in jobs if (j / "metrics.json").is_file()]
        if len(done) < len(jobs):
            log.warning("%s: %d of %d jobs have no metrics.json (failed or running): left out", given,
                        len(jobs) - len(done), len(jobs))
        if not done:
            raise DataError(f"{given}: no finished run (a folder with metrics.json) in it")
        found += done
    return list(dict.fromkeys(found))


def _yaml(path: Path) -> Any:
    try:
        return OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception as err:  # noqa: BLE001 - yaml/omegaconf raise many types for a damaged file
        raise DataError(f"{path}: not a readable config ({type(err).__name__}: {err})") from err


def load_run(path: str | Path, with_table: bool = True) -> RunRecord:
    """Read a finished run folder (``with_table=False``: without its per-user table). An ``eval.py`` run (no
    ``model`` in its config) takes config and overrides of the training run whose checkpoint it tested
    (``<run>/checkpoints/x.ckpt``)."""
    path = Path(path)
    metrics_file = path / "metrics.json"
    try:
        metrics = json.loads(metrics_file.read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"{metrics_file}: not a readable metrics file ({err})") from err
    described = path
    config = _yaml(path / ".hydra" / "config.yaml") if (path / ".hydra" / "config.yaml").is_file() else None
    if (config is None or "model" not in config) and metrics.get("ckpt_path"):
        described = Path(metrics["ckpt_path"]).parents[1]
        config = _yaml(described / ".hydra" / "config.yaml") if (described / ".hydra" / "config.yaml").is_file() else None
    if not isinstance(config, dict):
        raise DataError(f"{path}: no .hydra/config.yaml to tell its configuration (a run folder of train.py, or of "
                        f"eval.py whose checkpoint's run folder still exists)")
    overrides_file = described / ".hydra" / "overrides.yaml"
    overrides = [str(o) for o in _yaml(overrides_file)] if overrides_file.is_file() else []
    kept = {k: v for k, v in config.items() if k not in IGNORED_KEYS}
    table = per_user.read_table(path) if with_table else None
    return RunRecord(path, overrides, kept, config.get("seed"), metrics, table)


def _named(override: str) -> bool:
    return not override.lstrip("+~").startswith(NAME_SKIP)


def group_runs(runs: Sequence[RunRecord]) -> list[Group]:
    """Runs grouped by config without the seed, groups in order of their first run, each named by its overrides
    that not every group has."""
    by_config: dict[str, list[RunRecord]] = {}
    for run in runs:
        by_config.setdefault(json.dumps(run.config, sort_keys=True, default=str), []).append(run)
    members = list(by_config.values())
    overrides = [[o for o in rs[0].overrides if _named(o)] for rs in members]
    common = set.intersection(*(set(o) for o in overrides)) if len(members) > 1 else set()
    names = [" ".join(o for o in ovr if o not in common) for ovr in overrides]
    groups = []
    for name, ovr, rs in zip(names, overrides, members, strict=True):
        if not name or names.count(name) > 1:  # no distinguishing override: name it by its first run too
            name = f"{name} ({rs[0].path.name})".strip() if len(members) > 1 else (name or " ".join(ovr) or "all runs")
        groups.append(Group(name, ovr, rs))
    return groups


def pick_baseline(groups: Sequence[Group], baseline: str | None) -> int:
    """Index of the group named ``baseline``, or of the one group that has it among its overrides (default 0)."""
    if baseline is None:
        return 0
    exact = [i for i, g in enumerate(groups) if g.name == baseline]
    matches = exact or [i for i, g in enumerate(groups) if baseline in g.overrides]
    if len(matches) != 1:
        what = "matches no group" if not matches else f"matches {len(matches)} groups"
        raise ConfigError(f"--baseline {baseline!r} {what}; groups: {', '.join(repr(g.name) for g in groups)}")
    return matches[0]


def check_same_data(runs: Sequence[RunRecord]) -> list[str]:
    """Refuse runs of different datasets or splits (:class:`DataError`); return the unit columns."""
    def data_of(run: RunRecord) -> str:
        if run.metrics.get("data_identity"):
            return str(run.metrics["data_identity"])
        data = run.config.get("data") or {}
        return json.dumps({"target": data.get("_target_"), "source": data.get("source")}, sort_keys=True, default=str)

    first, ref = runs[0], data_of(runs[0])
    hint = "the paired tests need the same users: compare runs of one dataset and split"
    for run in runs[1:]:
        if data_of(run) != ref:
            raise DataError(f"runs on different datasets or splits: {first.path} evaluated {ref}, {run.path} evaluated "
                            f"{data_of(run)}; {hint}")
    units = [c for c in first.table.columns if "@" not in c]
    keys = first.table[units].to_numpy()
    for run in runs[1:]:
        other = [c for c in run.table.columns if "@" not in c]
        if other != units or not np.array_equal(run.table[other].to_numpy(), keys):
            raise DataError(f"{run.path} evaluated other units ({', '.join(other)}: {len(run.table)} rows) than "
                            f"{first.path} ({', '.join(units)}: {len(first.table)} rows); {hint}")
    return units


def select_metrics(runs: Sequence[RunRecord], metrics: Sequence[str] | None) -> list[str]:
    """The compared metrics: those asked (``["all"]``: every one), by default every metric at cut-off 20 (all when
    none is at 20); each must be in every run's per-user table."""
    available = [c for c in runs[0].table.columns if "@" in c and all(c in r.table.columns for r in runs)]
    if not metrics:
        return [m for m in available if m.endswith("@20")] or available
    if list(metrics) == ["all"]:
        return available
    unknown = [m for m in metrics if m not in available]
    if unknown:
        raise ConfigError(f"--metrics: {', '.join(unknown)} not in the per-user results; available: {', '.join(available)}")
    return list(metrics)


# -- statistics -------------------------------------------------------------------------------------
def compare_runs(
    runs: Sequence[RunRecord],
    baseline: str | None = None,
    metrics: Sequence[str] | None = None,
    alpha: float = 0.05,
    confidence: float = 0.95,
    test: str = "t",
) -> Comparison:
    """The statistics of the module docstring for ``runs`` (nothing written)."""
    import pandas as pd

    if not runs:
        raise DataError("no run to compare")
    if test not in TESTS:
        raise ConfigError(f"--test {test!r}; expected one of {TESTS}")
    if not (0.0 < alpha < 1.0 and 0.0 < confidence < 1.0):
        raise ConfigError(f"--alpha and --confidence must lie in (0, 1), got {alpha} and {confidence}")
    units = check_same_data(runs)
    groups = group_runs(runs)
    base = pick_baseline(groups, baseline)
    names = select_metrics(runs, metrics)
    # (runs × units × metrics) per group: seed means per run, unit means over the seeds
    values = [np.stack([r.table[names].to_numpy(np.float64) for r in g.runs]) for g in groups]
    unit_means = [v.mean(0) for v in values]
    rows = []
    for gi, group in enumerate(groups):
        run_means = values[gi].mean(1)
        for mi, metric in enumerate(names):
            summary = seed_summary(run_means[:, mi], confidence)
            row = {"group": group.name, "baseline": gi == base, "metric": metric, "n": summary.n,
                   "seeds": " ".join(map(str, group.seeds)), "mean": summary.mean, "std": summary.std,
                   "ci_low": summary.ci_low, "ci_high": summary.ci_high, "units": len(runs[0].table)}
            if gi != base:
                pt = paired_test(unit_means[base][:, mi], unit_means[gi][:, mi], confidence)
                row.update(mean_diff=pt.mean_diff, diff_ci_low=pt.diff_ci_low, diff_ci_high=pt.diff_ci_high,
                           t_statistic=pt.t_statistic, t_pvalue=pt.t_pvalue, wilcoxon_statistic=pt.wilcoxon_statistic,
                           wilcoxon_pvalue=pt.wilcoxon_pvalue, wilcoxon_units=pt.wilcoxon_n, note=pt.note)
            rows.append(row)
    table = pd.DataFrame(rows)
    for col in ("mean_diff", "diff_ci_low", "diff_ci_high", "t_statistic", "t_pvalue", "wilcoxon_statistic",
                "wilcoxon_pvalue", "wilcoxon_units", "note"):
        if col not in table.columns:
            table[col] = np.nan if col != "note" else ""
    table["note"] = table["note"].fillna("")
    for name in TESTS:  # the family: every comparison of the table, one correction per test
        table[f"{name}_pvalue_holm"] = holm(table[f"{name}_pvalue"].to_numpy(np.float64))
    adjusted = table[f"{test}_pvalue_holm"].to_numpy(np.float64)
    significant = ~np.isnan(adjusted) & (adjusted <= alpha)
    table["significant"] = significant
    diff = table["mean_diff"].to_numpy(np.float64)
    table["direction"] = np.where(significant & (diff > 0), "better", np.where(significant & (diff < 0), "worse", ""))
    table["runs"] = [" ".join(str(r.path) for r in groups[i].runs) for i in np.repeat(range(len(groups)), len(names))]
    order = ["group", "baseline", "metric", "n", "seeds", "mean", "std", "ci_low", "ci_high", "units", "mean_diff",
             "diff_ci_low", "diff_ci_high", "t_statistic", "t_pvalue", "t_pvalue_holm", "wilcoxon_statistic",
             "wilcoxon_pvalue", "wilcoxon_pvalue_holm", "wilcoxon_units", "significant", "direction", "note", "runs"]
    table["wilcoxon_units"] = table["wilcoxon_units"].astype("Int64")
    return Comparison(table[order], groups, base, names, units, len(runs[0].table), alpha, confidence, test)


# -- outputs ----------------------------------------------------------------------------------------
ARROWS = {"better": " ▲", "worse": " ▼", "": ""}


def _num(x: float, fmt: str = ".4f") -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def _p(x: float) -> str:
    if x is None or math.isnan(x):
        return "–"
    if x == 0.0:  # below the smallest float scipy returns
        return "< 1e-300"
    return f"{x:.3f}" if x >= 1e-3 else f"{x:.1e}"


def _cell(row: Any) -> str:
    spread = "(n = 1)" if row["n"] < 2 else f"± {(row['ci_high'] - row['ci_low']) / 2:.4f}"
    return f"{row['mean']:.4f} {spread}{ARROWS[row['direction']]}"


def markdown(comp: Comparison, title: str) -> str:
    """``comparison.md``: the groups × metrics table and the paired tests against the baseline."""
    import pandas as pd

    t = comp.table
    base = comp.groups[comp.baseline].name
    unit = "users" if comp.units == ["user"] else "test events" if "position" in comp.units else "units"
    n_tests = int(t[f"{comp.test}_pvalue"].notna().sum())
    test_name = "paired t-test" if comp.test == "t" else "Wilcoxon signed-rank test"
    conf = f"{100 * comp.confidence:g} %"
    lines = [
        f"# Comparison: {title}", "",
        f"{sum(len(g.runs) for g in comp.groups)} runs in {len(comp.groups)} groups (runs of one config, seeds apart), "
        f"{comp.num_units} {unit if comp.num_units != 1 else unit[:-1]}; baseline: `{base}`.", "",
        f"Cells: mean ± half-width of the {conf} confidence interval over the group's n seeds (t distribution). "
        f"▲ / ▼: significantly better / worse than the baseline: {test_name} over the {comp.num_units} {unit} "
        f"(each {unit[:-1]}'s metric averaged over its group's seeds), Holm–Bonferroni over the {n_tests} "
        f"comparisons of the table, α = {comp.alpha:g}.", "",
        "| group | n | " + " | ".join(comp.metrics) + " |",
        "|---|---|" + "---|" * len(comp.metrics),
    ]
    for group in comp.groups:
        rows = t[t["group"] == group.name].set_index("metric")
        label = f"`{group.name}`" + (" (baseline)" if group is comp.groups[comp.baseline] else "")
        cells = [_cell(rows.loc[m]) for m in comp.metrics]
        lines.append(f"| {label} | {len(group.runs)} | " + " | ".join(cells) + " |")
    others = t[~t["baseline"]]
    if len(others):
        lines += ["", f"## Paired tests against `{base}`", "",
                  f"Δ = group − baseline ({conf} CI of the mean difference); p-values raw (Holm-adjusted); "
                  f"'≠ 0': {unit} where the two differ (those the Wilcoxon test ranks).", "",
                  f"| group | metric | Δ mean [{conf} CI] | t-test p | Wilcoxon p | {unit} (≠ 0) | |",
                  "|---|---|---|---|---|---|---|"]
        for _, r in others.iterrows():
            delta = (f"{_num(r['mean_diff'], '+.4f')} [{_num(r['diff_ci_low'], '+.4f')}, "
                     f"{_num(r['diff_ci_high'], '+.4f')}]")
            mark = ARROWS[r["direction"]].strip() or r["note"] or "not significant"
            if r["note"] and ARROWS[r["direction"]]:
                mark += f" ({r['note']})"
            nonzero = "–" if pd.isna(r["wilcoxon_units"]) else str(int(r["wilcoxon_units"]))
            lines.append(f"| `{r['group']}` | {r['metric']} | {delta} | {_p(r['t_pvalue'])} ({_p(r['t_pvalue_holm'])}) "
                         f"| {_p(r['wilcoxon_pvalue'])} ({_p(r['wilcoxon_pvalue_holm'])}) | {r['units']} ({nonzero}) "
                         f"| {mark} |")
    return "\n".join(lines) + "\n"


def plot(comp: Comparison, path: Path) -> Path:
    """``comparison.png``: one panel per metric, a bar per group (mean over seeds) with its CI as error bar; the
    baseline grey, ▲/▼ markers on significant differences."""
    plt = pyplot()
    n_groups = len(comp.groups)
    fig, axes = plt.subplots(1, len(comp.metrics), figsize=(max(3.5, 0.9 * n_groups + 1.5) * len(comp.metrics), 4.2),
                             squeeze=False)
    labels = [(g.name if len(g.name) <= 28 else g.name[:27] + "…") + ("\n(baseline)" if i == comp.baseline else "")
              for i, g in enumerate(comp.groups)]
    for ax, metric in zip(axes[0], comp.metrics, strict=True):
        sub = comp.table[comp.table["metric"] == metric].reset_index(drop=True)
        mean = sub["mean"].to_numpy(np.float64)
        err = np.nan_to_num((sub["ci_high"] - sub["ci_low"]).to_numpy(np.float64) / 2)
        colors = ["0.6" if b else f"C{i % 10}" for i, b in enumerate(sub["baseline"])]
        x = np.arange(n_groups)
        ax.bar(x, mean, yerr=err, capsize=4, color=colors)
        for i, direction in enumerate(sub["direction"]):
            if direction:
                ax.plot(x[i], mean[i] + err[i] + 0.03 * max(mean.max(), 1e-12), marker="^" if direction == "better"
                        else "v", color="green" if direction == "better" else "red", markersize=9)
        ax.set_xticks(x, labels, rotation=25 if n_groups > 2 else 0, ha="right" if n_groups > 2 else "center")
        ax.set(title=metric, ylabel=f"{metric} (mean, {100 * comp.confidence:g} % CI)")
        ax.grid(alpha=0.3, axis="y")
    return save_figure(fig, path)


@dataclass
class Written:
    comparison: Comparison
    files: list[Path]


def compare(paths: Sequence[str | Path], out_dir: str | Path | None = None, **options: Any) -> Written:
    """Compare the runs under ``paths`` and write :data:`FILES` into ``out_dir`` (default: the one folder given, or
    the runs' common parent); ``options`` are :func:`compare_runs`'s (``baseline``, ``metrics``, ``alpha``,
    ``confidence``, ``test``). Every check runs before anything is written."""
    folders = run_folders(paths)
    comp = compare_runs([load_run(f) for f in folders], **options)
    if out_dir is None:
        out_dir = Path(paths[0]) if len(paths) == 1 else Path(os.path.commonpath(folders))
    out = Path(out_dir)
    title = out.resolve().name
    md = markdown(comp, title)
    csv = comp.table.to_csv(index=False)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / FILES[1], csv)
    written = [out / FILES[0], out / FILES[1], plot(comp, out / FILES[2])]
    atomic_write_text(written[0], md)
    log.info("Comparison of %d groups written to %s", len(comp.groups), out / FILES[0])
    return Written(comp, written)


def has_repeated_seeds(root: Path, min_seeds: int = 2) -> bool:
    """Whether some configuration of the sweep ``root`` ran with ≥ ``min_seeds`` different seeds."""
    runs = [load_run(f, with_table=False) for f in run_folders([root])]
    return any(len(set(map(str, g.seeds))) >= min_seeds for g in group_runs(runs))


class CompareCallback(HydraCallback):
    """Hydra callback: at the end of a multirun with ≥ ``min_seeds`` seeds of some configuration, write the
    comparison next to ``results.md`` (and upload its table to wandb when the sweep logged to wandb). Never fails
    the sweep: a refused or failed comparison is logged."""

    def __init__(self, min_seeds: int = 2, upload: bool = True) -> None:
        self.min_seeds = min_seeds
        self.upload = upload

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            root = Path(config.hydra.sweep.dir)
            if not root.is_dir() or not has_repeated_seeds(root, self.min_seeds):
                return
            result = compare([root])
            log.info("Sweep comparison: %s", result.files[0])
            if self.upload:
                upload_comparison(root, result)  # when the sweep logged to wandb
        except RecsysError as err:
            log.warning("No comparison of the sweep's seeds: %s", err)
        except Exception:  # a convenience: never turn a finished sweep into a failure
            log.exception("Comparing the sweep failed; run scripts/compare.py by hand")


def upload_comparison(root: Path, result: Written, upload: bool | None = None, project: str | None = None,
                      group: str | None = None) -> Path | None:
    """Log ``comparison.csv`` (a ``wandb.Table`` under ``comparison``) and the plot as a run of the sweep's wandb
    group (``upload``: see :func:`recsys.utils.results.upload_settings`); returns the wandb run folder, or None."""
    settings = upload_settings(Path(root), upload, project, group)
    if settings is None:
        return None
    _, csv, png = result.files
    return upload_results(csv, [png], save_dir=csv.parent, key="comparison", **settings)
