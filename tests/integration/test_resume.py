"""Resume: a run SIGKILLed during training and resumed with ``ckpt_path=<run>`` / ``ckpt_path=last`` ends with
the metrics of the uninterrupted run (deterministic mode), in its own folder or in another one (its best
checkpoint carried over); from a lone ``last.ckpt`` model selection restarts; NaN losses stop the run.

The kill is a real SIGKILL of the training process, sent by ``tests.integration.killer.KillAt`` (added from the
command line) at an epoch start (right after the previous epoch's checkpoints) or after a given batch."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
import torch

from tests.integration.conftest import TINY_DATA, TRAIN_QUIET, check, read_metrics, run_script

GRAPH = [*TINY_DATA, "model.embedding_dim=16"]
SESSIONS = ["data.source.num_items=100", "data.source.num_sessions=600", "data.source.num_days=5"]
MODELS = {
    "lightgcn": ["model=lightgcn", *GRAPH, "model.num_layers=2"],
    # dropout on: the resumed run must draw the same dropout masks
    "ngcf": ["model=ngcf", *GRAPH, "model.num_layers=2", "model.node_dropout=0.2", "model.message_dropout=0.3",
             "model.optimizer.lr=0.01"],
    "mf": ["model=mf", *GRAPH],
    # the noise of the views: the resumed run must draw the same noise
    "simgcl": ["model=simgcl", *GRAPH],
    "xsimgcl": ["model=xsimgcl", *GRAPH],
    "gru4rec": ["model=gru4rec", *SESSIONS, "sampler.n_sample=16", "model.layers=[16]", "model.dropout_embed=0.2",
                "model.dropout_hidden=0.3"],
    # ~480 training windows in steps of 32: 15 steps an epoch
    "sasrec": ["model=sasrec", *SESSIONS, "model.embedding_dim=16", "model.num_blocks=1", "model.dropout=0.3",
               "data.batch_size=32", "model.loss=bce"],
}
EPOCHS = 4
KILL = "+callbacks.killer._target_=tests.integration.killer.KillAt"
# the best epoch before the kill: gradient ascent from epoch KILL_EPOCH on (validation only gets worse)
KILL_EPOCH = 2
WORSE_FROM_KILL = ["+callbacks.worse._target_=tests.integration.killer.ScaleLrAt",
                   f"+callbacks.worse.epoch={KILL_EPOCH}", "+callbacks.worse.factor=-1"]
# MF needs a larger step for two epochs to beat the first
BEST_BEFORE_KILL = {"mf": ["model.optimizer.lr=0.05"], "gru4rec": []}
SIGKILL_CODES = (-9, 137)


def common(tmp_path: Path) -> list[str]:
    return [f"paths.data_dir={tmp_path / 'data'}", *TRAIN_QUIET, f"trainer.max_epochs={EPOCHS}",
            "trainer.deterministic=true", "callbacks.early_stopping.patience=100"]


def test_metrics(run: Path) -> dict[str, float]:
    return {k: v for k, v in read_metrics(run).items() if k.startswith(("test/", "val/"))}


test_metrics.__test__ = False  # a helper, not a test


def assert_same_metrics(a: Path, b: Path) -> None:
    ma, mb = test_metrics(a), test_metrics(b)
    assert any(k.startswith("test/") for k in ma) and ma.keys() == mb.keys()
    for key, value in ma.items():
        assert abs(mb[key] - value) <= 1e-6, (key, value, mb[key])
    assert read_metrics(a)["best_epoch"] == read_metrics(b)["best_epoch"]


def logged_val_epochs(run: Path) -> list[int]:
    with open(run / "csv" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    key = next(k for k in rows[0] if k.startswith("val/recall"))
    return sorted({int(r["epoch"]) for r in rows if r.get(key)})


@pytest.mark.slow
@pytest.mark.parametrize(("model", "kill", "val_every"), [
    ("lightgcn", ["+callbacks.killer.epoch=2"], 1),
    # mid-epoch (chunks of 2 steps), no validation in epoch 1
    ("ngcf", ["+callbacks.killer.epoch=2", "+callbacks.killer.batch=1", "data.steps_per_chunk=2"], 2),
    ("mf", ["+callbacks.killer.epoch=1"], 1),  # resumed with ckpt_path=last
    ("simgcl", ["+callbacks.killer.epoch=2"], 1),
    ("xsimgcl", ["+callbacks.killer.epoch=2", "+callbacks.killer.batch=1", "data.steps_per_chunk=2"], 1),  # mid-epoch
    ("gru4rec", ["+callbacks.killer.epoch=2", "+callbacks.killer.batch=5", "data.steps_per_chunk=3"], 1),  # mid-epoch
    # mid-epoch, with dropout and sampled negatives
    ("sasrec", ["+callbacks.killer.epoch=2", "+callbacks.killer.batch=2", "data.steps_per_chunk=3"], 1),
])
def test_sigkilled_run_resumes_in_its_folder_with_the_uninterrupted_metrics(tmp_path, model, kill, val_every):
    args = [*MODELS[model], *common(tmp_path), f"trainer.check_val_every_n_epoch={val_every}"]
    env = {"OMP_NUM_THREADS": "1"}
    check(run_script("train.py", *args, f"hydra.run.dir={tmp_path / 'a'}", env=env))

    by_last = model == "mf"  # the run folder is found under paths.log_dir instead of being named
    where = [f"paths.log_dir={tmp_path / 'logs'}"] if by_last else [f"hydra.run.dir={tmp_path / 'b'}"]
    killed = run_script("train.py", *args, *where, KILL, *kill, env=env)
    assert killed.returncode in SIGKILL_CODES, killed.stderr[-3000:]
    if by_last:
        (run_b,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    else:
        run_b = tmp_path / "b"
    assert not (run_b / "metrics.json").exists()
    last = run_b / "checkpoints" / "last.ckpt"
    epoch_of_last = torch.load(last, map_location="cpu", weights_only=True)["epoch"]
    kill_epoch = int(kill[0].rsplit("=", 1)[1])
    assert epoch_of_last == kill_epoch - 1  # mid-epoch: the previous epoch's checkpoint

    # the model/data overrides come from the checkpoint: only the killer is dropped on the command line
    resume = ["ckpt_path=last", *where] if by_last else [f"ckpt_path={run_b}"]
    check(run_script("train.py", *resume, "~callbacks.killer", env=env))

    assert_same_metrics(tmp_path / "a", run_b)
    metrics = read_metrics(run_b)
    assert metrics["resumed_from"] == str(last.resolve())
    assert metrics["epochs_trained"] == EPOCHS
    assert Path(metrics["best_checkpoint"]).parent == (run_b / "checkpoints").resolve()
    if by_last:
        assert len(list((tmp_path / "logs" / "train" / "runs").iterdir())) == 1  # no new run folder
    # the CSV log continues: every validated epoch of both parts is there
    assert logged_val_epochs(run_b) == logged_val_epochs(tmp_path / "a")
    assert not list((run_b / "checkpoints").glob(".*.tmp"))


def killed_run(tmp_path: Path, args: list[str], run: Path) -> Path:
    """``run`` SIGKILLed at the start of epoch ``KILL_EPOCH``; its best checkpoint (one, before the kill)."""
    killed = run_script("train.py", *args, f"hydra.run.dir={run}", KILL, f"+callbacks.killer.epoch={KILL_EPOCH}",
                        env={"OMP_NUM_THREADS": "1"})
    assert killed.returncode in SIGKILL_CODES, killed.stderr[-3000:]
    (best,) = (run / "checkpoints").glob("epoch_*.ckpt")
    return best.resolve()


def assert_tested_the_best_checkpoint(run: Path) -> dict:
    """metrics.json's best_epoch is the epoch of best_checkpoint, a file of this run folder; the metrics."""
    metrics = read_metrics(run)
    best = Path(metrics["best_checkpoint"])
    assert best.parent == (run / "checkpoints").resolve() and best.is_file()
    assert torch.load(best, map_location="cpu", weights_only=True)["epoch"] == metrics["best_epoch"]
    return metrics


