"""The one parsing layer of the file readers (graph and session): delimited text and Parquet files.

* :func:`read_table` / :func:`iter_tables`: selected columns of a CSV/TSV/``;``/``::``-separated file (pandas' C
  parser) or a Parquet file (pyarrow) as a :class:`Table` that knows the 1-based line of every row. Files are
  strict UTF-8 (a byte-order mark is dropped, CRLF accepted); blank or whitespace-only lines are skipped; fields
  beyond the selected columns are ignored.
* Typed columns, each bad value reported with its line: :func:`id_column` (labels, integers when every value is
  one), :func:`label_column` (text as written), :func:`integer_column`, :func:`numeric_column` and
  :func:`time_column` (the one time conversion: ``unix``, ``unix_ms``, ``iso``, ``date`` or ``auto``);
  :func:`read_columns` reads and converts in chunks of rows.
* The fast path of whitespace-separated integer files (the split folders' ``user item item …`` lines, MovieLens'
  ``u.data``/``ratings.dat``): :func:`parse_int_tokens` and :func:`parse_columns`, vectorised over the bytes.

Every bad input raises ``DataError("<file>, line <n>: <what>; expected <format>")`` (``row <n>`` for Parquet).
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recsys.errors import ConfigError, DataError

FORMATS = ("auto", "csv", "tsv", "parquet")
TIME_FORMATS = ("unix", "unix_ms", "iso", "date")
CHUNK_ROWS = 2_000_000  # rows converted at a time by read_columns (bounds the memory of text columns)
SMALL_FILE = 64 << 20  # bytes: a file up to this size is read in one chunk
MAX_LABEL = 63  # characters of a text label (session and item ids of session files)
MAX_DIGITS = 19  # int64 max has 19 digits (checked for overflow)
INT64_MAX = int(np.iinfo(np.int64).max)
UTF8_BOM = b"\xef\xbb\xbf"
_ALT_SEP = "\x1f"  # a multi-character delimiter is replaced by this byte for pandas' C parser


def _pandas():
    try:
        import pandas as pd
    except ImportError as err:  # pragma: no cover - pandas is a dependency
        raise ConfigError("reading tabular data needs pandas (pip install pandas)") from err
    return pd


# -- bytes and UTF-8 ---------------------------------------------------------------------------------
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


def _line_texts(source: Path | bytes, wanted: Sequence[int]) -> dict[int, str]:
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


# -- tables ------------------------------------------------------------------------------------------
class Table:
    """Rows of a file (or of a chunk of it): ``frame`` holds the selected columns (:meth:`column` gets one by
    the key asked for), ``lines`` the 1-based line of every row (``None`` for Parquet, whose rows are named
    ``row N``)."""

    def __init__(self, frame: Any, path: Path, lines: np.ndarray | None, *, sep: str | None = None,
                 positions: dict[Any, int] | None = None, source: Path | bytes | None = None,
                 expected: str = "delimited rows") -> None:
        self.frame = frame
        self.path = path
        self.lines = lines
        self.sep = sep
        self.positions = positions or {}
        self.source = source
        self.expected = expected

    def where(self, row: int) -> str:
        if self.lines is None:
            return f"{self.path}, row {row + 1}"
        return f"{self.path}, line {int(self.lines[row])}"

    def __len__(self) -> int:
        return len(self.frame)

    def column(self, col: Any) -> Any:
        """The series of a requested column (delimited frames are keyed by field position)."""
        return self.frame[self.positions[col]] if self.positions else self.frame[col]

    def line_text(self, row: int) -> str | None:
        """Error path: the text of the row's line (``None`` for Parquet)."""
        if self.lines is None or self.source is None:
            return None
        line = int(self.lines[row])
        return _line_texts(self.source, [line]).get(line)

    def text(self, col: Any) -> Any:
        """Error path: a column as the text written in the file (its lines parsed again, as strings)."""
        pd = _pandas()
        series = self.column(col)
        if self.lines is None or self.source is None or col not in self.positions or not len(self.lines):
            return series.astype(str)
        texts = _line_texts(self.source, self.lines)
        body = "\n".join(texts.get(int(n), "") for n in self.lines)
        sep = self.sep or ","
        if len(sep) > 1:
            body, sep = body.replace(sep, _ALT_SEP), _ALT_SEP
        pos = self.positions[col]
        again = pd.read_csv(io.StringIO(body), sep=sep, header=None, names=list(range(pos + 1)), usecols=[pos],
                            dtype=str, keep_default_na=False, index_col=False, skip_blank_lines=False,
                            quoting=csv.QUOTE_MINIMAL, engine="c")[pos]
        return again if len(again) == len(series) else series.astype(str)


