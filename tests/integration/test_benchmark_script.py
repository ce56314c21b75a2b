"""scripts/benchmark.py stays runnable: each section on the embedded default with a tiny budget (no timing asserted)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.integration.conftest import ROOT


def _bench(*args: str) -> str:
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "benchmark.py"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.parametrize(("section", "args", "phases"), [
    ("graph-train-eval", ["--path", "synthetic", "--num-layers", "1", "--device", "cpu"],
     ["build normalised adjacency", "training step LightGCN (1 layers)", "custom CSR autograd",
      "full-ranking test evaluation, all test users"]),
    ("session-gru4rec", ["--steps", "4", "--chunk", "2", "--n-sample", "16", "--device", "cpu"],
     ["plan one epoch", "4 training steps in chunks of 2", "next-item test evaluation"]),
])
def test_benchmark_section_prints_a_row_per_phase(section, args, phases):
    out = _bench(section, "--repeat", "1", *args)
    table = [line for line in out.splitlines() if line.startswith("| ") and not line.startswith("| phase")]
    for phase in phases:
        assert any(phase in row for row in table), (phase, out)
    assert all(float(row.split("|")[2]) >= 0 for row in table)
    assert "process peak RSS" in out


@pytest.mark.slow
def test_train_epoch_section_writes_the_flat_benchmark_json(tmp_path):
    """``train-epoch`` on the embedded defaults (MF, GRU4Rec; the fewest epochs it takes): its rows, and
    benchmark.json with every flat key the speed issue names."""
    import json

    out = _bench("train-epoch", "--repeat", "1", "--graph-path", "synthetic", "--graph-model", "mf",
                 "--session-path", "synthetic", "--epochs", "3", "--json", str(tmp_path / "b.json"))
    assert "train.py: one training epoch" in out and "bare step loop" in out and "train.py: one GRU4Rec training" in out
    results = json.loads((tmp_path / "b.json").read_text())
    for key in ("train_epoch_s", "train_floor_s", "train_bare_loop_s", "eval_s", "eval_floor_s", "peak_rss_mb",
                "session_train_events_per_s", "session_floor_events_per_s"):
        assert isinstance(results[key], float) and results[key] >= 0, key
    assert results["train_epoch_s"] > 0 and results["session_train_events_per_s"] > 0