@pytest.mark.slow
@pytest.mark.parametrize("model", ["mf", "gru4rec"])
def test_killed_after_its_best_epoch_resumes_into_another_folder_or_its_own_with_the_uninterrupted_metrics(
        tmp_path, model):
    args = [*MODELS[model], *BEST_BEFORE_KILL[model], *common(tmp_path), "trainer.check_val_every_n_epoch=1",
            *WORSE_FROM_KILL]
    env = {"OMP_NUM_THREADS": "1"}
    full, killed, other = tmp_path / "full", tmp_path / "killed", tmp_path / "other"
    check(run_script("train.py", *args, f"hydra.run.dir={full}", env=env))
    assert read_metrics(full)["best_epoch"] < KILL_EPOCH  # the premise: the best comes before the kill
    best = killed_run(tmp_path, args, killed)

    # into another folder (the killed run still reachable): its best checkpoint is copied over and tested
    check(run_script("train.py", f"ckpt_path={killed / 'checkpoints' / 'last.ckpt'}", f"hydra.run.dir={other}",
                     "~callbacks.killer", env=env))
    assert_same_metrics(full, other)
    metrics = assert_tested_the_best_checkpoint(other)
    assert Path(metrics["best_checkpoint"]).name == best.name and "resumed_from_lost" not in metrics
    assert best.read_bytes() == Path(metrics["best_checkpoint"]).read_bytes()  # the original is left in place
    assert not list((other / "checkpoints").glob(".*.tmp"))

    # in its own folder
    check(run_script("train.py", f"ckpt_path={killed}", "~callbacks.killer", env=env))
    assert_same_metrics(full, killed)
    assert read_metrics(killed)["best_checkpoint"] == str(best)