def detect_format(path: Path, fmt: str) -> str:
    if fmt not in FORMATS:
        raise ConfigError(f"data.source.format={fmt!r} is not one of {FORMATS}")
    if fmt != "auto":
        return fmt
    suffix = path.suffix.lower()
    return {".parquet": "parquet", ".pq": "parquet", ".tsv": "tsv", ".tab": "tsv"}.get(suffix, "csv")


def read_table(path: str | os.PathLike, columns: Sequence[str | int], **options: Any) -> Table:
    """All rows of a delimited or Parquet file at once (see :func:`iter_tables` for the options)."""
    (table,) = iter_tables(path, columns, chunk_rows=None, **options)
    return table


def iter_tables(
    path: str | os.PathLike,
    columns: Sequence[str | int],
    *,
    fmt: str = "auto",
    sep: str | None = None,
    header: bool = True,
    names: list[str] | None = None,
    skip_lines: int = 0,
    dtype: dict[str | int, Any] | None = None,
    source: bytes | None = None,
    na_values: Sequence[str] | None = None,
    expected: str | None = None,
    column_hint: str | dict[str | int, str] = "data.source.user_col/item_col/rating_col/time_col",
    chunk_rows: int | None = CHUNK_ROWS,
) -> Iterator[Table]:
    """The given columns of a delimited (or Parquet) file, as tables of at most ``chunk_rows`` rows (``None``:
    one table).

    ``columns`` are header names (``header=True``), names from ``names`` (``header=False``) or 0-based field
    positions. ``sep`` may have two characters (``::``). ``skip_lines`` lines precede the header (or the data).
    ``na_values``: the texts read as missing (``None``: pandas' defaults such as ``NA``; sessions use ``("",)``).
    ``source`` (the file's bytes) replaces reading ``path``, which errors then name. ``expected`` describes the
    rows in messages; ``column_hint`` names the config key(s) that select the columns.
    """
    pd = _pandas()
    path = Path(path)
    if source is None and not path.is_file():
        raise DataError(f"{path}: file not found" + (" (it is a folder)" if path.is_dir() else ""))
    fmt = detect_format(path, fmt)
    columns = list(dict.fromkeys(columns))
    if fmt == "parquet":
        if not header or names:
            raise ConfigError("data.source.header=false/names do not apply to Parquet files (columns are named)")
        yield _read_parquet(path, columns, column_hint)
        return
    sep = sep if sep is not None else ("\t" if fmt == "tsv" else ",")
    if not sep or len(sep) > 2 or "\n" in sep or "\r" in sep:
        raise ConfigError(f"data.source delimiter {sep!r}: expected one or two characters (not a line break)")
    if header and names:
        raise ConfigError("data.source.names replaces the header: set header=false with names")
    expected = expected or f"{sep!r}-separated rows"
    check_utf8(source if source is not None else path, path)
    text_source: Path | bytes = source if source is not None else path
    if len(sep) > 1:  # pandas' C parser splits on one character
        source = (source if source is not None else path.read_bytes()).replace(sep.encode(), _ALT_SEP.encode())
    parse_sep = _ALT_SEP if len(sep) > 1 else sep

    def src() -> Any:
        return io.BytesIO(source) if source is not None else path

    options: dict[str, Any] = dict(sep=parse_sep, quoting=csv.QUOTE_MINIMAL, engine="c", index_col=False,
                                   skip_blank_lines=False, dtype_backend="numpy_nullable")
    if na_values is not None:
        options |= dict(keep_default_na=False, na_values=list(na_values))
    first_line = skip_lines + 1  # of the first data row
    available: list[Any] | None = list(names) if names else None
    if header:
        available = _header(path, text_source, skip_lines, sep, expected)
        first_line += 1
    positions = _positions(path, columns, available, header, first_line - 1, column_hint, expected)
    width = max(positions.values()) + 1
    dtypes = {positions[c]: t for c, t in (dtype or {}).items() if c in positions}
    size = len(source) if source is not None else path.stat().st_size
    if chunk_rows and size <= SMALL_FILE:
        chunk_rows = None  # one read (a chunked reader costs a little per file)
    offset = 0

    def short_rows() -> DataError:
        """pandas found no row with ``width`` fields (from the current chunk on): the first such line."""
        return _short_line_error(path, text_source, first_line + offset, sep, width, expected)

    with _pandas_errors(path, expected, short_rows):
        # the lines before the data are skipped as a "header" replaced by names (much faster than skiprows)
        reader = pd.read_csv(src(), header=first_line - 2 if first_line > 1 else None, names=list(range(width)),
                             usecols=sorted(set(positions.values())), dtype=dtypes or None, chunksize=chunk_rows,
                             **options)
    chunks = iter(reader if chunk_rows else [reader])
    try:
        while True:
            with _pandas_errors(path, expected, short_rows):
                chunk = next(chunks, None)
            if chunk is None:
                return
            lines = np.arange(offset, offset + len(chunk), dtype=np.int64) + first_line
            offset += len(chunk)
            table = Table(chunk, path, lines, sep=sep, positions=positions, source=text_source, expected=expected)
            yield _drop_blank_rows(table)
    finally:
        if chunk_rows:
            reader.close()


