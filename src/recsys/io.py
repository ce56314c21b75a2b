"""Safe file I/O: atomic writes, inter-process file locks and validated ``.npz`` archives.

* :func:`atomic_write` / :func:`atomic_write_text` / :func:`atomic_copy`: the file appears whole or not at all (a
  temporary file in the same folder, fsynced, then ``os.replace``; a crash leaves only a hidden ``.<name>.*.tmp``);
* :func:`file_lock`: one process prepares a file while the others wait;
* :func:`save_npz` / :func:`load_npz`: named arrays plus string metadata, written atomically and read back
  against a schema (names, dtypes, dimensions, optional entries), never unpickled; anything else raises
  :class:`~recsys.errors.DataError` naming the file.

A leaf module: it imports nothing from ``recsys`` but :mod:`recsys.errors`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from recsys.errors import DataError


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> None:
    """Call ``write(fileobj)`` on a temporary file next to ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    data = text.encode()
    atomic_write(path, lambda f: f.write(data))


def atomic_copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Copy the file ``src`` to ``dst`` atomically (:func:`atomic_write`)."""
    with open(src, "rb") as f:
        atomic_write(dst, lambda out: shutil.copyfileobj(f, out, 1 << 20))


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """Exclusive inter-process lock on the hidden file ``.<name>.lock`` next to ``path`` (POSIX ``flock``;
    a no-op where unavailable).

    Several DDP ranks or sweep jobs that start at once then prepare a file once; the others wait and reuse it.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    path = Path(path)
    lock_path = path.parent / f".{path.name}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


@dataclass(frozen=True)
class Entry:
    """One array of an ``.npz`` schema: its dtype (``str`` = any unicode width), its dimensions, whether it may
    be absent."""

    dtype: Any
    ndim: int = 1
    optional: bool = False

    def matches(self, a: np.ndarray) -> bool:
        kind_ok = a.dtype.kind == "U" if np.dtype(self.dtype).kind == "U" else a.dtype == np.dtype(self.dtype)
        return kind_ok and a.ndim == self.ndim

    def describe(self) -> str:
        return f"{self.ndim}-d {'str' if np.dtype(self.dtype).kind == 'U' else np.dtype(self.dtype)}"


Schema = Mapping[str, Entry]


def save_npz(
    path: str | os.PathLike, schema: Schema, arrays: Mapping[str, Any], meta: Mapping[str, str] | None = None
) -> None:
    """Write ``arrays`` (each cast to its schema dtype; an optional one may be missing or ``None``) and the
    string mapping ``meta`` (as ``meta_keys``/``meta_values``) atomically as an uncompressed ``.npz``."""
    out: dict[str, np.ndarray] = {}
    for name, entry in schema.items():
        value = arrays.get(name)
        if value is None:
            if not entry.optional:
                raise KeyError(f"save_npz: the required array {name!r} is missing")
            continue
        out[name] = np.asarray(value).astype(entry.dtype)
    meta = dict(meta or {})
    out["meta_keys"] = np.array(list(meta.keys()), dtype=str)
    out["meta_values"] = np.array(list(meta.values()), dtype=str)
    atomic_write(path, lambda f: np.savez(f, **out))


def load_npz(
    path: str | os.PathLike,
    schema: Schema,
    what: str = "cache",
    check: Callable[[dict[str, np.ndarray]], str | None] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read a file written by :func:`save_npz` with the same schema: ``(arrays, meta)`` (absent optional
    entries are left out of ``arrays``). ``check(arrays)`` may name a further inconsistency.

    A truncated or bit-flipped file (the zip CRC), a missing array, a wrong dtype or dimension, an object array
    (never unpickled) or a failed check raises ``DataError("<path>: not a readable <what> (<detail>)")``."""

    def unreadable(detail: str) -> DataError:
        return DataError(f"{path}: not a readable {what} ({detail})")

    try:
        with np.load(path, allow_pickle=False) as z:
            files = set(z.files)
            arrays = {name: z[name] for name, entry in schema.items() if not entry.optional or name in files}
            keys, values = z["meta_keys"], z["meta_values"]
            meta = dict(zip(keys.tolist(), values.tolist(), strict=True))
    except Exception as err:  # noqa: BLE001 - zipfile/zlib/numpy raise many types for a damaged file
        raise unreadable(f"{type(err).__name__}: {err}") from err
    for name, a in arrays.items():
        if not schema[name].matches(a):
            raise unreadable(f"{name} is {a.dtype}, {a.ndim}-d; expected {schema[name].describe()}")
    if not all(Entry(str).matches(a) for a in (keys, values)):
        raise unreadable(f"meta is {keys.dtype}/{values.dtype}; expected strings")
    problem = check(arrays) if check is not None else None
    if problem:
        raise unreadable(problem)
    return arrays, meta
