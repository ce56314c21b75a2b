"""Bad configurations stop before any work: exit code 2, one `error:` line, no run folder; piped logs stay small."""

from __future__ import annotations

import pytest

from tests.integration.conftest import TINY_DATA, check, run_script


@pytest.mark.parametrize(("overrides", "needles"), [
    (["model.optimizer.lr=-1"], ["model.optimizer.lr=-1", "> 0"]),
    (["trainer.max_epochs=-5"], ["trainer.max_epochs=-5", "-1 for no limit"]),
    (["sampler=nosuch"], ["sampler=nosuch", "valid: gru4rec, hard, in_batch, popularity, uniform"]),
    (["model=pop", "data=synthetic_sessions"], ["model=pop", "data=synthetic_sessions", "model=session_pop"]),
    (["model.topk=[100000]"], ["model.topk=[100000]", "2000 items"]),
])
def test_bad_config_exits_2_with_one_line_and_no_run_folder(tmp_path, overrides, needles):
    run = tmp_path / "run"
    proc = run_script("train.py", *overrides, f"hydra.run.dir={run}", f"paths.data_dir={tmp_path / 'data'}",
                      "extras.print_config=false", timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, proc.stderr[-3000:]
    assert all(n in lines[0] for n in needles), lines[0]
    assert "Traceback" not in proc.stderr
    assert not run.exists() and not (tmp_path / "data").exists()


def test_topk_beyond_a_real_datasets_items_leaves_no_run_folder(tmp_path):
    """The item count of a file dataset is known once it is loaded: the check comes after the load, and the run
    folder Hydra made for it is removed (it holds nothing but Hydra's own files)."""
    folder = tmp_path / "split"
    folder.mkdir()
    (folder / "train.txt").write_text("".join(f"{u} {u % 7} {(u + 1) % 7} {(u + 3) % 7}\n" for u in range(20)))
    (folder / "test.txt").write_text("".join(f"{u} {(u + 5) % 7}\n" for u in range(20)))
    run = tmp_path / "run"
    proc = run_script("train.py", "data=gowalla", f"data.path={folder}", "data.validate_fraction=0.3",
                      "model.topk=[20,50]", f"hydra.run.dir={run}", f"paths.data_dir={tmp_path / 'data'}",
                      "extras.print_config=false", timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "model.topk" in lines[0] and "7 items" in lines[0], proc.stderr[-3000:]
    assert not run.exists()


@pytest.mark.parametrize(("script", "overrides", "needle"), [
    ("train.py", ["model.optimizer.lr=-1"], "model.optimizer.lr=-1"),
    ("train.py", ["-m", "sampler=uniform,nosuch"], "sampler=nosuch"),
    ("train.py", ["-m", "trainer.max_epochs=1,-5"], "trainer.max_epochs=-5"),
    ("eval.py", ["ckpt_path=missing.ckpt", "trainer.max_epochs=-5"], "trainer.max_epochs=-5"),
])
def test_default_layout_gets_no_log_folder(tmp_path, script, overrides, needle):
    # the default run/sweep folders live under paths.log_dir: nothing may appear there
    logs = tmp_path / "logs"
    proc = run_script(script, *overrides, f"paths.log_dir={logs}", f"paths.data_dir={tmp_path / 'data'}",
                      "extras.print_config=false", timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and lines[0].startswith(f"error: {needle}:"), proc.stderr[-3000:]
    assert not logs.exists() and not (tmp_path / "data").exists()


def test_multirun_with_one_bad_job_writes_no_sweep_folder(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_script("train.py", "-m", "model.optimizer.lr=0.01,-1", f"hydra.sweep.dir={sweep}",
                      "extras.print_config=false", timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "model.optimizer.lr=-1" in lines[0], proc.stderr[-3000:]
    assert not sweep.exists()


@pytest.mark.slow  # ~15 s: a real (tiny) training run
def test_piped_progress_bars_redraw_by_time_not_per_step(tmp_path):
    # 500 users / batch 8 -> ~1,200 training steps + eval batches; Lightning's per-step redraws write ~100 KB
    run = tmp_path / "run"
    proc = check(run_script(
        "train.py", f"hydra.run.dir={run}", f"paths.data_dir={tmp_path / 'data'}", *TINY_DATA,
        "data.batch_size=8", "data.eval_batch_size=16", "trainer.max_epochs=1", "trainer.check_val_every_n_epoch=1",
        "model.embedding_dim=8", "model.num_layers=1", "extras.print_config=false", "~callbacks.model_summary",
    ))
    assert "Epoch 0" in proc.stdout  # the bar was drawn
    assert len(proc.stdout.encode()) < 30_000, len(proc.stdout.encode())
