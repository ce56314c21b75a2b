"""Readers of session click data (``data=rsc15``, ``yoochoose_raw``, ``diginetica``, ``csv_sessions``,
``ml_1m_sessions``). A session source has ``name``, ``fingerprint()`` and ``build() -> SessionSplits``.

Files are parsed by numpy's C reader (``np.loadtxt`` in chunks of rows, typed columns) as strict UTF-8 (a
byte-order mark dropped, CRLF accepted); nothing loops per line in Python unless a chunk does not parse (a
whitespace-only line is dropped and the chunk retried; a malformed chunk is bisected to its first bad line):
``DataError("<file>, line <n>: <what>; expected <format>")``. Missing files are downloaded (with a
pinned checksum) when the source knows where from, else a :class:`DataError` says where to get them and to
set ``data.path``.
"""

from __future__ import annotations

import io
import itertools
import logging
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recsys.data.session_data import SessionSplits
from recsys.data.session_preprocess import (
    DAY,
    SessionEvents,
    SessionPreprocessing,
    assemble_splits,
    preprocess_sessions,
    sessions_from_user_events,
    split_codes,
)
from recsys.data.sources.files import file_identity
from recsys.data.sources.textparse import utf8_error
from recsys.errors import ConfigError, DataError

log = logging.getLogger(__name__)

CHUNK_ROWS = 2_000_000
TIME_FORMATS = ("unix", "unix_ms", "iso", "date")

# GRU4Rec "prepared" RSC15 100k-click sample (rn5l/session-rec, bytes unchanged; see datasets README)
RSC15_BASE_URL = (
    "https://raw.githubusercontent.com/rn5l/session-rec/5dcd583cbd8d44703a5248b9a308945f24b91390/data/rsc15/prepared/"
)
RSC15_FILES = {
    "yoochoose-clicks-100k_train_full.txt": "sha256:9842c90358298ee784fcf0c9dccb2eeb283ab04368e53bdeee896747f4c03e1e",
    "yoochoose-clicks-100k_test.txt": "sha256:380410c606403531019e1ec0b4d192ef90492d594b9b5a91633b860618dd7136",
    "yoochoose-clicks-100k_train_tr.txt": "sha256:fb4c6381c8e5bc4de51553cb1ed210fb4016c87d2425d58344cd6b19e81c133a",
    "yoochoose-clicks-100k_train_valid.txt": "sha256:14fca72e690c19b0da391059b7cf2c1b611cddbd1248ce93578a039ddb26ea69",
}


# -- low-level parsing -----------------------------------------------------------------------------
INT64_MAX = np.iinfo(np.int64).max

def _to_int64(s: str) -> int:
    """``int(s)`` as numpy's reader accepts it: ASCII digits with an optional sign, within int64."""
    text = s.strip()
    body = text[1:] if text[:1] in "+-" else text
    if not (body.isascii() and body.isdigit()):
        raise ValueError(s)
    value = int(text)
    if not -INT64_MAX - 1 <= value <= INT64_MAX:
        raise OverflowError(s)
    return value


def _to_finite(s: str) -> float:
    value = float(s)
    if not np.isfinite(value) or "_" in s or not s.isascii():
        raise ValueError(s)
    return value


def _to_timestamp(s: str) -> np.datetime64:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        value = np.datetime64(s.strip().rstrip("Z"), "ms")
    if np.isnat(value):
        raise ValueError(s)
    return value


def _converter(dtype: str) -> Callable[[str], Any]:
    if dtype.startswith("i"):
        return _to_int64
    if dtype.startswith("f"):
        return _to_finite
    if dtype.startswith("M8"):
        return _to_timestamp
    width = int(dtype[1:]) if dtype[1:].isdigit() else 1 << 30

    def text(s: str) -> str:
        if len(s) >= width:
            raise ValueError(f"longer than {width - 1} characters")
        return s

    return text


def _kind(dtype: str) -> str:
    if dtype[0] in "ifM":
        return {"i": "integer (int64)", "f": "finite number", "M": "ISO timestamp"}[dtype[0]]
    return f"value (at most {int(dtype[1:]) - 1} characters)"


