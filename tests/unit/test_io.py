"""recsys.io: atomic writes and the schema-checked ``.npz`` archives behind both dataset caches."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.errors import DataError
from recsys.io import Entry, atomic_write, atomic_write_text, load_npz, save_npz

SCHEMA = {"n": Entry(np.int64, ndim=0), "ids": Entry(np.int64), "names": Entry(str, optional=True)}


def test_atomic_write_failure_leaves_nothing(tmp_path):
    path = tmp_path / "out.bin"

    def bad_writer(f):
        f.write(b"partial")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        atomic_write(path, bad_writer)
    assert list(tmp_path.iterdir()) == []

    # an existing file is untouched by a failed write
    atomic_write(path, lambda f: f.write(b"good"))
    assert path.read_bytes() == b"good"
    with pytest.raises(RuntimeError):
        atomic_write(path, bad_writer)
    assert path.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_atomic_write_text_is_utf8(tmp_path):
    atomic_write_text(tmp_path / "sub" / "t.json", '{"ü": 1}\n')
    assert (tmp_path / "sub" / "t.json").read_bytes() == '{"ü": 1}\n'.encode()


def test_npz_round_trip_casts_and_skips_optional(tmp_path):
    path = tmp_path / "a.npz"
    save_npz(path, SCHEMA, {"n": 3, "ids": np.array([2, 0, 1], dtype=np.int32), "names": None}, {"k": "v"})
    arrays, meta = load_npz(path, SCHEMA)
    assert sorted(arrays) == ["ids", "n"] and meta == {"k": "v"}
    assert arrays["ids"].dtype == np.int64 and arrays["ids"].tolist() == [2, 0, 1] and int(arrays["n"]) == 3
    save_npz(path, SCHEMA, {"n": 3, "ids": [1], "names": ["ä", "bb"]})
    arrays, meta = load_npz(path, SCHEMA)
    assert arrays["names"].tolist() == ["ä", "bb"] and arrays["names"].dtype.kind == "U" and meta == {}
    with pytest.raises(KeyError, match="ids"):
        save_npz(path, SCHEMA, {"n": 3})


@pytest.mark.parametrize(
    "arrays, detail",
    [
        ({"n": np.int64(3)}, "KeyError"),  # a required array is missing
        ({"n": np.int64(3), "ids": np.arange(3.0)}, "ids is float64, 1-d; expected 1-d int64"),
        ({"n": np.arange(2), "ids": np.arange(3)}, "n is int64, 1-d; expected 0-d int64"),
        ({"n": np.int64(3), "ids": np.arange(3), "names": np.arange(3)}, "names is int64, 1-d; expected 1-d str"),
        ({"n": np.int64(3), "ids": np.arange(3), "names": np.array(["a"], dtype=object)}, "ValueError"),  # pickled
    ],
)
def test_npz_schema_mismatch_names_the_file(tmp_path, arrays, detail):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays, meta_keys=np.array([], dtype=str), meta_values=np.array([], dtype=str))
    with pytest.raises(DataError, match="bad.npz: not a readable thing") as err:
        load_npz(path, SCHEMA, "thing")
    assert detail in str(err.value)


def test_npz_check_and_meta_mismatch(tmp_path):
    path = tmp_path / "c.npz"
    save_npz(path, SCHEMA, {"n": 3, "ids": [0, 1]})
    with pytest.raises(DataError, match=r"c.npz: not a readable cache \(2 ids for n=3\)"):
        load_npz(path, SCHEMA, check=lambda a: f"{len(a['ids'])} ids for n={int(a['n'])}" if len(a["ids"]) != a["n"] else None)
    np.savez(path, n=np.int64(3), ids=np.arange(3), meta_keys=np.array(["a", "b"]), meta_values=np.array(["x"]))
    with pytest.raises(DataError, match="c.npz"):
        load_npz(path, SCHEMA)
