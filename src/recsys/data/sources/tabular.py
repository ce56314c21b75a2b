"""``data=csv_graph``: generic CSV/TSV/Parquet interactions with a column mapping.

``user_col``/``item_col`` (required), ``rating_col``/``time_col`` (optional) name columns (or give 0-based
positions when ``header=false``). Ids are labels of any type, factorised to dense codes (original ids kept).
An optional ``test_path`` (and ``valid_path``) makes a ``given`` split. Reading uses pandas' C parser;
bad values are reported with their file and line (row for Parquet).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from recsys.data.preprocess import TEST, TRAIN, VALID, Interactions
from recsys.data.sources.files import FileGraphSource
from recsys.data.sources.textparse import utf8_error
from recsys.errors import ConfigError, DataError

FORMATS = ("auto", "csv", "tsv", "parquet")


class Table:
    """A data frame read from ``path`` with, for every row, its 1-based line in the file (``None`` for
    Parquet, where rows are reported as ``row N``)."""

    def __init__(self, frame: Any, path: Path, lines: np.ndarray | None) -> None:
        self.frame = frame
        self.path = path
        self.lines = lines

    def where(self, row: int) -> str:
        if self.lines is None:
            return f"{self.path}, row {row + 1}"
        return f"{self.path}, line {int(self.lines[row])}"

    def __len__(self) -> int:
        return len(self.frame)


def _pandas():
    try:
        import pandas as pd
    except ImportError as err:  # pragma: no cover - pandas is a dependency
        raise ConfigError("reading tabular data needs pandas (pip install pandas)") from err
    return pd


def detect_format(path: Path, fmt: str) -> str:
    if fmt not in FORMATS:
        raise ConfigError(f"data.source.format={fmt!r} is not one of {FORMATS}")
    if fmt != "auto":
        return fmt
    suffix = path.suffix.lower()
    return {".parquet": "parquet", ".pq": "parquet", ".tsv": "tsv", ".tab": "tsv"}.get(suffix, "csv")


def read_table(
    path: Path,
    columns: list[str | int],
    *,
    fmt: str = "auto",
    sep: str | None = None,
    header: bool = True,
    names: list[str] | None = None,
    skip_lines: int = 0,
    dtype: dict[str | int, Any] | None = None,
    source: Any = None,
) -> Table:
    """Read the given columns of a delimited or Parquet file; unknown columns raise :class:`DataError`
    listing the available ones. ``source`` (bytes or a file object) replaces reading ``path``."""
    pd = _pandas()
    if source is None and not path.is_file():
        raise DataError(f"{path}: file not found" + (" (it is a folder)" if path.is_dir() else ""))
    fmt = detect_format(path, fmt)
    if fmt == "parquet":
        if not header or names:
            raise ConfigError("data.source.header=false/names do not apply to Parquet files (columns are named)")
        try:
            import pyarrow.parquet as pq
        except ImportError as err:
            raise ConfigError("reading Parquet needs pyarrow: pip install 'recsys[parquet]' (or pyarrow)") from err
        try:
            available = pq.read_schema(path).names
        except Exception as err:  # noqa: BLE001 - any pyarrow failure is a bad file
            raise DataError(f"{path}: not a readable Parquet file ({err})") from err
        _check_columns(path, columns, available)
        try:
            frame = pd.read_parquet(path, columns=list(dict.fromkeys(columns)))
        except Exception as err:  # noqa: BLE001 - a corrupt page/footer is a bad file
            raise DataError(f"{path}: not a readable Parquet file ({err})") from err
        return Table(frame, path, None)
    sep = sep if sep is not None else ("\t" if fmt == "tsv" else ",")
    if header and names:
        raise ConfigError("data.source.names replaces the header: set header=false with names")
    # index_col=False: a row longer than the header never shifts the columns into an index (pandas then
    # ignores fields beyond the selected columns)
    options = dict(sep=sep, quoting=csv.QUOTE_MINIMAL, skip_blank_lines=False, skiprows=skip_lines,
                   header=0 if header else None, names=names, engine="c", index_col=False)
    src = source if source is not None else path
    try:
        if header or names:
            available = list(pd.read_csv(src, nrows=0, **options).columns)
            if hasattr(src, "seek"):
                src.seek(0)
        else:
            first = pd.read_csv(src, nrows=1, **options)
            available = list(range(first.shape[1]))
            if hasattr(src, "seek"):
                src.seek(0)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: empty file; expected a header and delimited rows") from None
    except UnicodeDecodeError as err:
        raise _decode_error(path, src, err) from None
    except pd.errors.ParserError as err:
        raise DataError(f"{path}: {err}; expected {sep!r}-separated rows with the same number of fields") from err
    _check_columns(path, columns, available)
    try:
        # nullable dtypes: a blank line (all missing) does not turn an integer column into floats, so ids
        # beyond 2**53 stay exact; the columns are plain numpy again below
        frame = pd.read_csv(src, usecols=list(dict.fromkeys(columns)), dtype=dtype, dtype_backend="numpy_nullable",
                            **options)
    except UnicodeDecodeError as err:
        raise _decode_error(path, src, err) from None
    except pd.errors.ParserError as err:
        raise DataError(f"{path}: {err}; expected {sep!r}-separated rows with the same number of fields") from err
    except (ValueError, TypeError, OverflowError) as err:
        raise DataError(f"{path}: {err}") from err
    lines = np.arange(len(frame), dtype=np.int64) + 1 + skip_lines + (1 if header else 0)
    blank = frame.isna().all(axis=1).to_numpy()
    if blank.any():
        frame = frame.loc[~blank].reset_index(drop=True)
        lines = lines[~blank]
    return Table(_numpy_columns(frame), path, lines)


def _numpy_columns(frame: Any) -> Any:
    """Nullable (extension) columns as plain numpy: integers stay int64/uint64 when nothing is missing, else
    become float64 with NaN; strings become objects with NaN for missing values."""
    pd = _pandas()
    out = {}
    for col in frame.columns:
        s = frame[col]
        kind = getattr(s.dtype, "numpy_dtype", None)
        if kind is not None and kind.kind in "iuf":
            has_na = bool(s.isna().any())
            out[col] = s.to_numpy(dtype=np.float64 if has_na or kind.kind == "f" else kind, na_value=np.nan)
        elif kind is not None and kind.kind == "b":
            out[col] = s.to_numpy(dtype=object, na_value=np.nan)
        elif isinstance(s.dtype, pd.StringDtype) or s.dtype == object:
            out[col] = s.astype(object).where(s.notna(), np.nan).to_numpy(dtype=object)
        else:
            out[col] = s.to_numpy()
    return pd.DataFrame(out, columns=frame.columns)


def _decode_error(path: Path, src: Any, err: UnicodeDecodeError) -> DataError:
    """Error path: the line of the first byte that is not UTF-8 (the file is read again as bytes)."""
    if hasattr(src, "getvalue"):
        raw = src.getvalue()
    elif isinstance(src, (bytes, bytearray)):
        raw = bytes(src)
    else:
        raw = Path(src).read_bytes()
    return utf8_error(path, raw, str(err))


def _check_columns(path: Path, wanted: list[str | int], available: list[Any]) -> None:
    missing = [c for c in wanted if c not in available]
    if missing:
        raise DataError(
            f"{path}: unknown column(s) {', '.join(map(repr, missing))}; the file has columns "
            f"{', '.join(map(repr, available))} (set data.source.user_col/item_col/rating_col/time_col)"
        )


def numeric_column(table: Table, col: str | int, what: str) -> np.ndarray:
    """Column as float64; the first non-numeric (or empty) value raises :class:`DataError` with its line."""
    pd = _pandas()
    raw = table.frame[col]
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(np.isnan(values))
    if len(bad):
        r = int(bad[0])
        raise DataError(f"{table.where(r)}: {what} column {col!r} has the non-numeric value {raw.iloc[r]!r}; "
                        "expected a number")
    return values


def integer_column(table: Table, col: str | int, what: str, minimum: int = 0) -> np.ndarray:
    """Column of integer ids; non-integer tokens or ids below ``minimum`` raise :class:`DataError`."""
    pd = _pandas()
    raw = table.frame[col]
    if raw.dtype.kind == "i":  # parsed as int64 by pandas: exact, no float round trip
        ints = raw.to_numpy(dtype=np.int64)
    else:
        values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
        # beyond 2**53 a float no longer holds every integer: such ids are read exactly from their digits
        bad = np.isnan(values) | (values != np.floor(values)) | (np.abs(values) >= 2.0**53)
        ints = np.zeros(len(values), dtype=np.int64)
        ints[~bad] = values[~bad]
        if bad.any() and raw.dtype.kind not in "iuf":
            text = raw[bad].astype(str).str.strip()
            digits = text.str.fullmatch(r"[+-]?[0-9]{1,19}").fillna(False).to_numpy(dtype=bool)
            exact = text[digits].astype(object).map(int).to_numpy(dtype=object)
            fits = np.array([-(2**63) <= v < 2**63 for v in exact], dtype=bool)  # the few huge ids only
            rows = np.flatnonzero(bad)[np.flatnonzero(digits)[fits]]
            ints[rows] = exact[fits].astype(np.int64)
            bad[rows] = False
        if bad.any():
            r = int(np.argmax(bad))
            raise DataError(f"{table.where(r)}: non-integer (or beyond int64) token {raw.iloc[r]!r} in {what} "
                            f"column {col!r}; expected an integer id")
    low = np.flatnonzero(ints < minimum)
    if len(low):
        r = int(low[0])
        raise DataError(f"{table.where(r)}: {'negative id' if ints[r] < 0 else 'id'} {int(ints[r])} in {what} "
                        f"column {col!r}; expected ids >= {minimum}")
    return ints


def id_column(table: Table, col: str | int, what: str) -> np.ndarray:
    """Id labels (integers or strings); a missing value raises :class:`DataError` with its line."""
    series = table.frame[col]
    missing = np.flatnonzero(series.isna().to_numpy())
    if len(missing):
        raise DataError(f"{table.where(int(missing[0]))}: empty {what} id in column {col!r}; expected an id")
    values = series.to_numpy()
    if values.dtype.kind == "f":
        # a float column (missing values or blank lines turned the ints into floats): exact below 2**53 only
        bad = np.flatnonzero((values != np.floor(values)) | (np.abs(values) >= 2.0**53))
        if len(bad):
            r = int(bad[0])
            raise DataError(f"{table.where(r)}: non-integer (or too large for a float column) {what} id "
                            f"{values[r]!r} in column {col!r}; expected an integer id")
        values = values.astype(np.int64)
    if values.dtype.kind in "OUT":
        values = np.char.strip(values.astype(str))  # labels: surrounding whitespace is not part of the id
        empty = np.flatnonzero(np.char.str_len(values) == 0)
        if len(empty):
            raise DataError(f"{table.where(int(empty[0]))}: empty {what} id in column {col!r}; expected an id")
    return values


def time_column(table: Table, col: str | int) -> np.ndarray:
    """Timestamps as float64 seconds: numbers as they are, date strings parsed."""
    pd = _pandas()
    raw = table.frame[col]
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
    if np.isnan(values).any():
        parsed = pd.to_datetime(raw, errors="coerce", utc=True)
        bad = np.flatnonzero(parsed.isna().to_numpy())
        if len(bad):
            r = int(bad[0])
            raise DataError(f"{table.where(r)}: time column {col!r} has the value {raw.iloc[r]!r}; expected a "
                            "number or a date")
        values = (parsed - pd.Timestamp("1970-01-01", tz="UTC")).dt.total_seconds().to_numpy(dtype=np.float64)
    return values


def factorize(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dense codes and the sorted unique labels (pandas' hash factorisation, then a sort of the uniques)."""
    pd = _pandas()
    codes, uniques = pd.factorize(values, sort=True)
    return codes.astype(np.int64), np.asarray(uniques)


