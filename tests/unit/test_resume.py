"""recsys.utils.resume (the command line of a resumed run, the best-k checkpoints carried into another folder) and
the callbacks a resume relies on (BestMetricTracker, PortableModelCheckpoint's restore, EpochSeed state,
FiniteLossCheck). Expected command lines are written out by hand."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from pytorch_lightning.trainer.states import TrainerFn

from recsys.errors import ConfigError, RecsysError
from recsys.utils import resume
from recsys.utils.callbacks import (
    BestMetricTracker,
    EpochSeed,
    FiniteLossCheck,
    NonFiniteLossError,
    PortableModelCheckpoint,
    epoch_seed,
)
from recsys.utils.resume import carry_best_k, fit_checkpoint, merge_overrides, resume_argv, resume_overrides

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture(autouse=True)
def _fresh_env(monkeypatch):
    monkeypatch.delenv(resume.RESOLVED_ENV, raising=False)


def make_run(root: Path, name: str, overrides: list[str], stored: list[str] | None = None,
             mtime: int | None = None) -> Path:
    """A run folder as train.py leaves it: .hydra/overrides.yaml and checkpoints/last.ckpt."""
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (run / "checkpoints").mkdir()
    payload: dict = {"epoch": 1}
    if stored is not None:
        payload["recsys_overrides"] = stored
    last = run / "checkpoints" / "last.ckpt"
    torch.save(payload, last)
    torch.save({"epoch": 0}, run / "checkpoints" / "epoch_000.ckpt")
    if mtime is not None:
        os.utime(last, (mtime, mtime))
    return run


def test_run_folder_reapplies_its_overrides_and_stays_in_it(tmp_path):
    run = make_run(tmp_path, "r1", ["model=ngcf", "trainer.max_epochs=5", "seed=3"])
    out = resume_overrides(["train.py", f"ckpt_path={run}", "trainer.max_epochs=9"], None)
    assert out == ["train.py", "model=ngcf", "seed=3", "trainer.max_epochs=9",
                   f"ckpt_path={run.resolve() / 'checkpoints' / 'last.ckpt'}", f"hydra.run.dir={run.resolve()}"]
    assert os.environ[resume.RESOLVED_ENV] == str(run.resolve())


def test_already_resolved_command_line_is_not_rewritten_again(tmp_path, monkeypatch):
    run = make_run(tmp_path, "r1", ["model=ngcf"])
    monkeypatch.setenv(resume.RESOLVED_ENV, str(run))
    argv = ["train.py", f"ckpt_path={run}"]
    assert resume_overrides(argv, None) == argv


def test_checkpoint_in_run_folder_resumes_that_file_in_that_folder(tmp_path):
    run = make_run(tmp_path, "r1", ["model=mf"])
    ckpt = run / "checkpoints" / "epoch_000.ckpt"
    out = resume_overrides(["train.py", f"ckpt_path={ckpt}"], None)
    assert out == ["train.py", "model=mf", f"ckpt_path={ckpt.resolve()}", f"hydra.run.dir={run.resolve()}"]


def test_overrides_stored_in_the_checkpoint_win_over_overrides_yaml(tmp_path):
    run = make_run(tmp_path, "r1", ["model=mf"], stored=["model=lightgcn", "model.num_layers=2"])
    out = resume_overrides(["train.py", f"ckpt_path={run}"], None)
    assert out[1:3] == ["model=lightgcn", "model.num_layers=2"]


def test_last_is_the_newest_run_with_a_last_checkpoint(tmp_path):
    runs = tmp_path / "logs" / "train" / "runs"
    make_run(runs, "old", ["seed=1"], mtime=1_000_000)
    new = make_run(runs, "new", ["seed=2"], mtime=2_000_000)
    (runs / "newest_without_ckpt" / ".hydra").mkdir(parents=True)
    out = resume_overrides(["train.py", "ckpt_path=last"], tmp_path / "logs")
    assert out == ["train.py", "seed=2", f"ckpt_path={new.resolve() / 'checkpoints' / 'last.ckpt'}",
                   f"hydra.run.dir={new.resolve()}"]


def test_last_with_explicit_run_dir_uses_that_run(tmp_path):
    run = make_run(tmp_path, "mine", ["seed=4"])
    out = resume_overrides(["train.py", "ckpt_path=last", f"hydra.run.dir={run}"], None)
    assert out == ["train.py", "seed=4", f"hydra.run.dir={run}", f"ckpt_path={run.resolve() / 'checkpoints/last.ckpt'}"]


def test_last_composes_log_dir_from_the_configs(tmp_path):
    logs = tmp_path / "logs"
    run = make_run(logs / "train" / "runs", "r", ["model=mf"])
    # a deletion of something only the original run added must not break the composition
    out = resume_argv(["train.py", "ckpt_path=last", f"paths.log_dir={logs}", "~callbacks.killer"], CONFIGS)
    assert out == ["train.py", "model=mf", f"paths.log_dir={logs}", "~callbacks.killer",
                   f"ckpt_path={run.resolve() / 'checkpoints/last.ckpt'}", f"hydra.run.dir={run.resolve()}"]


@pytest.mark.parametrize(("argv", "message"), [
    (["train.py", "ckpt_path=last"], "no run under"),
    (["train.py", "ckpt_path=/nonexistent/x.ckpt"], "no such checkpoint file or run folder"),
    (["train.py", "-m", "ckpt_path=last"], "in a multirun"),
])
def test_nothing_to_resume_is_a_config_error(tmp_path, argv, message):
    with pytest.raises(ConfigError, match=message):
        resume_overrides(argv, tmp_path)


def test_folder_without_last_checkpoint_is_a_config_error(tmp_path):
    (tmp_path / "r" / "checkpoints").mkdir(parents=True)
    with pytest.raises(ConfigError, match="without checkpoints/last.ckpt"):
        resume_overrides(["train.py", f"ckpt_path={tmp_path / 'r'}"], None)


def test_unreadable_checkpoint_is_a_config_error(tmp_path):
    run = make_run(tmp_path, "r", [])
    (run / "checkpoints" / "last.ckpt").write_bytes(b"truncated")
    with pytest.raises(ConfigError, match="not a readable checkpoint"):
        resume_overrides(["train.py", f"ckpt_path={run}"], None)


def test_unrelated_command_lines_are_unchanged(tmp_path):
    outside = tmp_path / "elsewhere.ckpt"
    torch.save({"epoch": 0}, outside)
    for argv in (["train.py", "model=mf"], ["train.py", "ckpt_path=null"], ["train.py", f"ckpt_path={outside}"],
                 ["train.py", "-m", f"ckpt_path={outside}"]):
        assert resume_overrides(argv, tmp_path) == argv
    assert resume.RESOLVED_ENV not in os.environ


def test_merge_overrides_new_keys_win_and_deletions_drop_added_groups():
    original = ["model=mf", "+callbacks.killer._target_=k", "+callbacks.killer.epoch=1", "ckpt_path=x", "seed=1"]
    assert merge_overrides(original, ["seed=5", "~callbacks.killer"]) == (["model=mf"], ["seed=5"])
    # deleting something the defaults define stays on the command line
    assert merge_overrides(["model=mf"], ["~callbacks.early_stopping"]) == (["model=mf"], ["~callbacks.early_stopping"])
    assert merge_overrides(["model/optimizer=adam"], ["model.optimizer=sgd"]) == ([], ["model.optimizer=sgd"])


def test_fit_checkpoint(tmp_path):
    run = make_run(tmp_path, "r", [])
    last = str(run / "checkpoints" / "last.ckpt")
    assert fit_checkpoint(None, run) is None
    assert fit_checkpoint("last", run) == last
    assert fit_checkpoint(str(run), tmp_path) == last
    assert fit_checkpoint(str(run / "checkpoints" / "epoch_000.ckpt"), tmp_path).endswith("epoch_000.ckpt")
    with pytest.raises(ConfigError, match="does not exist"):
        fit_checkpoint("last", tmp_path)
    with pytest.raises(ConfigError, match="no such checkpoint"):
        fit_checkpoint(str(tmp_path / "missing.ckpt"), tmp_path)


def fake_trainer(epoch: int, metrics: dict[str, float] | None = None, **kw) -> SimpleNamespace:
    return SimpleNamespace(current_epoch=epoch, sanity_checking=False, global_rank=0, global_step=epoch * 10,
                           callback_metrics={k: torch.tensor(v) for k, v in (metrics or {}).items()}, **kw)


def test_best_metric_tracker_resumes_from_its_state():
    a = BestMetricTracker("val/recall@20", "max")
    a.on_validation_end(fake_trainer(0, {"val/recall@20": 0.3, "val/ndcg@20": 0.2}), None)
    a.on_validation_end(fake_trainer(1, {"val/recall@20": 0.1, "val/ndcg@20": 0.5}), None)
    b = BestMetricTracker("val/recall@20", "max")
    b.load_state_dict(a.state_dict())
    b.on_validation_end(fake_trainer(2, {"val/recall@20": 0.2, "val/ndcg@20": 0.9}), None)  # worse than epoch 0
    assert b.best_epoch == 0 and b.best_value == pytest.approx(0.3)
    assert b.best_metrics == {"val/recall@20": pytest.approx(0.3), "val/ndcg@20": pytest.approx(0.2)}


def checkpoint_state(run: Path, scores: dict[str, float], kth: str = "") -> dict:
    """A ModelCheckpoint state (mode max) for ``<run>/checkpoints``, writing each named checkpoint (its name as
    content); ``kth`` defaults to the worst."""
    folder = run / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    for name in scores:
        (folder / name).write_text(name)
    best_k = {str(folder / n): torch.tensor(v) for n, v in scores.items()}
    best = max(scores, key=scores.get)
    kth = kth or min(scores, key=scores.get)
    return {"monitor": "val/recall@20", "dirpath": str(folder), "best_k_models": best_k,
            "best_model_path": str(folder / best), "best_model_score": torch.tensor(scores[best]),
            "kth_best_model_path": str(folder / kth), "kth_value": torch.tensor(scores[kth]), "last_model_path": ""}


def test_carry_best_k_copies_reachable_checkpoints_into_the_new_folder(tmp_path):
    state = checkpoint_state(tmp_path / "old", {"epoch_001.ckpt": 0.5, "epoch_003.ckpt": 0.3})
    new = tmp_path / "new" / "checkpoints"
    attrs, missing = carry_best_k(state, new, tmp_path / "old" / "checkpoints" / "last.ckpt", "max")
    assert missing == []
    assert attrs["best_model_path"] == str(new / "epoch_001.ckpt") and float(attrs["best_model_score"]) == 0.5
    assert attrs["kth_best_model_path"] == str(new / "epoch_003.ckpt") and float(attrs["kth_value"]) == pytest.approx(0.3)
    assert {p: float(v) for p, v in attrs["best_k_models"].items()} == {
        str(new / "epoch_001.ckpt"): 0.5, str(new / "epoch_003.ckpt"): pytest.approx(0.3)}
    for name in ("epoch_001.ckpt", "epoch_003.ckpt"):  # copied whole, the original run left as it was
        assert (new / name).read_text() == name == (tmp_path / "old" / "checkpoints" / name).read_text()
    assert not list(new.glob(".*.tmp"))


def test_carry_best_k_finds_a_moved_or_copied_run_folder(tmp_path):
    state = checkpoint_state(tmp_path / "old", {"epoch_002.ckpt": 0.5})
    (tmp_path / "old").rename(tmp_path / "moved")  # resumed in its new place: the files are there already
    moved = tmp_path / "moved" / "checkpoints"
    before = (moved / "epoch_002.ckpt").stat().st_mtime_ns
    attrs, missing = carry_best_k(state, moved, moved / "last.ckpt", "max")
    assert missing == [] and attrs["best_model_path"] == str(moved / "epoch_002.ckpt")
    assert (moved / "epoch_002.ckpt").stat().st_mtime_ns == before
    # a copy of the run (another machine) resumed into a third folder: found next to the resumed checkpoint
    third = tmp_path / "third" / "checkpoints"
    attrs, missing = carry_best_k(state, third, moved / "last.ckpt", "max")
    assert missing == [] and (third / "epoch_002.ckpt").read_text() == "epoch_002.ckpt"


def test_carry_best_k_without_the_best_restarts_and_without_another_keeps_the_best(tmp_path):
    state = checkpoint_state(tmp_path / "old", {"epoch_001.ckpt": 0.5, "epoch_003.ckpt": 0.3})
    old, new = tmp_path / "old" / "checkpoints", tmp_path / "new" / "checkpoints"
    (old / "epoch_003.ckpt").unlink()
    attrs, missing = carry_best_k(state, new, None, "max")
    assert missing == [str(old / "epoch_003.ckpt")]
    assert list(attrs["best_k_models"]) == [str(new / "epoch_001.ckpt")] == [attrs["kth_best_model_path"]]
    (old / "epoch_001.ckpt").unlink()
    attrs, missing = carry_best_k(state, tmp_path / "third", None, "max")
    assert attrs == {} and sorted(missing) == [str(old / "epoch_001.ckpt"), str(old / "epoch_003.ckpt")]
    assert not (tmp_path / "third").exists()


def restoring_trainer(ckpt: Path) -> SimpleNamespace:
    """The trainer a ModelCheckpoint sees while a fit restores it (one process)."""
    return SimpleNamespace(state=SimpleNamespace(fn=TrainerFn.FITTING), is_global_zero=True, ckpt_path=str(ckpt),
                           strategy=SimpleNamespace(broadcast=lambda obj, src=0: obj))


def test_model_checkpoint_resumed_into_another_folder_without_its_best_warns_and_restarts(tmp_path, caplog):
    state = checkpoint_state(tmp_path / "old", {"epoch_001.ckpt": 0.5})
    gone = tmp_path / "old" / "checkpoints" / "epoch_001.ckpt"
    gone.unlink()
    cb = PortableModelCheckpoint(dirpath=tmp_path / "new", monitor="val/recall@20", mode="max", save_top_k=1)
    cb.on_load_checkpoint(restoring_trainer(tmp_path / "elsewhere" / "last.ckpt"), None, {})
    with caplog.at_level(logging.WARNING, logger="recsys.utils.callbacks"):
        cb.load_state_dict(state)
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert f"the best checkpoint {gone} of the original run is not found" in record.getMessage()
    assert cb.lost_on_resume == [str(gone)]
    assert cb.best_k_models == {} and cb.best_model_path == "" and cb.best_model_score is None

    # the tracker's restored best goes with it: best_epoch is then that of this run's best checkpoint
    tracker = BestMetricTracker("val/recall@20", "max")
    tracker.load_state_dict({"best_value": 0.5, "best_epoch": 1, "best_metrics": {"val/recall@20": 0.5}})
    tracker.on_train_start(SimpleNamespace(checkpoint_callbacks=[cb]), None)
    assert tracker.best_epoch is None and tracker.best_value is None and tracker.best_metrics == {}
    tracker.on_validation_end(fake_trainer(2, {"val/recall@20": 0.2}), None)  # worse than the lost one: best now
    assert tracker.best_epoch == 2


def test_best_metric_tracker_keeps_its_best_while_the_checkpoints_hold_it(tmp_path):
    state = checkpoint_state(tmp_path / "old", {"epoch_001.ckpt": 0.5})
    cb = PortableModelCheckpoint(dirpath=tmp_path / "new", monitor="val/recall@20", mode="max", save_top_k=1)
    cb.on_load_checkpoint(restoring_trainer(tmp_path / "old" / "checkpoints" / "last.ckpt"), None, {})
    cb.load_state_dict(state)
    assert cb.best_model_path == str(tmp_path / "new" / "epoch_001.ckpt") and cb.lost_on_resume == []
    tracker = BestMetricTracker("val/recall@20", "max")
    tracker.load_state_dict({"best_value": 0.5, "best_epoch": 1, "best_metrics": {"val/recall@20": 0.5}})
    for callbacks in ([cb], []):  # carried over; no checkpointing at all
        tracker.on_train_start(SimpleNamespace(checkpoint_callbacks=callbacks), None)
        assert tracker.best_epoch == 1


def test_epoch_seed_makes_the_global_rng_a_function_of_the_epoch():
    cb = EpochSeed(7)
    cb.on_train_batch_start(fake_trainer(3), None, None, 0)
    first = torch.rand(4)
    torch.rand(100)  # whatever happened since (an interrupted run, another iterator)
    restored = EpochSeed(None)
    restored.load_state_dict(cb.state_dict())
    restored.on_train_batch_start(fake_trainer(3), None, None, 0)
    assert torch.equal(torch.rand(4), first)
    restored.on_train_batch_start(fake_trainer(3), None, None, 1)  # not at later batches
    assert not torch.equal(torch.rand(4), first)
    assert epoch_seed(7, 3) != epoch_seed(7, 4) and epoch_seed(7, 3) != epoch_seed(7, 3, rank=1)


def test_finite_loss_check_names_epoch_step_and_checkpoint(tmp_path):
    ckpt = tmp_path / "last.ckpt"
    ckpt.write_bytes(b"x")
    cbs = [SimpleNamespace(last_model_path=str(ckpt), best_model_path="")]
    trainer = fake_trainer(2, checkpoint_callbacks=cbs)
    check = FiniteLossCheck()
    check.on_train_batch_end(trainer, None, {"loss": torch.tensor(1.5)}, None, 3)  # finite: nothing
    check.on_train_batch_end(trainer, None, torch.tensor(0.5), None, 3)  # a bare tensor (GRU4Rec's return)
    with pytest.raises(NonFiniteLossError) as info:
        check.on_train_batch_end(trainer, None, {"loss": torch.tensor(float("inf"))}, None, 3)
    assert isinstance(info.value, RecsysError)
    msg = str(info.value)
    assert "(inf) at epoch 2, batch 3 (global step 20)" in msg and f"last good checkpoint: {ckpt}" in msg
    with pytest.raises(NonFiniteLossError, match="nan.*no checkpoint was written"):
        check.on_train_batch_end(fake_trainer(0, checkpoint_callbacks=[]), None, {"loss": torch.tensor(float("nan"))},
                                 None, 0)
