"""Shared machinery of file-backed graph sources: local ``data.path`` or download, file identity, pipeline."""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recsys.data.download import download
from recsys.data.interactions import GraphSplits
from recsys.data.preprocess import Interactions, PreprocessConfig, preprocess
from recsys.errors import ConfigError, DataError

log = logging.getLogger(__name__)

HASH_LIMIT = 256 << 20  # files up to 256 MiB are identified by content (sha256), larger by size + mtime
_HASH_MEMO: dict[tuple[str, int, int], str] = {}


def file_identity(path: str | os.PathLike) -> dict[str, Any]:
    """What a cache key needs to know about a file: name, size and sha256 (size + mtime above 256 MiB).

    The sha256 is memoised per (path, size, mtime) within the process.
    """
    path = Path(path)
    st = path.stat()
    ident: dict[str, Any] = {"name": path.name, "size": st.st_size}
    if st.st_size > HASH_LIMIT:
        ident["mtime_ns"] = st.st_mtime_ns
        return ident
    memo_key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if memo_key not in _HASH_MEMO:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        _HASH_MEMO[memo_key] = h.hexdigest()
    ident["sha256"] = _HASH_MEMO[memo_key]
    return ident


@dataclass(frozen=True)
class RemoteFile:
    """A downloadable file: URL and pinned checksum (``"sha256:…"``, ``"git-blob:…"`` or ``None``)."""

    url: str
    checksum: str | None = None


class FileGraphSource:
    """Base of the file readers: resolves the files (``data.path`` or download), fingerprints them and runs
    :func:`~recsys.data.preprocess.preprocess` on what :meth:`read` returns.

    Subclasses set ``name``, ``format_help`` and implement :meth:`required_files`, :meth:`read` and
    (for downloads) :meth:`remote_files`.
    """

    name: str = "files"
    version: int = 1
    format_help: str = ""

    def __init__(
        self,
        path: str | None = None,
        download_dir: str | None = None,
        split: str = "given",
        split_ratios: list[float] | tuple[float, ...] = (0.8, 0.1, 0.1),
        rating_threshold: float | None = None,
        min_user_interactions: int = 0,
        min_item_interactions: int = 0,
        unseen_items: str = "drop",
        seed: int = 0,
    ) -> None:
        self.path = Path(path).expanduser() if path not in (None, "") else None
        self.download_dir = Path(download_dir) if download_dir else None
        self.preprocess_config = PreprocessConfig(
            split=split, split_ratios=tuple(split_ratios), rating_threshold=rating_threshold,
            min_user_interactions=min_user_interactions, min_item_interactions=min_item_interactions,
            unseen_items=unseen_items, seed=seed,
        )
        self._files: dict[str, Path] | None = None

    # -- to implement -----------------------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        """Reader options that change the result (part of the fingerprint)."""
        return {}

    def required_files(self) -> list[str]:
        """Names of the files expected in a ``data.path`` folder."""
        raise NotImplementedError

    def optional_files(self) -> list[str]:
        return []

    def remote_files(self) -> dict[str, RemoteFile]:
        """Downloadable files by name (empty: this source has no download)."""
        return {}

    def read(self, files: dict[str, Path]) -> Interactions:
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------------------------
    def resolve_local(self, path: Path) -> dict[str, Path]:
        """Files of a local ``data.path``: a folder holding the required files (a single-file source also
        accepts the file itself)."""
        required = self.required_files()
        if not path.exists():
            raise DataError(f"data.path={path}: no such file or folder; expected {self.format_help}")
        if path.is_file():
            if len(required) == 1:
                return {required[0]: path}
            raise DataError(f"data.path={path} is a file; expected a folder with {', '.join(required)}")
        missing = [f for f in required if not (path / f).is_file()]
        if missing:
            raise DataError(f"data.path={path}: missing {', '.join(missing)}; expected {self.format_help}")
        files = {f: path / f for f in required}
        files.update({f: path / f for f in self.optional_files() if (path / f).is_file()})
        return files

    def files(self) -> dict[str, Path]:
        """The local files to read, downloading them first when no ``data.path`` is given."""
        if self._files is not None:
            return self._files
        if self.path is not None:
            self._files = self.resolve_local(self.path)
            return self._files
        remote = self.remote_files()
        if not remote:
            raise ConfigError(f"data={self.name} has no download; set data.path to a local copy ({self.format_help})")
        if self.download_dir is None:
            raise ConfigError(f"data={self.name}: set data.path (a local copy) or data.source.download_dir")
        folder = self.download_dir / self.name
        self._files = {fname: download(r.url, folder / fname, r.checksum) for fname, r in remote.items()}
        return self._files

    def fingerprint(self) -> dict[str, Any]:
        """Source, reader version, reader options, preprocessing config and the identity of every file."""
        files = self.files()
        return {
            "source": self.name,
            "version": self.version,
            "params": self.params(),
            "preprocess": self.preprocess_config.as_dict(),
            "files": {k: file_identity(p) for k, p in sorted(files.items())},
        }

    def build(self) -> GraphSplits:
        files = self.files()
        inter = self.read(files)
        meta = {"source": self.name, "files": ", ".join(str(p) for p in files.values())}
        return preprocess(inter, self.preprocess_config, meta)
