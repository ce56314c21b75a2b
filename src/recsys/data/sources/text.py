"""Bytes, strict UTF-8 and line recovery for the file readers (error messages name the line)."""

from __future__ import annotations

import codecs
import io
import os
from collections.abc import Sequence
from pathlib import Path

from recsys.errors import DataError

UTF8_BOM = b"\xef\xbb\xbf"


def read_bytes(path: str | os.PathLike) -> bytes:
    """A file's bytes; a missing file (or a folder) raises :class:`DataError`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found" + (" (it is a folder)" if path.is_dir() else ""))
    return path.read_bytes()


def utf8_error(path: Path | str, raw: bytes, detail: str = "") -> DataError:
    """The :class:`DataError` for a file that is not UTF-8: the line and the first bad byte of ``raw`` (the
    file's bytes; error path only)."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        return DataError(f"{path}, line {line}: byte {raw[e.start:e.start + 1]!r} is not valid UTF-8; "
                         "expected UTF-8 text")
    return DataError(f"{path}: not valid UTF-8 text{f' ({detail})' if detail else ''}")


def check_utf8(source: Path | bytes, origin: Path | str) -> None:
    """Strict UTF-8 for the whole file (pandas decodes only the columns it keeps); ASCII blocks are skipped."""
    if isinstance(source, bytes):
        if not source.isascii():
            try:
                source.decode("utf-8")
            except UnicodeDecodeError:
                raise utf8_error(origin, source) from None
        return
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        with open(source, "rb") as f:
            while block := f.read(1 << 24):
                if not block.isascii() or decoder.getstate()[0]:
                    decoder.decode(block)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise utf8_error(origin, Path(source).read_bytes()) from None


def line_texts(source: Path | bytes, wanted: Sequence[int]) -> dict[int, str]:
    """Error path (and blank-line checks): the text of the given 1-based lines, with the line breaks pandas
    uses (``\\n``, ``\\r\\n`` or ``\\r``)."""
    todo = {int(n) for n in wanted}
    out: dict[int, str] = {}
    if not todo:
        return out
    last = max(todo)
    stream = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")  # noqa: SIM115
    with io.TextIOWrapper(stream, encoding="utf-8-sig", errors="replace", newline=None) as f:
        for n, line in enumerate(f, start=1):
            if n in todo:
                out[n] = line.rstrip("\n")
            if n >= last:
                break
    return out