def interactions_from_tables(
    tables: list[tuple[Table, int]],
    user_col: str | int,
    item_col: str | int,
    rating_col: str | int | None,
    time_col: str | int | None,
    origin: str,
    given: bool,
) -> Interactions:
    """Concatenate tables (each with its split part) into :class:`Interactions`."""
    users = [id_column(t, user_col, "user") for t, _ in tables]
    items = [id_column(t, item_col, "item") for t, _ in tables]
    if len({a.dtype.kind for a in users}) > 1:
        users = [a.astype(str) for a in users]
    if len({a.dtype.kind for a in items}) > 1:
        items = [a.astype(str) for a in items]
    u_codes, user_ids = factorize(np.concatenate(users))
    i_codes, item_ids = factorize(np.concatenate(items))
    ratings = np.concatenate([numeric_column(t, rating_col, "rating") for t, _ in tables]) if rating_col is not None \
        else None
    times = np.concatenate([time_column(t, time_col) for t, _ in tables]) if time_col is not None else None
    part = np.concatenate([np.full(len(t), p, dtype=np.int8) for t, p in tables]) if given else None
    return Interactions(u_codes, i_codes, user_ids, item_ids, ratings, times, part, origin)


class TabularSource(FileGraphSource):
    """CSV/TSV/Parquet interactions with a column mapping (``data=csv_graph``).

    With ``test_path`` (and optionally ``valid_path``) the files form a ``given`` split; otherwise choose
    ``split=random|temporal|leave_one_out|global_temporal``.
    """

    version = 1

    def __init__(
        self,
        user_col: str | int = "user_id",
        item_col: str | int = "item_id",
        rating_col: str | int | None = None,
        time_col: str | int | None = None,
        format: str = "auto",  # noqa: A002 - config key
        sep: str | None = None,
        header: bool = True,
        names: list[str] | None = None,
        test_path: str | None = None,
        valid_path: str | None = None,
        name: str = "csv_graph",
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("split", "given" if test_path else "random")
        super().__init__(**kwargs)
        if self.path is None:
            raise ConfigError("data=csv_graph needs data.path=/path/to/interactions.csv (or .tsv/.parquet)")
        self.name = name
        self.columns = {"user": user_col, "item": item_col, "rating": rating_col, "time": time_col}
        self.format, self.sep, self.header = format, sep, bool(header)
        self.names = list(names) if names else None
        self.test_path = Path(test_path).expanduser() if test_path else None
        self.valid_path = Path(valid_path).expanduser() if valid_path else None
        self.format_help = f"a {format if format != 'auto' else 'CSV/TSV/Parquet'} file with columns {user_col!r}, {item_col!r}"

    def params(self) -> dict[str, Any]:
        return {"columns": self.columns, "format": self.format, "sep": self.sep, "header": self.header,
                "names": self.names}

    def required_files(self) -> list[str]:
        return ["interactions"]

    def files(self) -> dict[str, Path]:
        if self._files is None:
            files = {"train": self.path}
            if self.test_path is not None:
                files["test"] = self.test_path
            if self.valid_path is not None:
                files["valid"] = self.valid_path
            for p in files.values():
                if not p.is_file():
                    raise DataError(f"{p}: file not found" + (" (it is a folder)" if p.is_dir() else "")
                                    + f"; expected {self.format_help}")
            self._files = files
        return self._files

    def read(self, files: dict[str, Path]) -> Interactions:
        wanted = [c for c in self.columns.values() if c is not None]
        parts = {"train": TRAIN, "valid": VALID, "test": TEST}
        tables = [(read_table(p, wanted, fmt=self.format, sep=self.sep, header=self.header, names=self.names),
                   parts[k]) for k, p in files.items()]
        c = self.columns
        return interactions_from_tables(tables, c["user"], c["item"], c["rating"], c["time"], str(self.path),
                                        given="test" in files)