@contextlib.contextmanager
def _pandas_errors(path: Path, expected: str, short_rows: Any = None) -> Iterator[None]:
    """pandas' failures while parsing, as :class:`DataError` naming the file (and the line when pandas does);
    ``short_rows()`` is the error when no row has all the fields the selected columns need."""
    pd = _pandas()
    try:
        yield
    except (ValueError, TypeError, OverflowError) as err:
        if isinstance(err, pd.errors.EmptyDataError):
            raise DataError(f"{path}: empty file; expected {expected}") from None
        if short_rows is not None and "Too many columns specified" in str(err):
            raise short_rows() from None
        if isinstance(err, pd.errors.ParserError):
            raise _parser_error(path, err, expected) from None
        raise DataError(f"{path}: {err}; expected {expected}") from err


def _header(path: Path, source: Path | bytes, skip_lines: int, sep: str, expected: str) -> list[str]:
    """The header's field names (stripped) on the line after ``skip_lines`` lines (csv quoting, as pandas)."""
    stream = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")  # noqa: SIM115
    with io.TextIOWrapper(stream, encoding="utf-8-sig", errors="strict", newline=None) as f:
        for _ in range(skip_lines):
            f.readline()
        line = f.readline().rstrip("\n")
    if not line.strip():
        raise DataError(f"{path}, line {skip_lines + 1}: empty header; expected a header and {expected}")
    if len(sep) > 1:
        line, sep = line.replace(sep, _ALT_SEP), _ALT_SEP
    return [f.strip() for f in next(csv.reader([line], delimiter=sep, quotechar='"'))]


def _short_line_error(path: Path, source: Path | bytes, start: int, sep: str, width: int, expected: str) -> DataError:
    """Error path: the first non-blank line from ``start`` on, which has fewer than ``width`` fields."""
    stream = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")  # noqa: SIM115
    with io.TextIOWrapper(stream, encoding="utf-8-sig", errors="replace", newline=None) as f:
        for n, line in enumerate(f, start=1):
            text = line.rstrip("\n")
            if n >= start and text.strip():
                k = len(text.split(sep))
                return DataError(f"{path}, line {n}: {k} field{'' if k == 1 else 's'} {text[:80]!r}; expected {expected}")
    return DataError(f"{path}: fewer than {width} fields on every line; expected {expected}")


def _parser_error(path: Path, err: Exception, expected: str) -> DataError:
    """pandas' tokenizer message with its line (pandas counts every physical line from 1, or rows from 0)."""
    reason = str(err).strip().removeprefix("Error tokenizing data. C error: ")
    m = re.search(r"\bline (\d+)", reason)
    line = int(m.group(1)) if m else None
    if line is None and (m := re.search(r"\brow (\d+)", reason)):
        line = int(m.group(1)) + 1
    where = f"{path}, line {line}" if line is not None else str(path)
    return DataError(f"{where}: {reason}; expected {expected}")


def _positions(path: Path, columns: list[Any], available: list[Any] | None, header: bool, header_line: int,
               hint: str | dict[Any, str], expected: str) -> dict[Any, int]:
    """0-based field of every requested column: a name in the header (or ``names``), else a position."""
    positions: dict[Any, int] = {}
    missing = []
    for c in columns:
        if available is not None and c in available:
            positions[c] = available.index(c)
        elif isinstance(c, int) and not isinstance(c, bool) and c >= 0 and (available is None or header):
            if available is not None and c >= len(available):
                key = (hint if isinstance(hint, str) else hint.get(c)) or "column"
                raise ConfigError(f"{key}={c}: {path} has {len(available)} columns (0-based indices)")
            positions[c] = c
        elif available is None:
            raise ConfigError(f"{path}: column {c!r}: without a header, columns are 0-based indices")
        else:
            missing.append(c)
    if missing:
        where = f"{path}, line {header_line}: " if header else f"{path}: "
        raise DataError(where + _no_columns(missing, "the header" if header else "data.source.names", available, hint,
                                            expected))
    if not positions:
        raise ConfigError(f"{path}: no column to read")
    return positions