def _describe_line(line: str, where: str, delimiter: str, columns: Sequence[tuple[int, str]],
                   expected: str) -> DataError:
    """Why one line does not parse (error path only)."""
    text = line.rstrip("\r\n")
    need = max(c for c, _ in columns) + 1
    fields = text.split(delimiter)
    if len(fields) < need:
        return DataError(f"{where}: {len(fields)} field(s) {text[:80]!r}; expected {expected}")
    for col, dtype in columns:
        value = fields[col].strip().strip('"')
        try:
            _converter(dtype)(value)
        except (ValueError, TypeError, OverflowError):
            return DataError(f"{where}: field {col + 1} is {value[:80]!r}, not a valid {_kind(dtype)}; "
                             f"expected {expected}")
    return DataError(f"{where}: {text[:80]!r} could not be parsed; expected {expected}")


def _parse_chunk(
    lines: Sequence[str], path: Path, delimiter: str, columns: Sequence[tuple[int, str]], expected: str,
) -> list[np.ndarray]:
    """One chunk of lines → typed columns (``ValueError``/:class:`DataError` for a bad chunk)."""
    order = sorted(range(len(columns)), key=lambda k: columns[k][0])
    usecols = [columns[k][0] for k in order]
    load_types = [("U40" if dt.startswith("M8") else dt) for _, dt in columns]
    dtype = [(f"c{k}", load_types[k]) for k in order]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "input contained no data"
        table = np.loadtxt(lines, delimiter=delimiter, dtype=dtype, usecols=usecols, comments=None,
                           quotechar='"', ndmin=1)
    out = []
    for k, (_, dt) in enumerate(columns):
        values = table[f"c{k}"]
        if dt.startswith("M8"):
            values = _iso_to_seconds(values, path, expected)
        elif dt.startswith("f") and not np.isfinite(values).all():
            raise ValueError("non-finite number")
        elif load_types[k].startswith("U") and len(values) and np.char.str_len(values).max() >= int(load_types[k][1:]):
            raise ValueError("value as long as its column width: it may have been cut")  # numpy truncates
        out.append(values)
    return out


def _first_bad_line(lines: Sequence[str], parse: Callable[[Sequence[str]], Any]) -> int:
    """Error path only: index of the first line whose prefix no longer parses (bisection, ~log2(n) parses)."""
    lo, hi = 0, len(lines)  # lines[:lo] parse, lines[:hi] do not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            parse(lines[:mid])
            lo = mid
        except (ValueError, DataError):
            hi = mid
    return hi - 1


def _decode_error(path: Path) -> DataError:
    """The line of the first byte that is not UTF-8 (error path: the file is read again as bytes)."""
    return utf8_error(path, path.read_bytes())


def read_text(path: Path) -> str:
    """A whole file as UTF-8 text (strict, byte-order mark dropped); bad bytes → :class:`DataError` with the line."""
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise _decode_error(path) from None


def row_line(path: Path, row: int, skip_lines: int = 0, text: str | None = None) -> str:
    """Error path only: ``"<file>, line <n>"`` of the ``row``-th (0-based) non-blank data line."""
    source = io.StringIO(text) if text is not None else open_text(path)
    with source as f:
        for _ in range(skip_lines):
            f.readline()
        seen = -1
        for n, line in enumerate(f, start=skip_lines + 1):
            if line.strip():
                seen += 1
                if seen == row:
                    return f"{path}, line {n}"
    return str(path)


def open_text(path: Path) -> io.TextIOBase:
    """A text file as UTF-8 (strict; a leading byte-order mark dropped; universal newlines)."""
    return open(path, encoding="utf-8-sig", errors="strict", newline=None)  # noqa: SIM115


