"""Damaged dataset caches (graph and session) are detected, reported with the file's name and rebuilt — never
a traceback, never silently used; a crash mid-write leaves no cache file that would be picked up."""

from __future__ import annotations

import io
import logging
import os
import struct
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

from recsys.data.cache import cache_path, load_or_build
from recsys.data.interactions import GraphSplits
from recsys.data.session_data import SessionSplits
from recsys.errors import DataError
from recsys.info import SessionSequences

ROOT = Path(__file__).resolve().parents[2]


def graph_splits() -> GraphSplits:
    u = np.array([0, 0, 1, 2, 2, 3], dtype=np.int64)
    i = np.array([0, 1, 1, 2, 3, 0], dtype=np.int64)
    return GraphSplits(4, 4, (u, i), (u[:2], i[:2] + 0), (u[2:4], i[2:4]), user_ids=np.array(list("abcd")),
                       item_ids=np.array(list("wxyz")), meta={"source": "fixture"})


def session_splits() -> SessionSplits:
    train = SessionSequences.from_lengths([2, 3], [0, 1, 1, 2, 0], [1.0, 2.0, 3.0, 4.0, 5.0], np.array(["s1", "s2"]))
    test = SessionSequences.from_lengths([2], [2, 0], [9.0, 10.0], np.array(["s3"]))
    return SessionSplits(3, train, SessionSequences.empty(), test, item_ids=np.array(["x", "y", "z"]))


class Source:
    """A source counting its builds (the oracle for "rebuilt" vs "loaded")."""

    def __init__(self, kind: str) -> None:
        self.kind, self.name, self.builds = kind, f"fixture_{kind}", 0

    def fingerprint(self) -> dict:
        return {"kind": self.kind}

    def make(self):
        return graph_splits() if self.kind == "graph" else session_splits()

    def build(self):
        self.builds += 1
        return self.make()


LOADERS = {"graph": GraphSplits.load, "session": SessionSplits.load}


def truncate(raw: bytes) -> bytes:
    return raw[: len(raw) // 2]


def flip_data(raw: bytes) -> bytes:
    """One byte of the stored ``train_items`` array flipped: the zip CRC no longer matches."""
    with zipfile.ZipFile(io.BytesIO(raw)) as z:
        info = z.getinfo("train_items.npy")
    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26:info.header_offset + 30])
    last = info.header_offset + 30 + name_len + extra_len + info.compress_size - 1  # last byte of the data
    b = bytearray(raw)
    b[last] ^= 0x01
    return bytes(b)


def flip_header(raw: bytes) -> bytes:
    b = bytearray(raw)
    for k in range(0, 64):
        b[k] ^= 0x5A
    return bytes(b)


DAMAGE = {"truncated": truncate, "bit_flipped": flip_data, "header_flipped": flip_header,
          "zero_length": lambda raw: b"", "not_a_zip": lambda raw: b"hello"}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
@pytest.mark.parametrize("kind", ["graph", "session"])
def test_damaged_cache_is_reported_and_rebuilt(tmp_path, caplog, kind, damage):
    source, load = Source(kind), LOADERS[kind]
    first = load_or_build(source, tmp_path, load)
    path = cache_path(source, tmp_path)
    assert source.builds == 1 and path.is_file()
    path.write_bytes(DAMAGE[damage](path.read_bytes()))
    with pytest.raises(DataError, match=path.name):
        load(path)  # the loader itself detects the damage
    with caplog.at_level(logging.WARNING, logger="recsys.data.cache"):
        again = load_or_build(source, tmp_path, load)
    assert source.builds == 2, "a damaged cache was used instead of being rebuilt"
    assert any(path.name in r.getMessage() and "rebuilding" in r.getMessage() for r in caplog.records)
    assert (load(path).train[0] if kind == "graph" else load(path).train.items).tolist() == \
        (first.train[0] if kind == "graph" else first.train.items).tolist()
    assert again is not None
    load_or_build(source, tmp_path, load)
    assert source.builds == 2  # the rebuilt file is a valid cache again


@pytest.mark.parametrize("kind", ["graph", "session"])
def test_default_loader_reads_either_kind(tmp_path, kind):
    source = Source(kind)
    first = load_or_build(source, tmp_path)  # no loader given: recsys.data.cache.load_splits
    again = load_or_build(source, tmp_path)
    assert source.builds == 1 and type(again) is type(first) is type(source.make())
    assert again.item_ids.tolist() == first.item_ids.tolist() and again.meta == first.meta


@pytest.mark.parametrize("kind", ["graph", "session"])
def test_cache_with_wrong_content_is_rejected(tmp_path, kind):
    """A readable zip that is not what ``save`` writes (missing arrays, float ids, ids out of range)."""
    path = tmp_path / "x.npz"
    np.savez(path, num_items=np.int64(3))
    with pytest.raises(DataError, match="x.npz"):
        LOADERS[kind](path)
    splits = graph_splits() if kind == "graph" else session_splits()
    splits.save(path)
    with np.load(path) as z:
        arrays = dict(z)
    key = "train_items"
    arrays[key] = arrays[key].astype(np.float64)
    np.savez(path, **arrays)
    with pytest.raises(DataError, match="x.npz"):
        LOADERS[kind](path)
    arrays[key] = np.full(len(arrays[key]), 99, dtype=np.int64)  # beyond num_items
    np.savez(path, **arrays)
    with pytest.raises(DataError, match="x.npz"):
        LOADERS[kind](path)


CRASH = textwrap.dedent("""
    import os, sys
    import numpy as np
    from recsys.io import atomic_write

    def write(f):
        np.savez(f, a=np.arange(1000))
        f.flush()
        os._exit(9)  # the process dies mid-write, before the rename

    atomic_write(sys.argv[1], write)
""")


def test_crash_mid_write_leaves_no_cache_file(tmp_path):
    source = Source("graph")
    path = cache_path(source, tmp_path)
    proc = subprocess.run([sys.executable, "-c", CRASH, str(path)], cwd=ROOT, capture_output=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, timeout=120)
    assert proc.returncode == 9, proc.stderr.decode()
    assert not path.exists()
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert leftovers and all(n.startswith(".") for n in leftovers)  # only the hidden temporary file
    load_or_build(source, tmp_path)
    assert source.builds == 1 and path.is_file()
