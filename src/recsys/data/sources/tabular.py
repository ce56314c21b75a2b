"""``data=csv_graph``: generic CSV/TSV/Parquet interactions with a column mapping.

``user_col``/``item_col`` (required), ``rating_col``/``time_col`` (optional) name columns (or give 0-based
positions when ``header=false``). Ids are labels of any type, factorised to dense codes (original ids kept).
An optional ``test_path`` (and ``valid_path``) makes a ``given`` split. Files are read by
:mod:`recsys.data.sources.delimited` (bad values are reported with their file and line, row for Parquet).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from recsys.data.preprocess import TEST, TRAIN, VALID, Interactions
from recsys.data.sources.columns import factorize, id_column, numeric_column, time_column
from recsys.data.sources.delimited import Table, read_table
from recsys.data.sources.files import FileGraphSource
from recsys.errors import ConfigError, DataError


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
    folder_ok = False

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
        return ["train"]

    def resolve_local(self, path: Path) -> dict[str, Path]:
        files = super().resolve_local(path)
        for key, extra in (("test", self.test_path), ("valid", self.valid_path)):
            if extra is not None:
                if not extra.is_file():
                    raise DataError(f"data.source.{key}_path={extra}: no such file"
                                    + (" (it is a folder)" if extra.is_dir() else "") + f"; expected {self.format_help}")
                files[key] = extra
        return files

    def read(self, files: dict[str, Path]) -> Interactions:
        wanted = [c for c in self.columns.values() if c is not None]
        parts = {"train": TRAIN, "valid": VALID, "test": TEST}
        tables = [(read_table(p, wanted, fmt=self.format, sep=self.sep, header=self.header, names=self.names,
                              expected=self.format_help), parts[k]) for k, p in files.items()]
        c = self.columns
        return interactions_from_tables(tables, c["user"], c["item"], c["rating"], c["time"], str(self.path),
                                        given="test" in files)
