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
    ("session-gru4rec", ["--steps", "3", "--n-sample", "16", "--device", "cpu"],
     ["plan one epoch", "3 training steps", "next-item test evaluation"]),
])
def test_benchmark_section_prints_a_row_per_phase(section, args, phases):
    out = _bench(section, "--repeat", "1", *args)
    table = [line for line in out.splitlines() if line.startswith("| ") and not line.startswith("| phase")]
    for phase in phases:
        assert any(phase in row for row in table), (phase, out)
    assert all(float(row.split("|")[2]) >= 0 for row in table)
    assert "process peak RSS" in out
