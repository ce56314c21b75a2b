"""The import-linter contracts of pyproject.toml (docs/contributing.md, "Layers") hold for the package, and each
one breaks on a temporary copy of the package with one bad import added."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint(tmp_path: Path, edit: tuple[str, str] | None = None) -> subprocess.CompletedProcess:
    """``lint-imports`` with the project's contracts on a copy of ``src/recsys`` (``edit``: a module path relative
    to the package and a line appended to it, or a new module when the file does not exist)."""
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "recsys", src / "recsys", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    if edit is not None:
        module, line = edit
        path = src / "recsys" / module
        path.write_text((path.read_text() if path.exists() else "") + f"\n{line}\n")
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--no-logo"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_package_keeps_every_contract(tmp_path):
    result = lint(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(("module", "line", "broken", "needle"), [
    # a leaf importing a task: an upward import
    ("metrics.py", "from recsys.train import train", "Layers", "recsys.metrics -> recsys.train"),
    # a model reaching into the data package (it must use recsys.info)
    ("models/pop_module.py", "from recsys.data.cache import splits_identity", "Models never import data",
     "recsys.models.pop_module -> recsys.data.cache"),
    # a task importing another task
    ("recommend.py", "import recsys.evaluate", "Nothing imports a task", "recsys.recommend -> recsys.evaluate"),
    # a circle inside one package (cache already imports interactions)
    ("data/interactions.py", "import recsys.data.cache", "No import cycle", ".interactions -> .cache"),
    # a new top-level module that no layer declares
    ("newmodule.py", "import recsys.errors", "Layers", "recsys.newmodule"),
])
def test_a_bad_import_breaks_its_contract(tmp_path, module, line, broken, needle):
    result = lint(tmp_path, (module, line))
    assert result.returncode != 0, result.stdout
    broken_lines = [ln for ln in result.stdout.splitlines() if ln.rstrip().endswith("BROKEN")]
    assert any(ln.startswith(broken) for ln in broken_lines), result.stdout
    assert needle in result.stdout, result.stdout