def _no_columns(missing: list[Any], place: str, available: list[Any], hint: str | dict[Any, str],
                expected: str) -> str:
    """What an unknown column name reports: the names, where they were looked for, which config key to set."""
    keys = hint if isinstance(hint, str) else hint.get(missing[0], "")
    what = f"no column {missing[0]!r}" + "".join(f", nor {m!r}," for m in missing[1:])
    return f"{what} in {place} {available}; " + (f"set {keys} to one of them" if keys else f"expected {expected}")


def _has_missing(series: Any) -> bool:
    return bool(series.array.isna().any())


def _is_text(series: Any) -> bool:
    pd = _pandas()
    return series.dtype == object or isinstance(series.dtype, pd.StringDtype)


def _drop_blank_rows(table: Table) -> Table:
    """Rows of blank or whitespace-only lines removed (their selected fields are all missing or blank; the line
    itself is checked, so a line holding only unselected fields is not blank)."""
    frame = table.frame
    if not any(_has_missing(frame[col]) for col in frame.columns):
        return table
    na = frame.isna().to_numpy()
    rows = np.flatnonzero(na.any(axis=1))
    empty = na[rows]
    for j, col in enumerate(frame.columns):
        if not empty[:, j].all() and _is_text(frame[col]):
            values = frame[col].iloc[rows]
            empty[:, j] |= (values.str.strip() == "").fillna(True).to_numpy(dtype=bool)
    rows = rows[empty.all(axis=1)]
    if not len(rows):
        return table
    texts = _line_texts(table.source, table.lines[rows]) if table.source is not None else {}
    blank = rows[[not texts.get(int(n), "x").strip() for n in table.lines[rows]]]  # the blank lines only
    if not len(blank):
        return table
    keep = np.ones(len(frame), dtype=bool)
    keep[blank] = False
    table.frame = frame.loc[keep].reset_index(drop=True)
    table.lines = table.lines[keep]
    return table


def _read_parquet(path: Path, columns: list[Any], hint: str | dict[Any, str]) -> Table:
    pd = _pandas()
    try:
        import pyarrow.parquet as pq
    except ImportError as err:
        raise ConfigError("reading Parquet needs pyarrow: pip install 'recsys[parquet]' (or pyarrow)") from err
    try:
        available = pq.read_schema(path).names
    except Exception as err:  # noqa: BLE001 - any pyarrow failure is a bad file
        raise DataError(f"{path}: not a readable Parquet file ({err})") from err
    missing = [c for c in columns if c not in available]
    if missing:
        raise DataError(f"{path}: " + _no_columns(missing, "the schema", available, hint, "a Parquet file"))
    try:
        frame = pd.read_parquet(path, columns=columns)
    except Exception as err:  # noqa: BLE001 - a corrupt page/footer is a bad file
        raise DataError(f"{path}: not a readable Parquet file ({err})") from err
    return Table(frame, path, None, expected="a Parquet file")


# -- typed columns -----------------------------------------------------------------------------------
# A converter checks a whole column at once and reports its first bad row (missing, malformed or out of range).
def _fail(table: Table, row: int, what: str) -> DataError:
    err = DataError(f"{table.where(row)}: {what}")
    err.row = row  # read_columns reports the earliest bad row over all columns
    return err


def _missing(table: Table, row: int, col: Any, what: str, noun: str, expected: str) -> DataError:
    """A missing value: a short line (fewer fields than the column needs) or an empty field."""
    text = table.line_text(row)
    pos = table.positions.get(col)
    if text is not None and pos is not None and table.sep:
        n = len(text.split(table.sep)) if text.strip() else 0  # error path: quotes are not considered
        if n <= pos:
            return _fail(table, row, f"{n} field{'' if n == 1 else 's'} {text[:80]!r}; expected {table.expected}")
    return _fail(table, row, f"empty {what} {noun} in column {col!r}; expected {expected}")


def _first(*masks: np.ndarray) -> tuple[int, int] | None:
    """``(row, k)``: the first row flagged by any mask and the first mask flagging it (``None``: no row)."""
    flagged = np.logical_or.reduce(masks)
    if not flagged.any():
        return None
    row = int(np.argmax(flagged))
    return row, next(k for k, m in enumerate(masks) if m[row])


def _shown(value: Any) -> str:
    """A value in a message: quoted text, at most 80 characters."""
    return repr(str(value)[:80])


def _int_dtype(series: Any) -> np.dtype | None:
    """The numpy integer dtype of a column without missing values (``None`` otherwise)."""
    kind = getattr(series.dtype, "kind", "O")
    if kind not in "iu" or _has_missing(series):
        return None
    return np.dtype(getattr(series.dtype, "numpy_dtype", series.dtype))


