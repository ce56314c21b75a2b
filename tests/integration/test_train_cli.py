"""End-to-end runs of the root scripts (`python train.py`, `python eval.py`) as a user types them."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from tests.integration.conftest import QUIET, ROOT, TINY_DATA, TRAIN_QUIET, check, read_metrics, run_script

EXPECTED_KEYS = {
    "val/recall@20", "val/ndcg@20", "test/recall@20", "test/ndcg@20", "test/precision@20",
    "test/hit_rate@20", "test/mrr@20", "test/recall@10", "test/recall@50",
    "best_epoch", "fit_seconds", "test_seconds", "num_parameters", "validate_on_test",
}


def test_train_writes_run_folder_and_eval_reproduces_test_metrics(tmp_path, tiny_train_args):
    check(run_script("train.py", *tiny_train_args))
    run = tmp_path / "run"
    metrics = read_metrics(run)
    assert metrics.keys() >= EXPECTED_KEYS
    assert 0.0 < metrics["test/recall@20"] <= 1.0
    assert metrics["num_parameters"] == (300 + 200) * 16
    assert metrics["best_epoch"] in (0, 1, 2)
    assert metrics["validate_on_test"] is False
    # resolved config, checkpoints (best + last), CSV logs
    assert (run / ".hydra" / "config.yaml").is_file()
    ckpts = sorted(p.name for p in (run / "checkpoints").glob("*.ckpt"))
    assert "last.ckpt" in ckpts and any(n.startswith("epoch_") for n in ckpts), ckpts
    with open(run / "csv" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert any(r.get("train/loss") for r in rows) and any(r.get("val/recall@20") for r in rows)
    # the checkpoint is loadable without unpickling arbitrary objects
    payload = torch.load(metrics["best_checkpoint"], map_location="cpu", weights_only=True)
    assert payload["recsys_config"]["model"]["_target_"].endswith("GraphRecommender")

    check(run_script("eval.py", f"ckpt_path={metrics['best_checkpoint']}", f"hydra.run.dir={tmp_path / 'eval'}", *QUIET))
    evaluated = read_metrics(tmp_path / "eval")
    test_keys = [k for k in metrics if k.startswith("test/")]
    assert test_keys
    for key in test_keys:
        assert evaluated[key] == metrics[key], key  # exact reproduction


def test_the_last_epoch_is_validated_even_off_the_validation_interval(tmp_path, tiny_train_args):
    # 3 epochs, validation every 5: Lightning alone would never validate (no model selection, no best checkpoint)
    run = tmp_path / "run"
    check(run_script("train.py", *tiny_train_args, "trainer.max_epochs=3", "trainer.check_val_every_n_epoch=5"))
    metrics = read_metrics(run)
    assert metrics["best_epoch"] == 2 and "val/recall@20" in metrics
    assert Path(metrics["best_checkpoint"]).name == "epoch_002.ckpt"
    with open(run / "csv" / "metrics.csv") as f:
        validated = [row["epoch"] for row in csv.DictReader(f) if row.get("val/recall@20")]
    assert validated == ["2"]  # once, after the last epoch


@pytest.mark.parametrize("model", ["ngcf", "gru4rec"])
def test_mixed_precision_trains_graph_and_session_models(tmp_path, tiny_train_args, model):
    args = [a for a in tiny_train_args if not a.startswith(("data.source", "model.embedding_dim"))]
    extra = ["model.embedding_dim=8", *TINY_DATA] if model == "ngcf" else [
        "data.source.num_items=100", "data.source.num_sessions=500", "data.source.num_days=5", "model.layers=[8]"]
    check(run_script("train.py", f"model={model}", "trainer.precision=bf16-mixed", *args, *extra, "trainer.max_epochs=1"))
    metrics = read_metrics(tmp_path / "run")
    assert 0 < metrics["test/recall@20"] <= 1
    # mixed precision must not change the ranking: the bf16-mixed run's test metrics equal a float32
    # evaluation of the same weights
    check(run_script("eval.py", f"ckpt_path={metrics['best_checkpoint']}", "trainer.precision=32-true",
                     f"hydra.run.dir={tmp_path / 'eval32'}", *QUIET))
    float32 = read_metrics(tmp_path / "eval32")
    test_keys = [k for k in metrics if k.startswith("test/")]
    assert test_keys
    for key in test_keys:
        assert metrics[key] == pytest.approx(float32[key], abs=1e-6), key


def test_gpus_request_without_gpu_fails_with_one_clear_line(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    proc = run_script("train.py", "trainer.gpus=2", f"hydra.run.dir={tmp_path}", *TRAIN_QUIET)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    assert "trainer.gpus=2" in lines[0] and "2 GPU" in lines[0] and "none is visible" in lines[0]
    assert not (tmp_path / "metrics.json").exists()
    assert "Traceback" not in proc.stderr


def test_unknown_model_key_is_a_clear_config_error(tmp_path, tiny_train_args):
    proc = run_script("train.py", *tiny_train_args, "+model.no_such_option=3")
    assert proc.returncode == 2
    assert "no_such_option" in proc.stderr and "error:" in proc.stderr


def test_debug_fdr_runs_one_batch(tmp_path):
    proc = check(run_script("train.py", "debug=fdr", f"hydra.run.dir={tmp_path}", f"paths.data_dir={tmp_path / 'data'}", *TINY_DATA, *TRAIN_QUIET))
    metrics = read_metrics(tmp_path)
    assert "test/recall@20" in metrics
    assert "fast_dev_run" in proc.stdout + proc.stderr or metrics["epochs_trained"] <= 1


def test_mostpop_is_evaluated_without_training(tmp_path):
    check(run_script("train.py", "model=pop", f"hydra.run.dir={tmp_path}", f"paths.data_dir={tmp_path / 'data'}", *TINY_DATA, *TRAIN_QUIET))
    metrics = read_metrics(tmp_path)
    assert metrics["num_parameters"] == 0
    assert metrics["val/recall@20"] > 0 and metrics["test/recall@20"] > 0


@pytest.mark.slow
def test_overrides_users_expect(tmp_path, tiny_train_args):
    check(run_script(
        "train.py", *tiny_train_args, "model.embedding_dim=8", "model.num_layers=1", "data.batch_size=512",
        "model.optimizer.lr=0.01", "trainer.max_epochs=2", "seed=7", "model.layer_weights=learned",
        "experiment=lightgcn_synthetic", "trainer.max_epochs=2", "callbacks.early_stopping.patience=1",
    ))
    metrics = read_metrics(tmp_path / "run")
    assert metrics["num_parameters"] == (300 + 200) * 8 + 2  # + learned alpha for 2 layers (0..1)
    assert metrics["epochs_trained"] == 2


@pytest.mark.slow
def test_wandb_logger_works_offline_without_account(tmp_path, tiny_train_args):
    env = {"HOME": str(tmp_path / "home"), "WANDB_API_KEY": "", "NETRC": str(tmp_path / "nonetrc")}
    env_clean = {k: v for k, v in env.items()}
    import os

    os_env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB")}
    os_env.update(env_clean)
    os_env.pop("WANDB_API_KEY")
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *tiny_train_args, "logger=wandb", "trainer.max_epochs=1"],
        cwd=ROOT, env=os_env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    offline_runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert offline_runs, list((tmp_path / "run").rglob("*"))[:50]
    assert "wandb sync" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_default_lightgcn_beats_mostpop_on_embedded_default(tmp_path):
    """The seed's claim on the embedded default: graph collaborative filtering beats popularity."""
    common = [f"paths.data_dir={tmp_path / 'data'}", *TRAIN_QUIET]
    check(run_script("train.py", "model=pop", f"hydra.run.dir={tmp_path / 'pop'}", *common))
    check(run_script("train.py", "trainer.max_epochs=60", f"hydra.run.dir={tmp_path / 'lgn'}", *common), )
    pop = read_metrics(tmp_path / "pop")["test/recall@20"]
    lgn = read_metrics(tmp_path / "lgn")["test/recall@20"]
    assert lgn > 1.2 * pop, (lgn, pop)
