"""Cache of processed datasets under ``${paths.data_dir}/processed/``, keyed by the source fingerprint.

Graph and session data share it: ``load`` reads a cache file back (``GraphSplits.load`` by default,
``SessionSplits.load`` for session sources); the built object must have ``validate(origin)`` and ``save(path)``.
A cache file that does not read back (``load`` raises :class:`~recsys.errors.DataError`: truncated, corrupted,
empty, an object array) is reported with a warning naming it and rebuilt. Files are written atomically, so a
crash mid-write leaves only a hidden temporary file, never a ``<name>-<key>.npz`` that would be picked up.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from recsys.data.download import file_lock
from recsys.data.interactions import GraphSplits
from recsys.data.sources.base import GraphSource
from recsys.errors import DataError

log = logging.getLogger(__name__)


def cache_key(source: GraphSource) -> str:
    """sha256 of the canonical JSON of the source fingerprint (first 16 hex digits)."""
    blob = json.dumps(source.fingerprint(), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def cache_path(source: GraphSource, cache_dir: str | Path) -> Path:
    return Path(cache_dir) / f"{source.name}-{cache_key(source)}.npz"


def ensure_cached(source: GraphSource, cache_dir: str | Path, load: Callable[[Path], Any] = GraphSplits.load) -> Path:
    """Build the cache file if it is missing (no load when it exists); return its path."""
    path = cache_path(source, cache_dir)
    if not path.exists():
        load_or_build(source, cache_dir, load)
    return path


def _load_valid(path: Path, load: Callable[[Path], Any]) -> Any | None:
    """The cache file read back, or ``None`` (with a warning naming the file) when it is damaged: a truncated,
    bit-flipped, empty or foreign file is deleted so that it is rebuilt, never used."""
    try:
        return load(path)
    except DataError as err:
        log.warning("Dataset cache %s is corrupted or unreadable (%s); rebuilding it", path, err)
        return None


def describe(source: GraphSource, built: Any = None) -> str:
    """What errors about a built dataset name: the source and its files (``data.path`` or the files read)."""
    where = getattr(source, "path", None) or (getattr(built, "meta", None) or {}).get("files")
    return f"{source.name} ({where})" if where else source.name


def load_or_build(source: GraphSource, cache_dir: str | Path | None, load: Callable[[Path], Any] = GraphSplits.load) -> Any:
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