def integer_column(table: Table, col: str | int, what: str, minimum: int | None = None, *, strict: bool = False,
                   expected: str | None = None) -> np.ndarray:
    """Integer ids (int64). ``strict``: each value written as an integer (``5.0`` and ``1e3`` are rejected,
    as session files require); otherwise integer-valued numbers are accepted. Ids below ``minimum``, beyond
    int64, empty or not integers raise :class:`DataError` with their line."""
    expected = expected or "an integer id"
    series = table.column(col)
    dtype = _int_dtype(series)
    if dtype is not None and dtype.kind == "i":
        ints = series.array.to_numpy(dtype=np.int64)
    else:
        ints = _parse_integers(table, col, what, strict, expected)
    if minimum is not None:
        low = np.flatnonzero(ints < minimum)
        if len(low):
            r = int(low[0])
            raise _fail(table, r, f"{'negative id' if ints[r] < 0 else 'id'} {int(ints[r])} in {what} column "
                                  f"{col!r}; expected ids >= {minimum}")
    return ints


def _parse_integers(table: Table, col: Any, what: str, strict: bool, expected: str) -> np.ndarray:
    """Integers of a column pandas did not read as int64 (uint64, floats, text, blanks): exact, from the digits."""
    pd = _pandas()
    series = table.column(col)
    n = len(series)
    missing = series.isna().to_numpy()
    kind = getattr(series.dtype, "kind", "O")
    ints = np.zeros(n, dtype=np.int64)
    todo = ~missing
    if kind == "u":  # an id beyond int64 made pandas choose uint64
        values = series.to_numpy(dtype=np.uint64, na_value=0)
        fine = ~missing & (values <= INT64_MAX)
        ints[fine] = values[fine].astype(np.int64)
        todo &= ~fine
    elif kind == "f" and not strict:
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
        # beyond 2**53 a float no longer holds every integer: such ids are read exactly from their digits
        fine = (values == np.floor(values)) & (np.abs(values) < 2.0**53)
        ints[fine] = values[fine]
        todo &= ~fine
    nonint = np.zeros(n, dtype=bool)
    beyond = np.zeros(n, dtype=bool)
    if todo.any():
        rows = np.flatnonzero(todo)
        text = (series if _is_text(series) else table.text(col)).astype(str).str.strip()
        sub = text.iloc[rows]
        digits = sub.str.fullmatch(r"[+-]?[0-9]+").fillna(False).to_numpy(dtype=bool)
        short = digits & (sub.str.len().to_numpy() <= 18)  # always within int64
        ints[rows[short]] = pd.to_numeric(sub[short]).to_numpy(dtype=np.int64)
        ok = digits.copy()
        if not strict:  # integer-valued numbers written otherwise (5.0, 1e3)
            others = np.flatnonzero(~digits)
            numbers = pd.to_numeric(sub.iloc[others], errors="coerce").to_numpy(dtype=np.float64)
            integral = (numbers == np.floor(numbers)) & (np.abs(numbers) < 2.0**53)
            ints[rows[others[integral]]] = numbers[integral]
            ok[others[integral]] = True
        nonint[rows[~ok]] = True
        long = np.flatnonzero(digits & ~short)  # 19 digits or more: exact Python ints, then the int64 range
        exact = sub.iloc[long].map(int).to_numpy(dtype=object)
        fits = np.array([-(2**63) <= v <= INT64_MAX for v in exact], dtype=bool)
        ints[rows[long[fits]]] = exact[fits].astype(np.int64)
        beyond[rows[long[~fits]]] = True
    first = _first(missing, nonint, beyond)
    if first is not None:
        r, k = first
        if k == 0:
            raise _missing(table, r, col, what, "id", expected)
        value = _shown(table.text(col).iloc[r] if not _is_text(series) else str(series.iloc[r]).strip())
        found = f"the non-integer value {value}" if k == 1 else f"the value {value}, beyond int64"
        raise _fail(table, r, f"{what} column {col!r} has {found}; expected {expected}")
    return ints


