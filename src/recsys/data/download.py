"""Downloads of raw dataset files: checksums, resume, atomic rename and one clear error when offline.

A file is fetched to ``<dest>.part`` (resumed with an HTTP ``Range`` request when a partial file exists and
the server answers ``206``; restarted cleanly otherwise), verified against its pinned checksum, then renamed
onto ``dest`` with ``os.replace``. A checksum mismatch deletes the partial file and raises
:class:`~recsys.errors.DataError`, so nothing half-written is ever left under ``dest``.

Checksums are strings ``"<kind>:<hex>"`` with kind ``sha256``, ``md5`` or ``git-blob`` (the id ``git
hash-object FILE`` prints: ``sha1(b"blob <size>\\0" + content)``), or ``None`` (a warning says that no
checksum is pinned).
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

from recsys.errors import ConfigError, DataError
from recsys.io import file_lock

log = logging.getLogger(__name__)

CHUNK = 1 << 20
CHECKSUM_KINDS = ("sha256", "md5", "git-blob")


def file_checksum(path: str | os.PathLike, kind: str) -> str:
    """Hex digest of ``path`` of the given kind (``sha256``, ``md5`` or ``git-blob``), streamed."""
    path = Path(path)
    if kind == "git-blob":
        h = hashlib.sha1()
        h.update(b"blob %d\0" % path.stat().st_size)
    elif kind in ("sha256", "md5"):
        h = hashlib.new(kind)
    else:
        raise ConfigError(f"unknown checksum kind {kind!r}; expected one of {CHECKSUM_KINDS}")
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def parse_checksum(checksum: str) -> tuple[str, str]:
    kind, sep, digest = checksum.partition(":")
    if not sep or kind not in CHECKSUM_KINDS or not digest:
        raise ConfigError(f"checksum {checksum!r} must look like '<kind>:<hex>' with kind in {CHECKSUM_KINDS}")
    return kind, digest.lower()


def verify_checksum(
    path: str | os.PathLike, checksum: str | None, url: str = "", shown: str | os.PathLike | None = None
) -> None:
    """Raise :class:`DataError` if ``path`` does not match ``checksum`` (``None``: nothing to check);
    the message names ``shown`` (default ``path``)."""
    if checksum is None:
        return
    kind, expected = parse_checksum(checksum)
    actual = file_checksum(path, kind)
    if actual != expected:
        raise DataError(
            f"{shown or path}: {kind} checksum mismatch (expected {expected}, got {actual})"
            + (f" for the download of {url}" if url else "")
            + "; the file was deleted. The source may have changed or the transfer was corrupted"
        )


def _progress(total: int | None, initial: int, desc: str):
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        return None
    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
                disable=None, file=sys.stderr, leave=False)


def _fetch(url: str, part: Path, timeout: float, progress: bool) -> None:
    """Append the rest of ``url`` to ``part`` (resume with ``Range``) or rewrite it from scratch."""
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "recsys-downloader"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # range not satisfiable: the part file is complete or stale
            return
        raise
    with response:
        status = getattr(response, "status", 200)
        if offset and status != 206:  # server ignored the range: start over
            offset = 0
        mode = "ab" if offset else "wb"
        length = response.headers.get("Content-Length")
        total = (int(length) + offset) if length is not None else None
        bar = _progress(total, offset, Path(url).name) if progress else None
        with open(part, mode) as f:
            while chunk := response.read(CHUNK):
                f.write(chunk)
                if bar is not None:
                    bar.update(len(chunk))
            f.flush()
            os.fsync(f.fileno())
        if bar is not None:
            bar.close()
        if total is not None and part.stat().st_size < total:
            raise urllib.error.URLError(f"connection closed after {part.stat().st_size} of {total} bytes")


def download(
    url: str,
    dest: str | os.PathLike,
    checksum: str | None = None,
    *,
    retries: int = 2,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest`` (skipped when ``dest`` exists and matches ``checksum``).

    Network errors are retried (resuming the ``.part`` file); a checksum mismatch after a resumed transfer
    gets one clean retry; a mismatch of a clean transfer raises :class:`DataError` and leaves no file.
    Being offline raises one :class:`DataError` naming the URL and the ``data.path`` alternative.
    """
    dest = Path(dest)
    if checksum is not None:
        parse_checksum(checksum)
    with file_lock(dest):
        if dest.exists():
            try:
                verify_checksum(dest, checksum)
                return dest
            except DataError:
                log.warning("%s does not match its pinned checksum; downloading it again", dest)
                dest.unlink()
        if checksum is None:
            log.warning("No checksum pinned for %s; the download cannot be verified", url)
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = Path(f"{dest}.part")
        log.info("Downloading %s -> %s", url, dest)
        last_error: Exception | None = None
        for attempt in range(retries + 1):
            resumed = part.exists() and part.stat().st_size > 0
            try:
                _fetch(url, part, timeout, progress)
            except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as err:
                last_error = err
                if isinstance(err, urllib.error.HTTPError) and err.code < 500 and err.code not in (408, 429):
                    part.unlink(missing_ok=True)
                    raise DataError(f"download of {url} failed: HTTP {err.code} {err.reason}") from err
                reason = getattr(err, "reason", None)
                if isinstance(reason, OSError) and not isinstance(reason, TimeoutError):
                    break  # unreachable host / no network: retrying will not help
                log.warning("Download of %s failed (attempt %d/%d): %s", url, attempt + 1, retries + 1, err)
                continue
            try:
                verify_checksum(part, checksum, url, shown=dest)
            except DataError:
                part.unlink(missing_ok=True)
                if resumed and attempt < retries:
                    log.warning("Resumed download of %s has a wrong checksum; retrying from scratch", url)
                    continue
                raise
            os.replace(part, dest)
            return dest
        # a partial ``.part`` file is kept: the next attempt resumes it (and verifies the checksum)
        raise DataError(
            f"could not download {url} ({last_error}). If this machine is offline, download the file elsewhere "
            f"and point the config at a local copy with data.path=/folder/with/the/files (expected here: {dest})"
        ) from last_error

