"""Typed columns of a :class:`~recsys.data.sources.delimited.Table`, each bad value reported with its line.

:func:`id_column` (labels, integers when every value is one), :func:`label_column` (text as written),
:func:`integer_column`, :func:`numeric_column` and :func:`time_column` (the one time conversion: ``unix``,
``unix_ms``, ``iso``, ``date`` or ``auto``); :func:`read_columns` reads and converts in chunks of rows.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from recsys.data.sources.delimited import CHUNK_ROWS, Table, has_missing, is_text, iter_tables
from recsys.errors import ConfigError, DataError

TIME_FORMATS = ("unix", "unix_ms", "iso", "date")
MAX_LABEL = 63  # characters of a text label (session and item ids of session files)
INT64_MAX = int(np.iinfo(np.int64).max)


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
    if kind not in "iu" or has_missing(series):
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
        text = (series if is_text(series) else table.text(col)).astype(str).str.strip()
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
        value = _shown(table.text(col).iloc[r] if not is_text(series) else str(series.iloc[r]).strip())
        found = f"the non-integer value {value}" if k == 1 else f"the value {value}, beyond int64"
        raise _fail(table, r, f"{what} column {col!r} has {found}; expected {expected}")
    return ints


def numeric_column(table: Table, col: str | int, what: str, *, finite: bool = False,
                   expected: str | None = None) -> np.ndarray:
    """Numbers as float64; an empty or non-numeric value (and with ``finite``, ``inf``/``nan``) raises
    :class:`DataError` with its line."""
    expected = expected or ("a finite number" if finite else "a number")
    series = table.column(col)
    kind = getattr(series.dtype, "kind", "O")
    if kind in "iuf" and not has_missing(series):
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
        text = (series if is_text(series) else table.text(col)).astype(str).str.strip()
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
    text = series if is_text(series) else table.text(col)
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
    codes, uniques = pd.factorize(values, sort=True)
    return codes.astype(np.int64), np.asarray(uniques)
