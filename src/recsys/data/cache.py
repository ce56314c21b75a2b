"""Cache of processed datasets under ``${paths.data_dir}/processed/``, keyed by the source fingerprint.

Graph and session data share it: a :class:`Source` builds :class:`Splits` (``GraphSplits`` or ``SessionSplits``);
``load`` reads a cache file back (by default :func:`load_splits`, which reads either kind).
A cache file that does not read back (``load`` raises :class:`~recsys.errors.DataError`: truncated, corrupted,
empty, an object array) is reported with a warning naming it and rebuilt. Files are written atomically, so a
crash mid-write leaves only a hidden temporary file, never a ``<name>-<key>.npz`` that would be picked up.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from recsys.data.interactions import GraphSplits
from recsys.data.session_data import SessionSplits
from recsys.errors import DataError
from recsys.io import file_lock

log = logging.getLogger(__name__)


class Splits(Protocol):
    """What a source builds and the cache stores (:class:`GraphSplits` or :class:`SessionSplits`)."""

    meta: dict[str, str]

    def validate(self, origin: str = ...) -> None: ...

    def save(self, path: str | os.PathLike) -> None: ...


class Source(Protocol):
    """A graph or session data source: ``fingerprint()`` is everything its result depends on (the cache key)."""

    name: str

    def fingerprint(self) -> dict[str, Any]: ...

    def build(self) -> Splits: ...


def load_splits(path: str | os.PathLike) -> GraphSplits | SessionSplits:
    """Read a cache file of either kind: a session cache (it holds ``train_offsets``) with
    :meth:`SessionSplits.load`, anything else with :meth:`GraphSplits.load` (which reports a damaged file)."""
    try:
        with zipfile.ZipFile(path) as z:
            session = "train_offsets.npy" in z.namelist()
    except Exception:  # noqa: BLE001 - damaged: the graph loader raises the DataError naming the file
        session = False
    return SessionSplits.load(path) if session else GraphSplits.load(path)


def cache_key(source: Source) -> str:
    """sha256 of the canonical JSON of the source fingerprint (first 16 hex digits)."""
    blob = json.dumps(source.fingerprint(), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def splits_identity(splits: Any) -> str:
    """What tells one built dataset from another of the same size: sha256 (16 hex digits) of the sizes and the
    original user/item ids (stored in checkpoints; a checkpoint of another dataset is refused on loading)."""
    h = hashlib.sha256(f"{getattr(splits, 'num_users', 0)}/{splits.num_items}".encode())
    for ids in (getattr(splits, "user_ids", None), getattr(splits, "item_ids", None)):
        if ids is not None:
            h.update(b"\x00" + "\x1f".join(ids.astype(str).tolist()).encode())
    return h.hexdigest()[:16]


def cache_path(source: Source, cache_dir: str | Path) -> Path:
    return Path(cache_dir) / f"{source.name}-{cache_key(source)}.npz"


def ensure_cached(source: Source, cache_dir: str | Path, load: Callable[[Path], Splits] = load_splits) -> Path:
    """Build the cache file if it is missing (no load when it exists); return its path."""
    path = cache_path(source, cache_dir)
    if not path.exists():
        load_or_build(source, cache_dir, load)
    return path


def _load_valid(path: Path, load: Callable[[Path], Splits]) -> Splits | None:
    """The cache file read back, or ``None`` (with a warning naming the file) when it is damaged: a truncated,
    bit-flipped, empty or foreign file is deleted so that it is rebuilt, never used."""
    try:
        return load(path)
    except DataError as err:
        log.warning("Dataset cache %s is corrupted or unreadable (%s); rebuilding it", path, err)
        return None


def describe(source: Source, built: Splits | None = None) -> str:
    """What errors about a built dataset name: the source and its files (``data.path`` or the files read)."""
    where = getattr(source, "path", None) or (getattr(built, "meta", None) or {}).get("files")
    return f"{source.name} ({where})" if where else source.name


def load_or_build(source: Source, cache_dir: str | Path | None, load: Callable[[Path], Splits] = load_splits) -> Any:
    """Return the cached dataset if its key matches and the file reads back whole, else build, validate and cache
    it atomically (a damaged cache file is reported and replaced)."""
    if cache_dir is None:
        splits = source.build()
        splits.validate(describe(source, splits))
        return splits
    path = cache_path(source, cache_dir)
    if path.exists():
        log.info("Loading cached dataset %s", path)
        splits = _load_valid(path, load)
        if splits is not None:
            return splits
    # one process builds (DDP ranks, parallel sweep jobs); the others wait for the lock, then load
    with file_lock(path):
        if path.exists():
            # built (or rebuilt) by another process meanwhile, or still the damaged file
            splits = _load_valid(path, load)
            if splits is not None:
                log.info("Loading cached dataset %s (built by another process)", path)
                return splits
            path.unlink(missing_ok=True)
        log.info("Building dataset %s (cache miss: %s)", source.name, path.name)
        splits = source.build()
        splits.validate(describe(source, splits))
        splits.save(path)
    return splits
