"""recsys.utils.resume: which checkpoint and run folder a ``train.py`` command line resumes, and the command
line it becomes (original overrides first, the new ones win)."""

from __future__ import annotations

import os

import pytest
import torch

from recsys.errors import ConfigError
from recsys.utils import resume
from recsys.utils.resume import fit_checkpoint, merge_overrides, resume_argv

CONFIGS = resume.Path(__file__).resolve().parents[2] / "configs"
ORIGINAL = ["model=ngcf", "trainer.max_epochs=4", "+callbacks.killer._target_=x.Kill", "+callbacks.killer.epoch=2"]


@pytest.fixture(autouse=True)
def _fresh_env(monkeypatch):
    monkeypatch.delenv(resume.RESOLVED_ENV, raising=False)


def make_run(root, name: str, overrides=ORIGINAL, mtime: int | None = None):
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    last = run / "checkpoints" / "last.ckpt"
    torch.save({"recsys_overrides": list(overrides)}, last)
    if mtime is not None:
        os.utime(last, ns=(mtime, mtime))
    return run


def test_run_folder_becomes_original_then_new_overrides_and_its_run_dir(tmp_path):
    run = make_run(tmp_path, "r1")
    out = resume_argv(["train.py", f"ckpt_path={run}", "trainer.max_epochs=9", "~callbacks.killer"], CONFIGS)
    assert out == ["train.py", "model=ngcf", "trainer.max_epochs=9", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
                   f"hydra.run.dir={run}"]
    assert os.environ[resume.RESOLVED_ENV] == str(run)
    # a second rewrite (a DDP child re-running the rewritten command line) leaves it alone
    assert resume_argv(out, CONFIGS) == out


def test_a_checkpoint_inside_a_run_folder_continues_there(tmp_path):
    run = make_run(tmp_path, "r1", overrides=["model=mf"])
    best = run / "checkpoints" / "epoch_002.ckpt"
    torch.save({}, best)  # no stored overrides: .hydra/overrides.yaml
    (run / ".hydra" / "overrides.yaml").write_text("- model=lightgcn\n- seed=3\n")
    out = resume_argv(["train.py", f"ckpt_path={best}"], CONFIGS)
    assert out == ["train.py", "model=lightgcn", "seed=3", f"ckpt_path={best}", f"hydra.run.dir={run}"]


def test_last_picks_the_run_with_the_newest_last_ckpt_under_log_dir(tmp_path):
    runs = tmp_path / "logs" / "train" / "runs"
    make_run(runs, "2020-01-02", mtime=2_000_000_000_000_000_000)
    newest = make_run(runs, "2020-01-01", overrides=["model=mf"], mtime=3_000_000_000_000_000_000)
    (runs / "no_checkpoint").mkdir()
    out = resume_argv(["train.py", "ckpt_path=last", f"paths.log_dir={tmp_path / 'logs'}"], CONFIGS)
    assert out[1] == "model=mf" and out[-1] == f"hydra.run.dir={newest}"
    assert f"ckpt_path={newest / 'checkpoints' / 'last.ckpt'}" in out


def test_last_with_an_explicit_run_dir_keeps_it(tmp_path):
    run = make_run(tmp_path, "r1")
    out = resume_argv(["train.py", f"hydra.run.dir={run}", "ckpt_path=last"], CONFIGS)
    assert out[-1] == f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}" and sum("hydra.run.dir" in a for a in out) == 1


@pytest.mark.parametrize("value", ["last", "missing.ckpt", "empty_run"])
def test_nothing_to_resume_is_a_config_error(tmp_path, value):
    (tmp_path / "empty_run").mkdir()
    argv = ["train.py", f"ckpt_path={tmp_path / value if value != 'last' else value}",
            f"paths.log_dir={tmp_path / 'logs'}"]
    with pytest.raises(ConfigError, match="ckpt_path"):
        resume_argv(argv, CONFIGS)


def test_unchanged_without_resume_and_for_a_checkpoint_outside_a_run(tmp_path):
    lone = tmp_path / "model.ckpt"
    torch.save({}, lone)
    for argv in (["train.py", "model=mf"], ["train.py", "ckpt_path=null"], ["train.py", f"ckpt_path={lone}"]):
        assert resume_argv(argv, CONFIGS) == argv
    with pytest.raises(ConfigError, match="multirun"):
        resume_argv(["train.py", "-m", "ckpt_path=last"], CONFIGS)


def test_merge_drops_resets_and_satisfied_deletions():
    original = ["model=ngcf", "~callbacks.progress_bar", "+callbacks.k._target_=x", "+callbacks.k.epoch=1",
                "ckpt_path=/old", "data.batch_size=8"]
    kept, new = merge_overrides(original, ["data.batch_size=16", "~callbacks.k", "~logger.csv", "ckpt_path=r"])
    assert kept == ["model=ngcf", "~callbacks.progress_bar"]
    assert new == ["data.batch_size=16", "~logger.csv"]


def test_fit_checkpoint(tmp_path):
    run = make_run(tmp_path, "r1")
    last = str(run / "checkpoints" / "last.ckpt")
    assert fit_checkpoint("last", run) == last and fit_checkpoint(str(run), "elsewhere") == last
    assert fit_checkpoint(last, "x") == last and fit_checkpoint(None, run) is None
    with pytest.raises(ConfigError, match="ckpt_path=last"):
        fit_checkpoint("last", tmp_path)