@pytest.mark.slow
def test_resumed_from_a_lone_last_checkpoint_warns_and_restarts_model_selection(tmp_path):
    args = [*MODELS["mf"], *BEST_BEFORE_KILL["mf"], *common(tmp_path), "trainer.check_val_every_n_epoch=1",
            *WORSE_FROM_KILL]
    best = killed_run(tmp_path, args, tmp_path / "killed")
    lone = tmp_path / "copied" / "last.ckpt"  # only last.ckpt reached this "machine"
    lone.parent.mkdir()
    shutil.copy(tmp_path / "killed" / "checkpoints" / "last.ckpt", lone)
    shutil.move(tmp_path / "killed", tmp_path / "gone")

    new = tmp_path / "new"
    proc = check(run_script("train.py", *args, f"ckpt_path={lone}", f"hydra.run.dir={new}",
                            env={"OMP_NUM_THREADS": "1"}))
    warnings = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "WARNING" in ln and str(best) in ln]
    assert len(warnings) == 1 and "not found" in warnings[0], proc.stdout[-3000:] + proc.stderr[-3000:]
    metrics = assert_tested_the_best_checkpoint(new)
    assert metrics["best_epoch"] >= KILL_EPOCH  # from this folder's validations only
    assert metrics["resumed_from"] == str(lone) and metrics["resumed_from_lost"] == [str(best)]


@pytest.mark.slow
def test_non_finite_loss_stops_with_epoch_step_and_last_good_checkpoint(tmp_path):
    run = tmp_path / "run"
    proc = run_script("train.py", "model=mf", *GRAPH, *TRAIN_QUIET, f"paths.data_dir={tmp_path / 'data'}",
                      f"hydra.run.dir={run}", "trainer.max_epochs=5", "trainer.check_val_every_n_epoch=1",
                      # fine for two epochs, then the learning rate explodes the embeddings
                      "+callbacks.blowup._target_=tests.integration.killer.ScaleLrAt", "+callbacks.blowup.epoch=2")
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, proc.stderr[-3000:]
    line = lines[0]
    assert "training loss is not finite" in line and "at epoch 2, batch " in line, line
    last = run / "checkpoints" / "last.ckpt"
    assert f"last good checkpoint: {last.resolve()}" in line, line
    payload = torch.load(last, map_location="cpu", weights_only=True)
    assert payload["epoch"] == 1 and all(torch.isfinite(t).all() for t in payload["state_dict"].values())
    assert not (run / "metrics.json").exists()