def read_columns(
    path: str | os.PathLike,
    columns: Sequence[tuple[int, str]],
    delimiter: str,
    expected: str,
    skip_lines: int = 0,
    text: str | None = None,
) -> list[np.ndarray]:
    """Typed columns of a delimited text file, read in chunks of :data:`CHUNK_ROWS` rows by numpy's C reader.

    ``columns``: ``(0-based column index, dtype)`` with dtype ``"i8"``, ``"f8"``, ``"U<n>"`` or ``"M8[ms]"``
    (ISO timestamps, a trailing ``Z`` allowed; returned as float64 unix seconds). ``skip_lines`` header lines
    are skipped; blank (or whitespace-only) lines are ignored. ``text`` replaces the file's content (already
    decoded). The file must be UTF-8 (a byte-order mark is dropped); numbers must be finite, integers fit
    int64 and strings be shorter than their width. A chunk that does not parse is bisected to name its
    first bad line.
    """
    path = Path(path)
    if text is None and not path.is_file():
        raise DataError(f"{path}: file not found" + (" (it is a folder)" if path.is_dir() else ""))
    usecols = [c for c, _ in columns]
    if len(set(usecols)) != len(usecols):
        raise ConfigError(f"{path}: the same column is selected twice ({sorted(usecols)})")

    def parse(lines: Sequence[str]) -> list[np.ndarray]:
        return _parse_chunk(lines, path, delimiter, columns, expected)

    chunks: list[list[np.ndarray]] = [[] for _ in columns]
    handle = io.StringIO(text.removeprefix("\ufeff")) if text is not None else open_text(path)
    try:
        with handle as f:
            for _ in range(skip_lines):
                f.readline()
            line_no = skip_lines + 1
            while True:
                lines = list(itertools.islice(f, CHUNK_ROWS))
                if not lines:
                    break
                try:
                    table = parse(lines)
                except (ValueError, DataError):
                    # whitespace-only lines stop numpy's reader (empty ones do not): drop them, then retry
                    kept = [k for k, ln in enumerate(lines) if ln.strip()]
                    try:
                        if len(kept) == len(lines):
                            raise
                        table = parse([lines[k] for k in kept])
                    except (ValueError, DataError):
                        clean = [lines[k] for k in kept]
                        bad = _first_bad_line(clean, parse)
                        where = f"{path}, line {line_no + kept[bad]}"
                        raise _describe_line(clean[bad], where, delimiter, columns, expected) from None
                for k, values in enumerate(table):
                    chunks[k].append(values)
                line_no += len(lines)
                if len(lines) < CHUNK_ROWS:
                    break
    except UnicodeDecodeError:
        raise _decode_error(path) from None
    empty = [np.zeros(0, np.float64 if dt.startswith("M8") else dt) for _, dt in columns]
    return [np.concatenate(c) if c else e for c, e in zip(chunks, empty, strict=True)]


def _iso_to_seconds(values: np.ndarray, path: Path, expected: str,
                    where: Callable[[int], str] | None = None) -> np.ndarray:
    """ISO timestamps (strings) → float64 unix seconds; ``where(row)`` names the line of a bad value."""
    where = where or (lambda row: str(path))
    stripped = np.char.rstrip(np.char.strip(values), "Z")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # numpy: "no explicit representation of timezones"
            stamps = stripped.astype("datetime64[ms]")
    except ValueError:
        for r, v in enumerate(stripped.tolist()):  # error path: find the bad value
            try:
                _to_timestamp(v)
            except ValueError:
                raise DataError(f"{where(r)}: {v!r} is not an ISO timestamp; expected {expected}") from None
        raise
    nat = np.isnat(stamps)
    if nat.any():
        r = int(np.argmax(nat))
        raise DataError(f"{where(r)}: {str(values[r])!r} is not an ISO timestamp; expected {expected}")
    return stamps.astype(np.int64).astype(np.float64) / 1000.0


def header_fields(path: Path, delimiter: str) -> list[str]:
    if not path.is_file():
        raise DataError(f"{path}: file not found" + (" (it is a folder)" if path.is_dir() else ""))
    with open(path, "rb") as f:
        first_bytes = f.readline()
    try:
        first = first_bytes.decode("utf-8-sig").rstrip("\r\n")
    except UnicodeDecodeError:
        raise DataError(f"{path}, line 1: the header is not valid UTF-8 text") from None
    return [h.strip().strip('"').lstrip("\ufeff") for h in first.split(delimiter)]


