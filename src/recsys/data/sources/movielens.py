"""``data=ml_100k|ml_1m|ml_20m|ml_latest_small``: MovieLens ratings from the GroupLens archives.

* 100k: ``ml-100k/u.data``, tab-separated ``user item rating timestamp`` (integers);
* 1M: ``ml-1m/ratings.dat``, ``UserID::MovieID::Rating::Timestamp`` (integers);
* 20M and latest-small: ``ratings.csv`` with header ``userId,movieId,rating,timestamp`` (half-star ratings).

Explicit ratings become implicit feedback through ``rating_threshold`` (e.g. ``>= 4``); timestamps are kept, so
``temporal``/``leave_one_out``/``global_temporal`` splits work. ``data.path`` may be the archive (``.zip``), the
extracted folder or the ratings file itself. The GroupLens checksums are not pinned here (a warning says so).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recsys.data.preprocess import Interactions
from recsys.data.sources.columns import factorize, integer_column, numeric_column
from recsys.data.sources.delimited import read_table
from recsys.data.sources.files import FileGraphSource, RemoteFile
from recsys.data.sources.int_tokens import parse_columns
from recsys.errors import ConfigError, DataError

GROUPLENS = "https://files.grouplens.org/datasets/movielens"


@dataclass(frozen=True)
class Variant:
    archive: str  # e.g. ml-100k.zip
    member: str  # path of the ratings file inside the archive
    kind: str  # "udata" (tab ints), "dat" (:: ints) or "csv" (header, float ratings)


VARIANTS = {
    "100k": Variant("ml-100k.zip", "ml-100k/u.data", "udata"),
    "1m": Variant("ml-1m.zip", "ml-1m/ratings.dat", "dat"),
    "20m": Variant("ml-20m.zip", "ml-20m/ratings.csv", "csv"),
    "latest-small": Variant("ml-latest-small.zip", "ml-latest-small/ratings.csv", "csv"),
}


class MovieLensSource(FileGraphSource):
    """MovieLens 100k / 1M / 20M / latest-small ratings as implicit feedback."""

    version = 1

    def __init__(self, variant: str = "100k", **kwargs: Any) -> None:
        if variant not in VARIANTS:
            raise ConfigError(f"data.source.variant={variant!r} is not one of {sorted(VARIANTS)}")
        kwargs.setdefault("split", "random")
        kwargs.setdefault("rating_threshold", 4.0)
        super().__init__(**kwargs)
        self.variant = VARIANTS[variant]
        self.variant_name = variant
        self.name = "ml_" + variant.replace("-", "_")
        ratings = Path(self.variant.member).name
        self.format_help = f"{self.variant.archive}, its extracted folder, or {ratings} (MovieLens {variant})"

    def params(self) -> dict[str, Any]:
        return {"variant": self.variant_name}

    def required_files(self) -> list[tuple[str, ...]]:
        # in a folder: the ratings file, the archive's member path or the archive
        return [(Path(self.variant.member).name, self.variant.member, self.variant.archive)]

    def remote_files(self) -> dict[str, RemoteFile]:
        return {self.variant.archive: RemoteFile(f"{GROUPLENS}/{self.variant.archive}", None)}

    def resolve_local(self, path: Path) -> dict[str, Path]:
        (found,) = super().resolve_local(path).values()  # named as the archive or the ratings file (cache keys)
        return {self.variant.archive if found.suffix.lower() == ".zip" else self.required_files()[0][0]: found}

    def _open(self, files: dict[str, Path]) -> tuple[bytes, Path]:
        """Bytes of the ratings file and the path to name in errors (``archive.zip/member``)."""
        (path,) = files.values()
        if path.suffix.lower() != ".zip":
            return path.read_bytes(), path
        try:
            with zipfile.ZipFile(path) as z:
                try:
                    return z.read(self.variant.member), path / self.variant.member
                except KeyError:
                    raise DataError(f"{path}: the archive has no member {self.variant.member}; expected "
                                    f"{self.format_help}") from None
        except zipfile.BadZipFile as err:
            raise DataError(f"{path}: not a valid zip archive ({err})") from err

    def read(self, files: dict[str, Path]) -> Interactions:
        (path,) = files.values()
        if self.variant.kind == "csv" and path.suffix.lower() != ".zip":
            raw, origin = None, path  # let pandas stream the file
        else:
            raw, origin = self._open(files)
        if self.variant.kind in ("udata", "dat"):
            expected = ("tab-separated 'user item rating timestamp' integers" if self.variant.kind == "udata"
                        else "'UserID::MovieID::Rating::Timestamp' integers")
            seps = b" \t\r" if self.variant.kind == "udata" else b":\r"
            table, _ = parse_columns(raw, origin, 4, expected, separators=seps)
            users, items = table[:, 0], table[:, 1]
            ratings, times = table[:, 2].astype(np.float64), table[:, 3].astype(np.float64)
        else:
            cols = ["userId", "movieId", "rating", "timestamp"]
            t = read_table(origin, cols, fmt="csv", source=raw, expected=self.format_help)
            users, items = integer_column(t, "userId", "user"), integer_column(t, "movieId", "item")
            ratings, times = numeric_column(t, "rating", "rating"), numeric_column(t, "timestamp", "timestamp")
        if len(users) == 0:
            raise DataError(f"{origin}: no ratings")
        u, user_ids = factorize(users)
        i, item_ids = factorize(items)
        return Interactions(u, i, user_ids, item_ids, ratings=ratings, times=times, origin=str(origin))