def numeric_column(table: Table, col: str | int, what: str, *, finite: bool = False,
                   expected: str | None = None) -> np.ndarray:
    """Numbers as float64; an empty or non-numeric value (and with ``finite``, ``inf``/``nan``) raises
    :class:`DataError` with its line."""
    pd = _pandas()
    expected = expected or ("a finite number" if finite else "a number")
    series = table.column(col)
    kind = getattr(series.dtype, "kind", "O")
    if kind in "iuf" and not _has_missing(series):
        values = series.array.to_numpy(dtype=np.float64)
        if not finite or np.isfinite(values).all():
            return values
        missing = nonnumeric = np.zeros(len(values), dtype=bool)
    else:
        missing = series.isna().to_numpy()
        values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        nonnumeric = np.isnan(values) & ~missing
        if finite:  # "nan" written out is not a number pandas reads as such: find it by its text
            nan_text = nonnumeric & series.astype(str).str.strip().str.lower().isin(["nan", "+nan", "-nan"]).to_numpy()
            nonnumeric &= ~nan_text
    nonfinite = ~np.isfinite(values) & ~missing & ~nonnumeric if finite else np.zeros(len(values), dtype=bool)
    first = _first(missing, nonnumeric, nonfinite)
    if first is None:
        return values
    r, k = first
    if k == 0:
        raise _missing(table, r, col, what, "value", expected)
    found = "non-numeric" if k == 1 else "non-finite"
    raise _fail(table, r, f"{what} column {col!r} has the {found} value {_shown(series.iloc[r])}; expected {expected}")


def _datetime_seconds(stamps: Any) -> np.ndarray:
    """UTC datetimes (a pandas series without NaT) → float64 unix seconds, at millisecond resolution."""
    naive = stamps.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy()
    return naive.astype("datetime64[ms]").astype(np.int64) / 1000.0


def time_column(table: Table, col: str | int, what: str = "time", *, time_format: str = "auto",
                expected: str | None = None) -> np.ndarray:
    """Timestamps as float64 unix seconds. ``time_format``: ``unix`` (seconds), ``unix_ms``, ``iso``
    (``2014-04-07T10:51:09.277Z``, an offset or ``Z`` converted to UTC), ``date`` (``2016-05-09``, any ISO
    form) or ``auto`` (numbers as they are, other values parsed as dates). Datetimes keep milliseconds."""
    pd = _pandas()
    if time_format not in (*TIME_FORMATS, "auto"):
        raise ConfigError(f"data.source.time_format={time_format!r}; expected one of {TIME_FORMATS}")
    if time_format in ("unix", "unix_ms"):
        unit = "seconds" if time_format == "unix" else "milliseconds"
        seconds = numeric_column(table, col, what, finite=True, expected=expected or f"a unix time in {unit}")
        return seconds / 1000.0 if time_format == "unix_ms" else seconds
    series = table.column(col)
    missing = series.isna().to_numpy()
    if time_format == "auto":
        values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        if not np.isnan(values).any():
            return values
        parsed = pd.to_datetime(series, errors="coerce", utc=True)
        kind = "a number or a date"
    else:
        text = (series if _is_text(series) else table.text(col)).astype(str).str.strip()
        parsed = pd.to_datetime(text, format="ISO8601", errors="coerce", utc=True)
        kind = "an ISO timestamp" if time_format == "iso" else "an ISO date"
    first = _first(missing, parsed.isna().to_numpy() & ~missing)
    if first is not None:
        r, k = first
        if k == 0:
            raise _missing(table, r, col, what, "value", expected or kind)
        raise _fail(table, r, f"{what} column {col!r} has the value {_shown(series.iloc[r])}, not {kind}; "
                              f"expected {expected or kind}")
    return _datetime_seconds(parsed)


def id_column(table: Table, col: str | int, what: str) -> np.ndarray:
    """Id labels: integers when pandas read the column as numbers, else stripped strings; an empty value raises
    :class:`DataError` with its line."""
    series = table.column(col)
    missing = np.flatnonzero(series.isna().to_numpy())
    if len(missing):
        raise _missing(table, int(missing[0]), col, what, "id", "an id")
    kind = getattr(series.dtype, "kind", "O")
    if kind in "iu":
        return series.to_numpy(dtype=_int_dtype(series))
    if kind == "f":
        # a float column (missing values or blank lines turned the ints into floats): exact below 2**53 only
        values = series.to_numpy(dtype=np.float64)
        bad = np.flatnonzero((values != np.floor(values)) | (np.abs(values) >= 2.0**53))
        if len(bad):
            r = int(bad[0])
            raise _fail(table, r, f"non-integer (or too large for a float column) {what} id {values[r]!r} in column "
                                  f"{col!r}; expected an integer id")
        return values.astype(np.int64)
    values = np.char.strip(series.to_numpy(dtype=object).astype(str))  # labels: surrounding whitespace dropped
    empty = np.flatnonzero(np.char.str_len(values) == 0)
    if len(empty):
        raise _fail(table, int(empty[0]), f"empty {what} id in column {col!r}; expected an id")
    return values


