"""``python train.py model=gru4rec`` / session baselines / ``eval.py`` end to end, and the data-kind checks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from recsys.api import load_run
from tests.integration.conftest import QUIET, TRAIN_QUIET, check, read_metrics, run_script

TINY_SESSIONS = [
    "data.source.num_items=100",
    "data.source.num_sessions=1500",
    "data.source.num_days=5",
]
TINY_GRU = [*TINY_SESSIONS, "sampler.n_sample=64", "model.layers=[16]"]
SESSION_KEYS = {f"{s}/{m}@{k}" for s in ("val", "test") for m in ("recall", "mrr") for k in (5, 10, 20)}


def run_args(tmp_path, name: str = "run") -> list[str]:
    return [f"hydra.run.dir={tmp_path / name}", f"paths.data_dir={tmp_path / 'data'}", *TRAIN_QUIET]


@pytest.mark.slow
def test_gru4rec_defaults_to_session_data_and_eval_reproduces_the_test(tmp_path):
    check(run_script("train.py", "model=gru4rec", *TINY_GRU, *run_args(tmp_path), "trainer.max_epochs=2",
                     "trainer.check_val_every_n_epoch=1", env={"OMP_NUM_THREADS": "1"}))
    metrics = read_metrics(tmp_path / "run")
    assert metrics.keys() >= SESSION_KEYS
    assert metrics["num_parameters"] > 0 and metrics["validate_on_test"] is False
    payload = torch.load(metrics["best_checkpoint"], map_location="cpu", weights_only=True)
    assert payload["recsys_config"]["data"]["_target_"].endswith("SessionDataModule")
    assert payload["recsys_config"]["sampler"]["n_sample"] == 64

    check(run_script("eval.py", f"ckpt_path={metrics['best_checkpoint']}", f"hydra.run.dir={tmp_path / 'eval'}", *QUIET))
    evaluated = read_metrics(tmp_path / "eval")
    for key in (k for k in metrics if k.startswith("test/")):
        assert evaluated[key] == metrics[key], key

    # recommend.py on the session model: one prefix (session=[...]) and a file of prefixes (sessions=<file>)
    # give the rows of the Python API
    run = load_run(tmp_path / "run")
    ids = list(run.item_map.ids[:6])
    prefixes = [ids[:3], [ids[3]], ids[4:6]]
    (tmp_path / "prefixes.txt").write_text("# one prefix per line\n" + "\n".join(" ".join(p) for p in prefixes) + "\n")
    single, many = tmp_path / "one.csv", tmp_path / "many.parquet"
    rec = ["recommend.py", f"ckpt_path={tmp_path / 'run'}", "k=5", "extras.print_config=false",
           f"hydra.run.dir={tmp_path / 'rec'}"]
    check(run_script(*rec, f"session=[{','.join(prefixes[0])}]", f"output={single}"))
    check(run_script(*rec, f"sessions={tmp_path / 'prefixes.txt'}", f"output={many}"))
    for path, want in ((single, run.recommend_session(prefixes[0], 5)), (many, run.recommend_sessions(prefixes, 5))):
        got = pd.read_csv(path, dtype={"item": str}) if path.suffix == ".csv" else pd.read_parquet(path)
        assert list(got.columns) == ["session", "rank", "item", "score"] and len(got) == len(want)
        assert got["item"].astype(str).tolist() == want["item"].tolist() and got["session"].tolist() == want["session"].tolist()
        np.testing.assert_allclose(got["score"].to_numpy(), want["score"].to_numpy(), rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["session_pop", "spop", "item_knn"])
def test_session_baselines_run_without_training(tmp_path, model):
    check(run_script("train.py", f"model={model}", *TINY_SESSIONS, *run_args(tmp_path)))
    metrics = read_metrics(tmp_path / "run")
    assert metrics.keys() >= SESSION_KEYS and metrics["num_parameters"] == 0
    assert 0.0 < metrics["test/recall@20"] <= 1.0


@pytest.mark.slow
@pytest.mark.parametrize(("overrides", "needle"), [
    (["model=gru4rec", "data=synthetic_graph"],
     "model=gru4rec needs session data but data=synthetic_graph is graph data; choose a session dataset (e.g. data=synthetic_sessions)"),
    (["model=lightgcn", "data=synthetic_sessions", *TINY_SESSIONS],
     "model=lightgcn needs graph data but data=synthetic_sessions is session data; choose a graph dataset (e.g. data=synthetic_graph)"),
])
def test_model_on_the_wrong_kind_of_data_fails_with_one_line_naming_the_fix(tmp_path, overrides, needle):
    proc = run_script("train.py", *overrides, *run_args(tmp_path))
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and needle in lines[0], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_gru4rec_under_ddp_on_cpu_matches_a_single_process_evaluation(tmp_path):
    """Two gloo processes: sessions partitioned across ranks, equal step counts (no hang), and the test metrics
    summed over ranks equal a one-process evaluation of the same checkpoint."""
    check(run_script("train.py", "model=gru4rec", "trainer=ddp_cpu", "trainer.max_epochs=1",
                     "trainer.check_val_every_n_epoch=1", *TINY_GRU, *run_args(tmp_path), env={"OMP_NUM_THREADS": "1"}))
    metrics = read_metrics(tmp_path / "run")
    check(run_script("eval.py", f"ckpt_path={metrics['best_checkpoint']}", f"hydra.run.dir={tmp_path / 'eval'}", *QUIET))
    single = read_metrics(tmp_path / "eval")
    for key in (k for k in metrics if k.startswith("test/")):
        assert single[key] == pytest.approx(metrics[key], abs=1e-6), key
