"""Cache of processed datasets under ``${paths.data_dir}/processed/``, keyed by the source fingerprint.

Graph and session data share it: ``load`` reads a cache file back (``GraphSplits.load`` by default,
``SessionSplits.load`` for session sources); the built object must have ``validate(origin)`` and ``save(path)``.
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


def load_or_build(source: GraphSource, cache_dir: str | Path | None, load: Callable[[Path], Any] = GraphSplits.load) -> Any:
    """Return the cached dataset if its key matches, else build, validate and cache it atomically."""
    if cache_dir is None:
        splits = source.build()
        splits.validate(source.name)
        return splits
    path = cache_path(source, cache_dir)
    if path.exists():
        log.info("Loading cached dataset %s", path)
        return load(path)
    # one process builds (DDP ranks, parallel sweep jobs); the others wait for the lock, then load
    with file_lock(path):
        if path.exists():
            log.info("Loading cached dataset %s (built by another process)", path)
            return load(path)
        log.info("Building dataset %s (cache miss: %s)", source.name, path.name)
        splits = source.build()
        splits.validate(source.name)
        splits.save(path)
    return splits