def label_column(table: Table, col: str | int, what: str, *, max_len: int = MAX_LABEL) -> np.ndarray:
    """Labels exactly as written (read the column with ``dtype=str``), as a numpy string array; an empty label
    or one longer than ``max_len`` characters raises :class:`DataError` with its line."""
    series = table.column(col)
    missing = series.isna().to_numpy()
    text = series if _is_text(series) else table.text(col)
    lengths = text.str.len().to_numpy(dtype=np.float64, na_value=0)
    first = _first(missing, lengths > max_len)
    if first is not None:
        r, k = first
        if k == 0:
            raise _missing(table, r, col, what, "id", "an id")
        raise _fail(table, r, f"{what} column {col!r} has a value of {int(lengths[r])} characters "
                              f"({_shown(text.iloc[r])}); expected at most {max_len} characters")
    return text.to_numpy(dtype=object).astype(str)


@dataclass(frozen=True)
class Column:
    """A typed column for :func:`read_columns`: header name or 0-based position, its role in messages
    (``what``), its type (``int``, ``float``, ``time``, ``label``) and the config key that selects it."""

    key: str | int
    what: str
    kind: str
    time_format: str = "unix"
    config: str = ""


def read_columns(
    path: str | os.PathLike,
    columns: Sequence[Column],
    *,
    sep: str,
    header: bool = True,
    expected: str,
    chunk_rows: int | None = CHUNK_ROWS,
) -> list[np.ndarray]:
    """Typed columns of a delimited file, converted ``chunk_rows`` rows at a time: ``int`` → int64 (written as
    integers), ``float`` → finite float64, ``time`` → float64 unix seconds (``time_format``), ``label`` →
    strings as written (at most :data:`MAX_LABEL` characters). Only an empty field is a missing value (``NA``
    is a label). ``expected`` describes the rows in messages."""
    keys = [c.key for c in columns]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"{path}: the same column is selected twice ({keys})")
    for c in columns:
        if c.kind not in ("int", "float", "time", "label"):
            raise ConfigError(f"column {c.key!r}: unknown type {c.kind!r}")
        if c.kind == "time" and c.time_format not in TIME_FORMATS:
            raise ConfigError(f"data.source.time_format={c.time_format!r}; expected one of {TIME_FORMATS}")
    text = {c.key: str for c in columns if c.kind == "label" or (c.kind == "time" and c.time_format in ("iso", "date"))}
    hint = {c.key: c.config for c in columns}
    parts: list[list[np.ndarray]] = [[] for _ in columns]
    for table in iter_tables(path, keys, fmt="csv", sep=sep, header=header, dtype=text, na_values=("",),
                             expected=expected, column_hint=hint, chunk_rows=chunk_rows):
        errors = []
        for k, c in enumerate(columns):
            try:
                parts[k].append(_convert(table, c))
            except DataError as err:
                errors.append(err)
        if errors:  # the earliest bad row of the chunk, whatever its column
            raise min(errors, key=lambda e: getattr(e, "row", -1))
    empty = {"int": np.int64, "float": np.float64, "time": np.float64, "label": str}
    return [np.concatenate(p) if p else np.zeros(0, dtype=empty[c.kind]) for p, c in zip(parts, columns, strict=True)]


def _convert(table: Table, c: Column) -> np.ndarray:
    """One typed column; messages expect the reader's row format."""
    if c.kind == "int":
        return integer_column(table, c.key, c.what, strict=True, expected=table.expected)
    if c.kind == "float":
        return numeric_column(table, c.key, c.what, finite=True, expected=table.expected)
    if c.kind == "time":
        return time_column(table, c.key, c.what, time_format=c.time_format, expected=table.expected)
    return label_column(table, c.key, c.what)


