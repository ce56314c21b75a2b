"""Files of every file-backed source (graph and session): local ``data.path`` or download, file identity; the graph
sources' pipeline."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recsys.data.download import download
from recsys.data.interactions import GraphSplits
from recsys.data.preprocess import Interactions, PreprocessConfig, preprocess
from recsys.errors import ConfigError, DataError

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


def forget_file_hashes() -> None:
    """Clear the memo of :func:`file_identity`: the next call hashes the files again, as a new process would."""
    _HASH_MEMO.clear()


@dataclass(frozen=True)
class RemoteFile:
    """A downloadable file: URL and pinned checksum (``"sha256:…"``, ``"git-blob:…"`` or ``None``)."""

    url: str
    checksum: str | None = None


class FileSource:
    """The files of a file-backed source, graph or session: a local ``data.path`` or a download.

    ``data.path`` may be a folder, searched for :meth:`required_files` (and :meth:`optional_files`), or a file:
    the file itself for a source of one file, else its folder. Without ``data.path``, the :meth:`remote_files`
    are downloaded into ``download_dir/<name>`` and checked against their pinned checksums; a source without a
    download says to set ``data.path``. Subclasses set ``name`` and ``format_help`` (named in every error).
    """

    name: str = "files"
    format_help: str = ""
    folder_ok: bool = True  # False: data.path must be the file itself

    def __init__(self, path: str | None = None, download_dir: str | None = None) -> None:
        self.path = Path(path).expanduser() if path not in (None, "") else None
        self.download_dir = Path(download_dir) if download_dir else None
        self._files: dict[str, Path] | None = None

    def required_files(self) -> list[str | tuple[str, ...]]:
        """Names (glob patterns allowed) looked for in a ``data.path`` folder; a tuple lists alternatives, the
        first found wins. The result's key is the (first) name."""
        raise NotImplementedError

    def optional_files(self) -> list[str]:
        return []

    def remote_files(self) -> dict[str, RemoteFile]:
        """Downloadable files by name (empty: this source has no download)."""
        return {}

    def require_local_or_download(self) -> None:
        """A :class:`ConfigError` now (not at the first read) when there is neither ``data.path`` nor a download."""
        if self.path is None and not self.remote_files():
            raise ConfigError(f"data={self.name} has no download; set data.path to a local copy ({self.format_help})")

    def resolve_local(self, path: Path) -> dict[str, Path]:
        """The files of a local ``data.path`` (file or folder)."""
        required = [(entry,) if isinstance(entry, str) else tuple(entry) for entry in self.required_files()]
        if not path.exists():
            raise DataError(f"data.path={path}: no such file or folder; expected {self.format_help}")
        folder = path
        if path.is_file():
            if len(required) == 1:
                return {required[0][0]: path}
            folder = path.parent  # a file of a several-file source: its folder
        elif not self.folder_ok:
            raise DataError(f"data.path={path} is a folder; expected {self.format_help}")
        files = {names[0]: found for names in required if (found := _first_file(folder, names)) is not None}
        missing = [names[0] for names in required if names[0] not in files]
        if missing:
            raise DataError(f"data.path={path}: missing {', '.join(missing)}; expected {self.format_help}")
        files.update({f: found for f in self.optional_files() if (found := _first_file(folder, (f,))) is not None})
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

    def file_identities(self) -> dict[str, Any]:
        """:func:`file_identity` of every file (part of the fingerprint)."""
        return {k: file_identity(p) for k, p in sorted(self.files().items())}


def _first_file(folder: Path, names: tuple[str, ...]) -> Path | None:
    """The first of ``names`` (glob patterns allowed) that is a file in ``folder``."""
    for name in names:
        if any(ch in name for ch in "*?["):
            found = sorted(p for p in folder.glob(name) if p.is_file())
            if found:
                return found[0]
        elif (folder / name).is_file():
            return folder / name
    return None


class FileGraphSource(FileSource):
    """Base of the graph file readers: resolves the files (:class:`FileSource`), fingerprints them and runs
    :func:`~recsys.data.preprocess.preprocess` on what :meth:`read` returns.

    Subclasses set ``name``, ``format_help`` and implement :meth:`required_files`, :meth:`read` and
    (for downloads) :meth:`remote_files`.
    """

    version: int = 1

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
        super().__init__(path, download_dir)
        self.preprocess_config = PreprocessConfig(
            split=split, split_ratios=tuple(split_ratios), rating_threshold=rating_threshold,
            min_user_interactions=min_user_interactions, min_item_interactions=min_item_interactions,
            unseen_items=unseen_items, seed=seed,
        )

    def params(self) -> dict[str, Any]:
        """Reader options that change the result (part of the fingerprint)."""
        return {}

    def read(self, files: dict[str, Path]) -> Interactions:
        raise NotImplementedError

    def fingerprint(self) -> dict[str, Any]:
        """Source, reader version, reader options, preprocessing config and the identity of every file."""
        return {
            "source": self.name,
            "version": self.version,
            "params": self.params(),
            "preprocess": self.preprocess_config.as_dict(),
            "files": self.file_identities(),
        }

    def build(self) -> GraphSplits:
        files = self.files()
        inter = self.read(files)
        meta = {"source": self.name, "files": ", ".join(str(p) for p in files.values())}
        return preprocess(inter, self.preprocess_config, meta)
