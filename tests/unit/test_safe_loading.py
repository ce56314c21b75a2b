"""Safe loading: no unsafe deserialisation or code evaluation in the source tree, and a cache file holding an
object array is rejected (rebuilt), never unpickled."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from recsys.data.cache import cache_path, load_or_build
from recsys.errors import DataError
from tests.unit.test_cache_corruption import LOADERS, Source

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted([*(ROOT / "src").rglob("*.py"), *(ROOT / "scripts").rglob("*.py"), ROOT / "train.py", ROOT / "eval.py",
                  ROOT / "recommend.py"])

# (file, call) pairs reviewed as safe; each with its reason
ALLOWED: set[tuple[str, str]] = set()


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_const(node: ast.expr | None, value: object) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def unsafe_calls(path: Path) -> list[str]:
    """Unsafe calls in one file: ``torch.load`` without ``weights_only=True``, ``np.load`` without
    ``allow_pickle=False``, any pickle/marshal/shelve load, ``yaml.load``/``unsafe_load``, builtin
    ``eval``/``exec``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
            if any(n and n.split(".")[0] in ("pickle", "cPickle", "dill", "marshal", "shelve", "joblib") for n in names):
                found.append(f"line {node.lineno}: imports {names}")
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = ast.unparse(f)
        where = f"line {node.lineno}: {name}"
        if isinstance(f, ast.Name) and f.id in ("eval", "exec", "__import__"):
            found.append(where)
        elif name in ("torch.load",) and not _is_const(_keyword(node, "weights_only"), True):
            found.append(where + " without weights_only=True")
        elif name in ("np.load", "numpy.load") and not _is_const(_keyword(node, "allow_pickle"), False):
            found.append(where + " without allow_pickle=False")
        elif name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load", "pd.read_pickle", "pandas.read_pickle") or isinstance(f, ast.Attribute) and f.attr in ("loads", "load") and isinstance(f.value, ast.Name) \
                and f.value.id in ("pickle", "marshal", "dill", "shelve", "joblib"):
            found.append(where)
    return found


def test_source_tree_has_no_unsafe_loading():
    assert len(SOURCES) > 20
    problems = []
    for path in SOURCES:
        rel = path.relative_to(ROOT).as_posix()
        for problem in unsafe_calls(path):
            if not any(rel == f and call in problem for f, call in ALLOWED):
                problems.append(f"{rel}, {problem}")
    assert not problems, "unsafe loading:\n" + "\n".join(problems)


def test_the_static_check_catches_what_it_looks_for(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import torch, numpy as np, yaml\nimport pickle\n"
        "torch.load('x')\ntorch.load('x', weights_only=False)\nnp.load('x')\nyaml.load('x')\neval('1')\n"
        "torch.load('x', weights_only=True)\nnp.load('x', allow_pickle=False)\nmodel.eval()\n"
    )
    problems = unsafe_calls(bad)
    assert [p.split(":")[0] for p in problems] == [f"line {n}" for n in (2, 3, 4, 5, 6, 7)], problems


class Flag:
    """Unpickling this object would create a file: the proof that a cache was unpickled."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


@pytest.mark.parametrize("kind", ["graph", "session"])
def test_cache_with_an_object_array_is_rejected_not_unpickled(tmp_path, kind):
    source = Source(kind)
    load = LOADERS[kind]
    path = cache_path(source, tmp_path)
    source.make().save(path)
    with np.load(path, allow_pickle=False) as z:
        arrays = dict(z)
    marker = tmp_path / "unpickled"
    arrays["item_ids"] = np.array([Flag(marker)] * len(arrays["item_ids"]), dtype=object)
    np.savez(path, **arrays)  # numpy pickles the object array into the .npy member
    with pytest.raises(DataError, match=path.name):
        load(path)
    assert not marker.exists()
    load_or_build(source, tmp_path, load)
    assert source.builds == 1 and not marker.exists()  # rebuilt, and the payload never ran
    assert load(path).item_ids.dtype.kind == "U"
