"""Delimited text and Parquet files as tables: the one table reader of the file sources (graph and session).

:func:`read_table` / :func:`iter_tables`: selected columns of a CSV/TSV/``;``/``::``-separated file (pandas' C
parser) or a Parquet file (pyarrow) as a :class:`Table` that knows the 1-based line of every row. Files are strict
UTF-8 (a byte-order mark is dropped, CRLF accepted); blank or whitespace-only lines are skipped; fields beyond the
selected columns are ignored. Typed columns of a table: :mod:`recsys.data.sources.columns`; whitespace-separated
integer files: :mod:`recsys.data.sources.int_tokens`; bytes, UTF-8 and line recovery:
:mod:`recsys.data.sources.text`.

Every bad input raises ``DataError("<file>, line <n>: <what>; expected <format>")`` (``row <n>`` for Parquet).
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys.data.sources.text import check_utf8, line_texts
from recsys.errors import ConfigError, DataError

FORMATS = ("auto", "csv", "tsv", "parquet")
CHUNK_ROWS = 2_000_000  # rows converted at a time by read_columns (bounds the memory of text columns)
SMALL_FILE = 64 << 20  # bytes: a file up to this size is read in one chunk
_ALT_SEP = "\x1f"  # a multi-character delimiter is replaced by this byte for pandas' C parser


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
        return line_texts(self.source, [line]).get(line)

    def text(self, col: Any) -> Any:
        """Error path: a column as the text written in the file (its lines parsed again, as strings)."""
        series = self.column(col)
        if self.lines is None or self.source is None or col not in self.positions or not len(self.lines):
            return series.astype(str)
        texts = line_texts(self.source, self.lines)
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


def has_missing(series: Any) -> bool:
    return bool(series.array.isna().any())


def is_text(series: Any) -> bool:
    return series.dtype == object or isinstance(series.dtype, pd.StringDtype)


def _drop_blank_rows(table: Table) -> Table:
    """Rows of blank or whitespace-only lines removed (their selected fields are all missing or blank; the line
    itself is checked, so a line holding only unselected fields is not blank)."""
    frame = table.frame
    if not any(has_missing(frame[col]) for col in frame.columns):
        return table
    na = frame.isna().to_numpy()
    rows = np.flatnonzero(na.any(axis=1))
    empty = na[rows]
    for j, col in enumerate(frame.columns):
        if not empty[:, j].all() and is_text(frame[col]):
            values = frame[col].iloc[rows]
            empty[:, j] |= (values.str.strip() == "").fillna(True).to_numpy(dtype=bool)
    rows = rows[empty.all(axis=1)]
    if not len(rows):
        return table
    texts = line_texts(table.source, table.lines[rows]) if table.source is not None else {}
    blank = rows[[not texts.get(int(n), "x").strip() for n in table.lines[rows]]]  # the blank lines only
    if not len(blank):
        return table
    keep = np.ones(len(frame), dtype=bool)
    keep[blank] = False
    table.frame = frame.loc[keep].reset_index(drop=True)
    table.lines = table.lines[keep]
    return table


def _read_parquet(path: Path, columns: list[Any], hint: str | dict[Any, str]) -> Table:
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