def factorize(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dense codes and the sorted unique labels (pandas' hash factorisation, then a sort of the uniques)."""
    pd = _pandas()
    codes, uniques = pd.factorize(values, sort=True)
    return codes.astype(np.int64), np.asarray(uniques)


# -- fast path: whitespace-separated non-negative integers -----------------------------------------------
@dataclass
class IntTokens:
    """Every integer token of a file: its value and its 0-based line index."""

    values: np.ndarray  # int64
    line: np.ndarray  # int64, 0-based physical line of each token
    num_lines: int

    def tokens_per_line(self) -> np.ndarray:
        return np.bincount(self.line, minlength=self.num_lines)


def _line_of(buf: np.ndarray, pos: int) -> int:
    return int(np.count_nonzero(buf[:pos] == 10)) + 1


def _token_around(buf: np.ndarray, pos: int, separators: bytes) -> str:
    stop = set(separators) | {10}
    start, end = pos, pos
    while start > 0 and buf[start - 1] not in stop:
        start -= 1
    while end < len(buf) and buf[end] not in stop and end - pos < 40:
        end += 1
    return bytes(buf[start:end]).decode("utf-8", errors="replace")


def parse_int_tokens(raw: bytes, origin: str | os.PathLike, expected: str, separators: bytes = b" \t\r") -> IntTokens:
    """All non-negative integer tokens of ``raw`` (separated by ``separators``, lines by ``\\n``), without a Python
    loop per token or line: the bytes are viewed as ``uint8``, digit runs found with one ``diff`` and accumulated
    digit place by digit place (at most 19 vector operations); each token's line is a ``searchsorted``.

    A leading UTF-8 byte-order mark is ignored. Raises :class:`DataError` naming ``origin``, the line and the
    token for a negative id, a non-integer token (any non-ASCII byte) or an id beyond int64; ``expected``
    describes the format in the message.
    """
    buf = np.frombuffer(raw, dtype=np.uint8)
    if raw[:3] == UTF8_BOM:
        buf = buf[3:]  # a byte-order mark is on line 1: dropping it keeps every line number
    allowed = np.zeros(256, dtype=bool)
    allowed[48:58] = True
    allowed[10] = True
    allowed[list(separators)] = True
    ok = allowed[buf]
    if not ok.all():
        pos = int(np.argmin(ok))
        token = _token_around(buf, pos, separators)
        what = "negative id" if token.startswith("-") and token[1:].isdigit() else "non-integer token"
        raise DataError(f"{origin}, line {_line_of(buf, pos)}: {what} {token!r}; expected {expected}")
    digits = buf - np.uint8(48)  # uint8 arithmetic: separators wrap to values > 9
    is_digit = (digits < 10).view(np.int8)
    edges = np.diff(is_digit, prepend=np.int8(0), append=np.int8(0))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    del edges, is_digit
    lengths = ends - starts
    if len(lengths) and lengths.max() > MAX_DIGITS:
        k = int(np.argmax(lengths))
        raise DataError(f"{origin}, line {_line_of(buf, int(starts[k]))}: id with {int(lengths[k])} digits is too "
                        f"large (beyond int64); expected {expected}")
    values = np.zeros(len(starts), dtype=np.int64)
    active = np.arange(len(starts))
    for place in range(int(lengths.max()) if len(lengths) else 0):
        active = active[lengths[active] > place]
        digit = digits[starts[active] + place].astype(np.int64)
        if place == MAX_DIGITS - 1:  # a 19th digit: value * 10 + digit must stay <= int64 max
            over = (values[active] > INT64_MAX // 10) | ((values[active] == INT64_MAX // 10) & (digit > INT64_MAX % 10))
            if over.any():
                k = int(active[np.argmax(over)])
                raise DataError(f"{origin}, line {_line_of(buf, int(starts[k]))}: id "
                                f"{bytes(buf[starts[k]:ends[k]]).decode()} is too large (beyond int64); "
                                f"expected {expected}")
        values[active] = values[active] * 10 + digit
    newlines = np.flatnonzero(buf == 10)
    num_lines = len(newlines) + (1 if len(buf) and buf[-1] != 10 else 0)
    line = np.searchsorted(newlines, starts)
    return IntTokens(values=values, line=line.astype(np.int64), num_lines=num_lines)


def first_token_flags(tokens: IntTokens) -> np.ndarray:
    """``True`` for the first token of every non-empty line."""
    first = np.ones(len(tokens.line), dtype=bool)
    first[1:] = tokens.line[1:] != tokens.line[:-1]
    return first


def parse_columns(
    raw: bytes, origin: str | os.PathLike, num_columns: int | tuple[int, ...], expected: str,
    separators: bytes = b" \t\r",
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a file with a fixed number of non-negative integer columns (blank lines skipped).

    Returns ``(table (rows, columns) int64, 0-based line of every row)``; a row with another count of
    tokens raises :class:`DataError` naming its line. ``num_columns`` may list several accepted counts (the
    first ``min(num_columns)`` columns are returned).
    """
    accepted = (num_columns,) if isinstance(num_columns, int) else tuple(num_columns)
    tokens = parse_int_tokens(raw, origin, expected, separators)
    per_line = tokens.tokens_per_line()
    nonblank = per_line > 0
    bad = nonblank & ~np.isin(per_line, accepted)
    if bad.any():
        line = int(np.argmax(bad))
        raise DataError(f"{origin}, line {line + 1}: {int(per_line[line])} fields; expected {expected}")
    width = min(accepted)
    counts = per_line[nonblank]
    if len(counts) == 0:
        return np.zeros((0, width), dtype=np.int64), np.zeros(0, dtype=np.int64)
    if (counts == counts[0]).all():
        table = tokens.values.reshape(-1, int(counts[0]))[:, :width]
    else:
        starts = np.cumsum(counts) - counts
        table = tokens.values[starts[:, None] + np.arange(width)[None, :]]
    return table, np.flatnonzero(nonblank)
