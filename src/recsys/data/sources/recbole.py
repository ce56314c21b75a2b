"""``data=recbole_inter``: RecBole atomic ``.inter`` files, so RecBole users can bring their data.

An atomic file is tab-separated with a typed header ``name:type`` per column (types ``token``,
``token_seq``, ``float``, ``float_seq``), e.g. ``user_id:token	item_id:token	rating:float	timestamp:float``.
``data.path`` is the ``.inter`` file, or a RecBole dataset folder holding ``<name>.inter`` — or
``<name>.train.inter`` + ``<name>.test.inter`` (+ ``<name>.valid.inter``), RecBole's pre-split benchmark files,
read as a ``given`` split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recsys.data.preprocess import TEST, TRAIN, VALID, Interactions
from recsys.data.sources.delimited import read_table
from recsys.data.sources.files import FileGraphSource
from recsys.data.sources.tabular import interactions_from_tables
from recsys.errors import ConfigError, DataError

FIELD_TYPES = ("token", "token_seq", "float", "float_seq")


def read_header(path: Path, sep: str) -> dict[str, str]:
    """``{field name: type}`` of an atomic file's typed header (line 1)."""
    if not path.is_file():
        raise DataError(f"{path}: file not found; expected a RecBole atomic .inter file")
    with open(path, "rb") as f:
        first_bytes = f.readline()
    try:
        first = first_bytes.decode("utf-8-sig").rstrip("\r\n")  # a byte-order mark is dropped
    except UnicodeDecodeError:
        raise DataError(f"{path}, line 1: the header is not valid UTF-8 text; expected a RecBole atomic file") from None
    if not first.strip():
        raise DataError(f"{path}, line 1: empty header; expected typed columns like 'user_id:token{sep}item_id:token'")
    fields: dict[str, str] = {}
    for column in first.split(sep):
        name, colon, ftype = column.strip().rpartition(":")
        if not colon or not name or ftype not in FIELD_TYPES:
            raise DataError(f"{path}, line 1: header column {column!r}; expected 'name:type' with type in "
                            f"{FIELD_TYPES} (RecBole atomic file)")
        if name in fields:
            raise DataError(f"{path}, line 1: header column {name!r} appears twice; expected unique field names")
        fields[name] = ftype
    return fields


class RecBoleInterSource(FileGraphSource):
    """RecBole ``.inter`` interactions (``user_field``/``item_field`` tokens, optional float rating/time)."""

    version = 1
    format_help = "a RecBole atomic .inter file (typed header 'user_id:token<TAB>item_id:token ...') or its folder"

    def __init__(
        self,
        user_field: str = "user_id",
        item_field: str = "item_id",
        rating_field: str | None = None,
        time_field: str | None = None,
        field_separator: str = "\t",
        name: str = "recbole_inter",
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("split", "random")  # pre-split benchmark files: split=given
        super().__init__(**kwargs)
        if self.path is None:
            raise ConfigError("data=recbole_inter needs data.path=/path/to/<dataset>.inter (or its folder)")
        self.name = name
        self.fields = {"user": user_field, "item": item_field, "rating": rating_field, "time": time_field}
        self.sep = field_separator

    def params(self) -> dict[str, Any]:
        return {"fields": self.fields, "sep": self.sep}

    def required_files(self) -> list[str]:
        return ["inter"]  # data.path is the .inter file (a folder: see resolve_local)

    def resolve_local(self, path: Path) -> dict[str, Path]:
        """A folder holds ``<name>.inter``, or the benchmark files ``<name>.train.inter`` + ``<name>.test.inter``
        (+ ``<name>.valid.inter``)."""
        if not path.is_dir():
            return super().resolve_local(path)
        stem = path.name
        split_files = {k: path / f"{stem}.{k}.inter" for k in ("train", "valid", "test")}
        if (path / f"{stem}.inter").is_file():
            return {"inter": path / f"{stem}.inter"}
        if split_files["train"].is_file() and split_files["test"].is_file():
            return {k: f for k, f in split_files.items() if f.is_file()}
        raise DataError(f"data.path={path}: missing {stem}.inter (or {stem}.train.inter + {stem}.test.inter); "
                        f"expected {self.format_help}")

    def read(self, files: dict[str, Path]) -> Interactions:
        parts = {"inter": TRAIN, "train": TRAIN, "valid": VALID, "test": TEST}
        tables = []
        for key, path in files.items():
            header = read_header(path, self.sep)
            for role, field in self.fields.items():
                if field is None:
                    continue
                if field not in header:
                    raise DataError(f"{path}, line 1: unknown column {field!r} (data.source.{role}_field); the file "
                                    f"has {', '.join(f'{k}:{v}' for k, v in header.items())}")
                want = ("token",) if role in ("user", "item") else ("float",)
                if header[field] not in want:
                    raise DataError(f"{path}, line 1: column {field}:{header[field]} (data.source.{role}_field); "
                                    f"expected type {want[0]}")
            wanted = [f for f in self.fields.values() if f is not None]
            dtype = {self.fields["user"]: str, self.fields["item"]: str}
            table = read_table(path, wanted, fmt="csv", sep=self.sep, header=False, names=list(header),
                               skip_lines=1, dtype=dtype, expected=self.format_help)
            tables.append((table, parts[key]))
        f = self.fields
        return interactions_from_tables(tables, f["user"], f["item"], f["rating"], f["time"], str(self.path),
                                        given="test" in files)