def column_index(header: list[str], name: str | int, path: Path, key: str) -> int:
    if isinstance(name, int):
        if not 0 <= name < len(header):
            raise ConfigError(f"{key}={name}: {path} has {len(header)} columns")
        return name
    if name not in header:
        raise DataError(f"{path}, line 1: no column {name!r} in the header {header}; set {key} to one of them")
    return header.index(name)


def convert_times(values: np.ndarray, time_format: str, path: Path, expected: str,
                  where: Callable[[int], str] | None = None) -> np.ndarray:
    """Strings of a time column → float64 seconds; ``where(row)`` names the line of a bad value."""
    if time_format not in TIME_FORMATS:
        raise ConfigError(f"data.source.time_format={time_format!r}; expected one of {TIME_FORMATS}")
    where = where or (lambda row: str(path))
    if time_format in ("iso", "date"):
        return _iso_to_seconds(values, path, expected, where)
    try:
        seconds = values.astype(np.float64)
    except ValueError:
        r = next(r for r, v in enumerate(values.tolist()) if not _is_float(v))
        raise DataError(f"{where(r)}: time {str(values[r])!r} is not a number; expected {expected}") from None
    finite = np.isfinite(seconds)
    if not finite.all():
        r = int(np.argmin(finite))
        raise DataError(f"{where(r)}: time {str(values[r])!r} is not a finite number; expected {expected}")
    return seconds / 1000.0 if time_format == "unix_ms" else seconds


