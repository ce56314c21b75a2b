"""scripts/compare.py and recsys.utils.compare on run folders whose per-user results are known (written here, no
training): groups and names, CIs over seeds, paired tests and their marks, Holm over the table, refusals."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from recsys.errors import ConfigError, DataError
from recsys.significance import holm, seed_summary
from recsys.utils import per_user
from recsys.utils.compare import FILES, compare, compare_runs, group_runs, load_run, run_folders
from tests.integration.conftest import ROOT, TINY_DATA, TRAIN_QUIET, check, run_script

PNG = b"\x89PNG\r\n\x1a\n"
METRICS = ("recall@20", "ndcg@20", "recall@50")


def write_run(folder: Path, model: str, seed: int, values: dict[str, np.ndarray], data: str = "synthetic_graph-0",
              users: np.ndarray | None = None, extra: tuple[str, ...] = ()) -> Path:
    """A finished train.py run folder: .hydra/{config,overrides}.yaml, metrics.json, per_user.parquet."""
    overrides = [f"model={model}", f"seed={seed}", "experiment=x", "paths.data_dir=/d", *extra]
    config = {"seed": seed, "model": {"name": model, **{o.split("=")[0]: o.split("=")[1] for o in extra}},
              "data": {"_target_": "G", "source": {"name": data}, "seed": "${seed}"},
              "paths": {"output_dir": str(folder)}, "trainer": {"max_epochs": 3}}
    (folder / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(config), folder / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create(overrides), folder / ".hydra" / "overrides.yaml")
    n = len(next(iter(values.values())))
    table = pd.DataFrame({"user": np.arange(n) if users is None else users, **values})
    per_user.write_table(table, folder)
    metrics = {f"test/{m}": float(v.mean()) for m, v in values.items()} | {"data_identity": data}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def fake_values(rng: np.random.Generator, n: int, shift: float = 0.0, noise: float = 0.0) -> dict[str, np.ndarray]:
    base = rng.random(n)
    return {m: np.clip(base * (0.5 + 0.2 * i) + shift + rng.normal(0, noise, n) if noise else base * (0.5 + 0.2 * i)
                       + shift, 0, None) for i, m in enumerate(METRICS)}


@pytest.fixture
def sweep(tmp_path) -> Path:
    """model=a (baseline), b = a + 0.05 per user (small noise), c = a exactly, d = a − 0.05; 2 seeds each,
    the seeds differing by a small per-user noise (c equals a seed for seed)."""
    root = tmp_path / "sweep"
    n = 200
    a_seeds = [fake_values(np.random.default_rng(0), n, noise=0.002 * (s + 1)) for s in range(2)]
    job = 0
    for model, shift in (("a", 0.0), ("b", 0.05), ("c", 0.0), ("d", -0.05)):
        for s in range(2):
            if model in ("a", "c"):
                values = a_seeds[s]
            else:
                rng = np.random.default_rng(100 + s)
                values = {m: a_seeds[s][m] + shift + rng.normal(0, 0.002, n) for m in METRICS}
            write_run(root / str(job), model, s + 1, values)
            job += 1
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root


def test_groups_are_configs_without_the_seed_named_by_what_differs(sweep):
    runs = [load_run(f) for f in run_folders([sweep])]
    groups = group_runs(runs)
    assert [g.name for g in groups] == ["model=a", "model=b", "model=c", "model=d"]
    assert [g.seeds for g in groups] == [[1, 2]] * 4
    assert [len(g.runs) for g in groups] == [2, 2, 2, 2]


def test_seed_statistics_and_paired_marks(sweep):
    result = compare([sweep])
    assert [p.name for p in result.files] == list(FILES)
    t = result.comparison.table
    assert len(t) == 4 * 2  # default metrics: those at cut-off 20
    assert set(t["metric"]) == {"recall@20", "ndcg@20"}
    row = t[(t["group"] == "model=b") & (t["metric"] == "recall@20")].iloc[0]
    # n and the CI over seeds are those of the runs' metrics.json values
    seeds = [json.loads((sweep / str(j) / "metrics.json").read_text())["test/recall@20"] for j in (2, 3)]
    expected = seed_summary(seeds)
    assert row["n"] == 2 and row["mean"] == pytest.approx(expected.mean, abs=1e-6)
    assert row["ci_low"] == pytest.approx(expected.ci_low, abs=1e-6)
    assert row["ci_high"] == pytest.approx(expected.ci_high, abs=1e-6)
    assert row["direction"] == "better" and row["t_pvalue"] < 0.01 and row["t_pvalue_holm"] < 0.01
    assert row["mean_diff"] == pytest.approx(0.05, abs=0.002) and row["diff_ci_low"] > 0
    worse = t[(t["group"] == "model=d") & (t["metric"] == "recall@20")].iloc[0]
    assert worse["direction"] == "worse" and worse["t_pvalue"] < 0.01
    same = t[t["group"] == "model=c"]
    assert (same["direction"] == "").all() and not same["significant"].any()
    assert same["note"].str.startswith("identical").all()
    # Holm over every comparison of the table (3 groups x 2 metrics, minus the 2 without a test)
    tested = t.dropna(subset=["t_pvalue"])
    assert len(tested) == 4
    np.testing.assert_allclose(tested["t_pvalue_holm"], holm(tested["t_pvalue"].to_numpy()))
    md = (sweep / "comparison.md").read_text()
    line_b = next(x for x in md.splitlines() if x.startswith("| `model=b` | 2 |"))
    assert line_b.count("▲") == 2 and "▼" not in line_b
    assert next(x for x in md.splitlines() if x.startswith("| `model=d` | 2 |")).count("▼") == 2
    line_c = next(x for x in md.splitlines() if x.startswith("| `model=c` | 2 |"))
    assert "▲" not in line_c and "▼" not in line_c
    assert "(baseline)" in md and "identical per-unit values" in md
    for text in (md, (sweep / "comparison.csv").read_text()):
        assert not re.search(r"\bnan\b", text, re.I)  # no NaN printed as a result
    assert (sweep / "comparison.png").read_bytes()[:8] == PNG


def test_baseline_by_override_and_errors(sweep):
    comp = compare_runs([load_run(f) for f in run_folders([sweep])], baseline="model=b", metrics=["recall@50"])
    assert comp.groups[comp.baseline].name == "model=b" and comp.metrics == ["recall@50"]
    rows = comp.table.set_index("group")
    assert rows.loc["model=a", "direction"] == "worse" and rows.loc["model=c", "direction"] == "worse"
    runs = [load_run(f) for f in run_folders([sweep])]
    with pytest.raises(ConfigError, match="--baseline 'model=z' matches no group"):
        compare_runs(runs, baseline="model=z")
    with pytest.raises(ConfigError, match="mrr@20 not in the per-user results"):
        compare_runs(runs, metrics=["mrr@20"])


def test_too_few_users_say_so_without_nan(tmp_path):
    for job, (model, value) in enumerate([("a", 0.2), ("a", 0.3), ("b", 0.5), ("b", 0.4)]):
        write_run(tmp_path / "s" / str(job), model, job, {"recall@20": np.array([value])})
    compare([tmp_path / "s"])
    md = (tmp_path / "s" / "comparison.md").read_text()
    rows = [x for x in md.splitlines() if x.startswith("| `")]
    assert "too few units (n = 1)" in rows[-1] and "–" in rows[-1]
    assert not any(re.search(r"\bnan\b", x, re.I) or "▲" in x or "▼" in x for x in rows)


def test_runs_of_different_datasets_are_refused(tmp_path):
    rng = np.random.default_rng(0)
    a = write_run(tmp_path / "a", "a", 1, fake_values(rng, 50))
    b = write_run(tmp_path / "b", "b", 1, fake_values(rng, 50), data="ml_100k-1")
    proc = run_script("scripts/compare.py", str(a), str(b), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: runs on different datasets or splits") and "ml_100k-1" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists() and not any((tmp_path / n).exists() for n in FILES)
    # same data identity recorded nowhere, other users: refused as well (pairing needs the same users)
    c = write_run(tmp_path / "c", "c", 1, fake_values(rng, 50), users=np.arange(50) + 7)
    with pytest.raises(DataError, match="evaluated other units"):
        compare([a, c], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_script_writes_the_files_and_refuses_bad_input(sweep, tmp_path):
    proc = run_script("scripts/compare.py", str(sweep), "--baseline", "model=c", "--metrics", "all", "--no-wandb")
    assert proc.returncode == 0, proc.stderr
    assert "| `model=c` (baseline) | 2 |" in proc.stdout and all(f"wrote {sweep / n}" in proc.stdout for n in FILES)
    assert len(pd.read_csv(sweep / "comparison.csv")) == 4 * 3
    bad = run_script("scripts/compare.py", str(tmp_path / "nowhere"))
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "nowhere" in bad.stderr


def test_per_user_csv_without_pyarrow(tmp_path, monkeypatch):
    monkeypatch.setattr(per_user, "has_parquet", lambda: False)
    frame = pd.DataFrame({"user": ["u1", "u0"], "recall@20": [0.1 + 0.2, 1 / 3]})
    path = per_user.write_table(frame, tmp_path)
    assert path.name == "per_user.csv"
    back = per_user.read_table(tmp_path)
    assert list(back["user"]) == ["u1", "u0"] and back["recall@20"].tolist() == [0.1 + 0.2, 1 / 3]  # exact
    (tmp_path / "per_user.csv").write_text("user,recall@20\nu1,abc\n")
    with pytest.raises(DataError, match="per_user.csv: a metric column is not numeric"):
        per_user.read_table(tmp_path)


def test_mean_ci_of_identical_seeds_is_a_point(tmp_path):
    values = {"recall@20": np.linspace(0, 1, 20)}
    for job in range(3):
        write_run(tmp_path / "s" / str(job), "pop", job, values)
    comp = compare_runs([load_run(f) for f in run_folders([tmp_path / "s"])])
    row = comp.table.iloc[0]
    assert row["n"] == 3 and row["std"] == 0.0 and row["ci_low"] == row["ci_high"] == pytest.approx(0.5)
    assert not math.isnan(row["mean"])


@pytest.mark.slow
def test_a_two_model_two_seed_sweep_ends_with_the_comparison(tmp_path):
    """The end of a multirun with 2 seeds per config writes comparison.md next to results.md: both models, n = 2."""
    sweep = tmp_path / "sweep"
    check(run_script("train.py", "-m", "model=mf,lightgcn", "seed=1,2", f"hydra.sweep.dir={sweep}",
                     f"paths.data_dir={tmp_path / 'data'}", *TINY_DATA, *TRAIN_QUIET, "trainer.max_epochs=1",
                     "trainer.check_val_every_n_epoch=1", "model.embedding_dim=8"))
    assert (sweep / "results.md").is_file()
    md = (sweep / "comparison.md").read_text()
    assert "| `model=mf` (baseline) | 2 |" in md and "| `model=lightgcn` | 2 |" in md
    table = pd.read_csv(sweep / "comparison.csv")
    assert set(table["group"]) == {"model=mf", "model=lightgcn"} and (table["n"] == 2).all()
    assert set(table["seeds"]) == {"1 2"} and (table["units"] == 300).all()
    lightgcn = table[table["group"] == "model=lightgcn"]
    assert lightgcn["t_pvalue"].between(0, 1).all() and lightgcn["t_pvalue_holm"].notna().all()
    assert (sweep / "comparison.png").read_bytes()[:8] == PNG


@pytest.mark.slow
def test_wandb_gets_the_comparison_table(sweep, tmp_path):
    from tests.integration.test_wandb import offline_env, read_run

    # no WANDB_MODE (run_script sets one): recsys switches to offline by itself, never the network
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "compare.py"), str(sweep), "--wandb"], cwd=ROOT,
                          env=offline_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = (sweep / "wandb").glob("offline-run-*")
    assert f"wandb sync {run_dir}" in proc.stdout + proc.stderr
    run = read_run(run_dir)
    assert run["group"] == "sweep" and run["job_type"] == "collect" and run["name"] == "sweep:comparison"
    logged = {k: v for row in run["history"] for k, v in row.items()}
    assert logged["comparison/_type"] == "table-file" and logged["comparison/nrows"] == 4 * 2
    assert logged["plots/comparison/_type"] == "image-file"


def test_an_eval_run_is_described_by_its_checkpoints_training_run(tmp_path):
    rng = np.random.default_rng(1)
    train = write_run(tmp_path / "train", "ngcf", 7, fake_values(rng, 30))
    evaluated = tmp_path / "eval"
    (evaluated / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create({"ckpt_path": "x", "task_name": "eval", "seed": 1}), evaluated / ".hydra" / "config.yaml")
    per_user.write_table(pd.read_parquet(train / "per_user.parquet"), evaluated)
    metrics = {"ckpt_path": str(train / "checkpoints" / "epoch_003.ckpt"), "data_identity": "synthetic_graph-0"}
    (evaluated / "metrics.json").write_text(json.dumps(metrics))
    run = load_run(evaluated)
    assert run.seed == 7 and "model=ngcf" in run.overrides and run.config["model"]["name"] == "ngcf"
    assert run.table.equals(load_run(train).table)


def test_upload_settings_follow_the_sweep_unless_forced(sweep):
    from recsys.utils.results import upload_settings

    assert upload_settings(sweep) is None and upload_settings(sweep, False) is None  # the sweep did not log to wandb
    forced = upload_settings(sweep, True, project="p")
    assert forced == {"project": "p", "entity": None, "group": "sweep", "tags": []}
    OmegaConf.save(OmegaConf.create({"logger": {"wandb": {"project": "mine"}}, "task_name": "train"}),
                   sweep / "0" / ".hydra" / "config.yaml")
    assert upload_settings(sweep)["project"] == "mine" and upload_settings(sweep, False) is None