def _is_float(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


def _preprocessing(options: dict[str, Any] | SessionPreprocessing | None) -> SessionPreprocessing:
    if isinstance(options, SessionPreprocessing):
        return options
    try:
        return SessionPreprocessing(**dict(options or {}))
    except TypeError as err:
        raise ConfigError(f"data.source.preprocessing: {err}") from err


def _resolve_file(path: str | os.PathLike, default_names: Sequence[str], what: str, hint: str) -> Path:
    """``path`` itself if it is a file, else the first of ``default_names`` (glob patterns) in the folder."""
    p = Path(path)
    if p.is_file():
        return p
    if p.is_dir():
        for pattern in default_names:
            found = sorted(p.glob(pattern))
            if found:
                return found[0]
    raise DataError(f"{p}: no {what} found (looked for {list(default_names)}). {hint}")


# -- sources ---------------------------------------------------------------------------------------
def _required_path(path: str | os.PathLike | None, name: str, help_text: str) -> Path:
    if path in (None, ""):
        raise ConfigError(f"data={name} has no download; set data.path to a local copy ({help_text})")
    return Path(path).expanduser()


class PreparedSessionSource:
    """``data=rsc15``: GRU4Rec "prepared" TSV files with header ``SessionId ItemId Time`` (integer ids,
    time in unix seconds), already preprocessed and split (train / optional valid / test).

    ``path``: the folder holding the files (``data.path``). Without it, the public 100k-click RSC15 sample
    (the default file names, ``train_full`` → ``test``) is downloaded into ``download_dir/<name>`` with pinned
    sha256 checksums. Test (and valid) events whose item is not in train are dropped.
    """

    def __init__(
        self,
        path: str | None = None,
        download_dir: str | None = None,
        train: str = "yoochoose-clicks-100k_train_full.txt",
        test: str = "yoochoose-clicks-100k_test.txt",
        valid: str | None = None,
        name: str = "rsc15",
        session_key: str = "SessionId",
        item_key: str = "ItemId",
        time_key: str = "Time",
        delimiter: str = "\t",
    ) -> None:
        self.path = Path(path).expanduser() if path not in (None, "") else None
        self.download_dir = Path(download_dir) if download_dir else None
        self.files = {"train": train, "valid": valid, "test": test}
        self.name = name
        self.keys = (session_key, item_key, time_key)
        self.delimiter = delimiter

    def _file(self, split: str) -> Path | None:
        fname = self.files[split]
        if fname is None:
            return None
        if self.path is not None:
            p = self.path / fname if self.path.is_dir() or not self.path.exists() else self.path.parent / fname
            if not p.is_file():
                raise DataError(
                    f"data.path={self.path}: missing {fname}; expected a folder with the GRU4Rec prepared files "
                    f"(e.g. data.path=../shared/datasets/rsc15_100k) or data.source.{split}=<file name>"
                )
            return p
        if fname not in RSC15_FILES:
            raise ConfigError(f"data.source.{split}={fname!r} has no download; set data.path to the folder holding it")
        if self.download_dir is None:
            raise ConfigError(f"data={self.name}: set data.path (a local copy) or data.source.download_dir")
        from recsys.data.download import download

        return download(RSC15_BASE_URL + fname, self.download_dir / self.name / fname, RSC15_FILES[fname])

    def fingerprint(self) -> dict[str, Any]:
        files = {}
        for split in ("train", "valid", "test"):
            p = self._file(split)
            files[split] = None if p is None else file_identity(p)
        return {"source": "prepared_sessions", "version": 1, "name": self.name, "files": files, "keys": self.keys,
                "delimiter": self.delimiter}

    def read(self, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        p = self._file(split)
        assert p is not None
        header = header_fields(p, self.delimiter)
        expected = f"{self.delimiter!r}-separated '{' '.join(self.keys)}' rows (integer ids, time in seconds)"
        idx = [column_index(header, k, p, f"data.source.{n}") for k, n in
               zip(self.keys, ("session_key", "item_key", "time_key"), strict=True)]
        s, i, t = read_columns(p, [(idx[0], "i8"), (idx[1], "i8"), (idx[2], "f8")], self.delimiter, expected,
                               skip_lines=1)
        if len(i) == 0:
            raise DataError(f"{p}: no events; expected {expected}")
        return s, i, t

    def build(self) -> SessionSplits:
        names = [n for n in ("train", "valid", "test") if self.files[n] is not None]
        parts = split_codes([self.read(n) for n in names], [str(self._file(n)) for n in names])
        ev = dict(zip(names, parts, strict=True))
        splits = assemble_splits(ev["train"], ev["test"], ev.get("valid"))
        splits.meta.update({"source": self.name, "files": str(self.files)})
        return splits


class YoochooseClicksSource:
    """``data=yoochoose_raw``: the raw RecSys Challenge 2015 ``yoochoose-clicks.dat`` (no header;
    ``session,ISO timestamp,item,category``), preprocessed the GRU4Rec way (``preprocessing``).

    The file is not redistributed: get it from the challenge's host and set ``data.path`` to it or its folder.
    """

    name = "yoochoose_raw"
    expected = "'session,timestamp,item,category' rows (integer session and item, ISO timestamp)"

    def __init__(self, path: str | None = None, preprocessing: dict[str, Any] | None = None,
                 download_dir: str | None = None) -> None:
        self.path = _required_path(path, self.name, "yoochoose-clicks.dat of the RecSys Challenge 2015, or its folder")
        self.preprocessing = _preprocessing(preprocessing)

    def _file(self) -> Path:
        return _resolve_file(self.path, ["yoochoose-clicks.dat"], "yoochoose-clicks.dat",
                             "Download the RecSys Challenge 2015 data and set data.path=/folder/or/yoochoose-clicks.dat")

    def fingerprint(self) -> dict[str, Any]:
        return {"source": self.name, "version": 1, "file": file_identity(self._file()),
                "preprocessing": self.preprocessing.as_dict()}

    def build(self) -> SessionSplits:
        p = self._file()
        s, t, i = read_columns(p, [(0, "i8"), (1, "M8[ms]"), (2, "i8")], ",", self.expected)
        if len(i) == 0:
            raise DataError(f"{p}: no events; expected {self.expected}")
        splits = preprocess_sessions(SessionEvents.from_ids(s, i, t, str(p)), self.preprocessing)
        splits.meta["source"] = self.name
        return splits


class DigineticaSource:
    """``data=diginetica``: CIKM Cup 2016 ``train-item-views.csv`` (``;``-separated, header
    ``session_id;user_id;item_id;timeframe;eventdate``). Event time = ``eventdate`` (a day) + ``timeframe``
    (ms since the session start); then the GRU4Rec preprocessing with a time split in days.

    ``path``: the file, or a folder holding ``train-item-views.csv`` (or SR-GNN's ``sample_train-item-views.csv``).
    """

    name = "diginetica"
    expected = "';'-separated 'session_id;user_id;item_id;timeframe;eventdate' rows"

    def __init__(self, path: str | None = None, preprocessing: dict[str, Any] | None = None,
                 download_dir: str | None = None) -> None:
        self.path = _required_path(path, self.name, "train-item-views.csv of the CIKM Cup 2016, or its folder")
        self.preprocessing = _preprocessing(preprocessing)

    def _file(self) -> Path:
        return _resolve_file(self.path, ["train-item-views.csv", "*train-item-views.csv"], "train-item-views.csv",
                             "Download the CIKM Cup 2016 (DIGINETICA) data and set data.path=/folder/or/file")

    def fingerprint(self) -> dict[str, Any]:
        return {"source": self.name, "version": 1, "file": file_identity(self._file()),
                "preprocessing": self.preprocessing.as_dict()}

    def build(self) -> SessionSplits:
        p = self._file()
        header = header_fields(p, ";")
        names = ("session_id", "item_id", "timeframe", "eventdate")
        idx = [column_index(header, n, p, f"the {n} column") for n in names]
        s, i, frame, date = read_columns(p, [(idx[0], "i8"), (idx[1], "i8"), (idx[2], "f8"), (idx[3], "M8[ms]")],
                                         ";", self.expected, skip_lines=1)
        if len(i) == 0:
            raise DataError(f"{p}: no events; expected {self.expected}")
        times = date + frame / 1000.0
        splits = preprocess_sessions(SessionEvents.from_ids(s, i, times, str(p)), self.preprocessing)
        splits.meta["source"] = self.name
        return splits


class CsvSessionSource:
    """``data=csv_sessions``: any delimited file with a column mapping.

    Either a session column, or (``session_column: null``) a user column whose time-ordered events are cut
    into sessions after ``session_gap`` seconds of inactivity. Columns are header names (``header: true``)
    or 0-based indices. ``time_format``: ``unix`` (seconds), ``unix_ms``, ``iso`` (``2014-04-07T10:51:09.277Z``)
    or ``date`` (``2016-05-09``). Then the GRU4Rec preprocessing (``preprocessing``).
    """

    def __init__(
        self,
        path: str | None = None,
        item_column: str | int = "item_id",
        time_column: str | int = "timestamp",
        session_column: str | int | None = "session_id",
        user_column: str | int | None = None,
        session_gap: float | None = None,
        delimiter: str = ",",
        header: bool = True,
        time_format: str = "unix",
        preprocessing: dict[str, Any] | None = None,
        name: str = "csv_sessions",
        download_dir: str | None = None,
    ) -> None:
        if time_format not in TIME_FORMATS:
            raise ConfigError(f"data.source.time_format={time_format!r}; expected one of {TIME_FORMATS}")
        if session_column is None and (user_column is None or session_gap is None):
            raise ConfigError(
                "data.source: give session_column, or user_column and session_gap (seconds of inactivity "
                "that end a session)"
            )
        if not delimiter or len(delimiter) > 2:
            raise ConfigError(f"data.source.delimiter must be one or two characters, got {delimiter!r}")
        self.path = _required_path(path, name, "a delimited file with session (or user), item and time columns")
        self.columns = {"session": session_column, "user": user_column, "item": item_column, "time": time_column}
        self.session_gap = session_gap
        self.delimiter = delimiter
        self.header = header
        self.time_format = time_format
        self.preprocessing = _preprocessing(preprocessing)
        self.name = name

    def fingerprint(self) -> dict[str, Any]:
        if not self.path.is_file():
            raise DataError(f"data.path={self.path}: no such file; expected a delimited file")
        return {"source": "csv_sessions", "version": 1, "file": file_identity(self.path), "columns": self.columns,
                "session_gap": self.session_gap, "delimiter": self.delimiter, "header": self.header,
                "time_format": self.time_format, "preprocessing": self.preprocessing.as_dict()}

    def read_events(self) -> SessionEvents:
        p = self.path
        text = None
        delimiter = self.delimiter
        if len(delimiter) == 2:  # numpy's reader splits on one character
            text = read_text(p).replace(delimiter, "\x1f") if p.is_file() else None
            delimiter = "\x1f"
        header = header_fields(p, self.delimiter) if self.header else None
        keys = ["session" if self.columns["session"] is not None else "user", "item", "time"]
        idx = []
        for key in keys:
            col = self.columns[key]
            if header is None:
                if not isinstance(col, int):
                    raise ConfigError(f"data.source.{key}_column={col!r}: without a header, columns are 0-based indices")
                idx.append(col)
            else:
                idx.append(column_index(header, col, p, f"data.source.{key}_column"))
        expected = f"{self.delimiter!r}-separated rows with {keys[0]}, item and time ({self.time_format}) columns"
        who, items, times = read_columns(p, [(idx[0], "U64"), (idx[1], "U64"), (idx[2], "U40")], delimiter, expected,
                                         skip_lines=1 if self.header else 0, text=text)
        if len(items) == 0:
            raise DataError(f"{p}: no events; expected {expected}")
        skip = 1 if self.header else 0
        seconds = convert_times(times, self.time_format, p, expected, lambda r: row_line(p, r, skip, text))
        if keys[0] == "user":
            who = sessions_from_user_events(who, seconds, float(self.session_gap))
        return SessionEvents.from_ids(who, items, seconds, str(p))

    def build(self) -> SessionSplits:
        splits = preprocess_sessions(self.read_events(), self.preprocessing)
        splits.meta["source"] = self.name
        return splits


class MovieLensSessionSource:
    """``data=ml_1m_sessions``: MovieLens-1M ratings (read, and downloaded when ``data.path`` is not set, by
    the graph data's :class:`~recsys.data.sources.movielens.MovieLensSource`) cut into sessions: a user's
    ratings in time order start a new session after ``session_gap`` seconds without a rating. Then the GRU4Rec
    preprocessing, so GRU4Rec runs on user–item data. ``rating_threshold`` keeps ratings ``>=`` it (null: all).
    """

    name = "ml_1m_sessions"

    def __init__(self, path: str | None = None, download_dir: str | None = None, variant: str = "1m",
                 session_gap: float = 3600.0, rating_threshold: float | None = None,
                 preprocessing: dict[str, Any] | None = None) -> None:
        from recsys.data.sources.movielens import MovieLensSource

        self.reader = MovieLensSource(variant=variant, path=path, download_dir=download_dir)
        self.variant = variant
        self.session_gap = float(session_gap)
        if not self.session_gap > 0:
            raise ConfigError(f"data.source.session_gap must be > 0 seconds, got {session_gap}")
        self.rating_threshold = rating_threshold
        self.preprocessing = _preprocessing(preprocessing)
        self.name = f"ml_{variant.replace('-', '_')}_sessions"

    def fingerprint(self) -> dict[str, Any]:
        files = self.reader.files()
        return {"source": self.name, "version": 1, "session_gap": self.session_gap,
                "rating_threshold": self.rating_threshold, "preprocessing": self.preprocessing.as_dict(),
                "files": {k: file_identity(p) for k, p in sorted(files.items())}}

    def build(self) -> SessionSplits:
        inter = self.reader.read(self.reader.files())
        keep = np.ones(len(inter.users), dtype=bool)
        if self.rating_threshold is not None and inter.ratings is not None:
            keep = inter.ratings >= self.rating_threshold
        users, items, times = inter.users[keep], inter.item_ids[inter.items[keep]], inter.times[keep]
        sessions = sessions_from_user_events(users, times, self.session_gap)
        splits = preprocess_sessions(SessionEvents.from_ids(sessions, items, times, inter.origin), self.preprocessing)
        splits.meta["source"] = self.name
        return splits


__all__ = [
    "DAY", "CsvSessionSource", "DigineticaSource", "MovieLensSessionSource", "PreparedSessionSource",
    "YoochooseClicksSource", "read_columns",
]
