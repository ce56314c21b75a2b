"""Readers of session click data (``data=rsc15``, ``yoochoose_raw``, ``diginetica``, ``csv_sessions``,
``ml_1m_sessions``). A session source has ``name``, ``fingerprint()`` and ``build() -> SessionSplits``.

Files are found by :class:`~recsys.data.sources.files.FileSource` (``data.path``, or a download with a pinned
checksum where the source knows one; otherwise a :class:`~recsys.errors.ConfigError` says to set ``data.path``)
and parsed by :mod:`recsys.data.sources.delimited`: bad input raises
``DataError("<file>, line <n>: <what>; expected <format>")``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from recsys.data.session_data import SessionSplits
from recsys.data.session_preprocess import (
    SessionEvents,
    SessionPreprocessing,
    assemble_splits,
    preprocess_sessions,
    sessions_from_user_events,
    split_codes,
)
from recsys.data.sources.columns import TIME_FORMATS, Column, read_columns
from recsys.data.sources.files import FileSource, RemoteFile, file_identity
from recsys.data.sources.movielens import MovieLensSource
from recsys.errors import ConfigError, DataError

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


def _preprocessing(options: dict[str, Any] | SessionPreprocessing | None) -> SessionPreprocessing:
    if isinstance(options, SessionPreprocessing):
        return options
    try:
        return SessionPreprocessing(**dict(options or {}))
    except TypeError as err:
        raise ConfigError(f"data.source.preprocessing: {err}") from err


# -- sources ---------------------------------------------------------------------------------------
class PreparedSessionSource(FileSource):
    """``data=rsc15``: GRU4Rec "prepared" TSV files with header ``SessionId ItemId Time`` (integer ids,
    time in unix seconds), already preprocessed and split (train / optional valid / test).

    ``path``: the folder holding the files (``data.path``). Without it, the public 100k-click RSC15 sample
    (the default file names, ``train_full`` → ``test``) is downloaded into ``download_dir/<name>`` with pinned
    sha256 checksums. Test (and valid) events whose item is not in train are dropped.
    """

    format_help = ("a folder with the GRU4Rec prepared files (e.g. data.path=../shared/datasets/rsc15_100k), "
                   "named by data.source.train/valid/test")

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
        super().__init__(path, download_dir)
        self.split_files = {"train": train, "valid": valid, "test": test}
        self.name = name
        self.keys = (session_key, item_key, time_key)
        self.delimiter = delimiter

    def required_files(self) -> list[str]:
        return list(dict.fromkeys(f for f in self.split_files.values() if f is not None))

    def remote_files(self) -> dict[str, RemoteFile]:
        for split, fname in self.split_files.items():
            if fname is not None and fname not in RSC15_FILES:
                raise ConfigError(f"data.source.{split}={fname!r} has no download; set data.path to the folder "
                                  "holding it")
        return {f: RemoteFile(RSC15_BASE_URL + f, RSC15_FILES[f]) for f in self.required_files()}

    def _file(self, split: str) -> Path | None:
        fname = self.split_files[split]
        return None if fname is None else self.files()[fname]

    def fingerprint(self) -> dict[str, Any]:
        files = {}
        for split in ("train", "valid", "test"):
            p = self._file(split)
            files[split] = None if p is None else file_identity(p)
        return {"source": "prepared_sessions", "version": 1, "name": self.name, "files": files, "keys": self.keys,
                "delimiter": self.delimiter}

    def read(self, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(sessions, items, times)`` of one split's file."""
        p = self._file(split)
        assert p is not None
        expected = f"{self.delimiter!r}-separated '{' '.join(self.keys)}' rows (integer ids, time in seconds)"
        columns = [Column(self.keys[0], "session", "int", config="data.source.session_key"),
                   Column(self.keys[1], "item", "int", config="data.source.item_key"),
                   Column(self.keys[2], "time", "time", "unix", config="data.source.time_key")]
        s, i, t = read_columns(p, columns, sep=self.delimiter, expected=expected)
        if len(i) == 0:
            raise DataError(f"{p}: no events; expected {expected}")
        return s, i, t

    def build(self) -> SessionSplits:
        names = [n for n in ("train", "valid", "test") if self.split_files[n] is not None]
        parts = split_codes([self.read(n) for n in names], [str(self._file(n)) for n in names])
        ev = dict(zip(names, parts, strict=True))
        splits = assemble_splits(ev["train"], ev["test"], ev.get("valid"))
        splits.meta.update({"source": self.name, "files": str(self.split_files)})
        return splits


class EventFileSource(FileSource):
    """A session source of one event file (:meth:`read_events`), preprocessed the GRU4Rec way
    (``preprocessing``); ``data.path`` is the file or its folder, and there is no download."""

    version = 1

    def __init__(self, path: str | None = None, preprocessing: dict[str, Any] | None = None) -> None:
        super().__init__(path)
        self.require_local_or_download()
        self.preprocessing = _preprocessing(preprocessing)

    def file(self) -> Path:
        (path,) = self.files().values()
        return path

    def fingerprint(self) -> dict[str, Any]:
        return {"source": self.name, "version": self.version, "file": file_identity(self.file()),
                "preprocessing": self.preprocessing.as_dict()}

    def read_events(self) -> SessionEvents:
        raise NotImplementedError

    def build(self) -> SessionSplits:
        splits = preprocess_sessions(self.read_events(), self.preprocessing)
        splits.meta["source"] = self.name
        return splits


class YoochooseClicksSource(EventFileSource):
    """``data=yoochoose_raw``: the raw RecSys Challenge 2015 ``yoochoose-clicks.dat`` (no header;
    ``session,ISO timestamp,item,category``), preprocessed the GRU4Rec way (``preprocessing``).

    The file is not redistributed: get it from the challenge's host and set ``data.path`` to it or its folder.
    """

    name = "yoochoose_raw"
    expected = "'session,timestamp,item,category' rows (integer session and item, ISO timestamp)"
    format_help = ("yoochoose-clicks.dat of the RecSys Challenge 2015, or its folder (download the challenge data "
                   "and set data.path=/folder/or/yoochoose-clicks.dat)")

    def required_files(self) -> list[str]:
        return ["yoochoose-clicks.dat"]

    def read_events(self) -> SessionEvents:
        p = self.file()
        s, t, i = read_columns(p, [Column(0, "session", "int"), Column(1, "time", "time", "iso"),
                                   Column(2, "item", "int")], sep=",", header=False, expected=self.expected)
        if len(i) == 0:
            raise DataError(f"{p}: no events; expected {self.expected}")
        return SessionEvents.from_ids(s, i, t, str(p))


class DigineticaSource(EventFileSource):
    """``data=diginetica``: CIKM Cup 2016 ``train-item-views.csv`` (``;``-separated, header
    ``session_id;user_id;item_id;timeframe;eventdate``). Event time = ``eventdate`` (a day) + ``timeframe``
    (ms since the session start); then the GRU4Rec preprocessing with a time split in days.

    ``path``: the file, or a folder holding ``train-item-views.csv`` (or SR-GNN's ``sample_train-item-views.csv``).
    """

    name = "diginetica"
    expected = "';'-separated 'session_id;user_id;item_id;timeframe;eventdate' rows"
    format_help = ("train-item-views.csv of the CIKM Cup 2016, or its folder (download the DIGINETICA data and set "
                   "data.path=/folder/or/file)")

    def required_files(self) -> list[tuple[str, ...]]:
        return [("train-item-views.csv", "*train-item-views.csv")]

    def read_events(self) -> SessionEvents:
        p = self.file()
        columns = [Column("session_id", "session", "int"), Column("item_id", "item", "int"),
                   Column("timeframe", "timeframe", "float"), Column("eventdate", "eventdate", "time", "date")]
        s, i, frame, date = read_columns(p, columns, sep=";", expected=self.expected)
        if len(i) == 0:
            raise DataError(f"{p}: no events; expected {self.expected}")
        return SessionEvents.from_ids(s, i, date + frame / 1000.0, str(p))


class CsvSessionSource(EventFileSource):
    """``data=csv_sessions``: any delimited file with a column mapping.

    Either a session column, or (``session_column: null``) a user column whose time-ordered events are cut
    into sessions after ``session_gap`` seconds of inactivity. Columns are header names (``header: true``)
    or 0-based indices; session, user and item ids are labels as written. ``time_format``: ``unix`` (seconds),
    ``unix_ms``, ``iso`` (``2014-04-07T10:51:09.277Z``) or ``date`` (``2016-05-09``). Then the GRU4Rec
    preprocessing (``preprocessing``).
    """

    folder_ok = False
    format_help = "a delimited file with session (or user), item and time columns"

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
        self.name = name
        super().__init__(path, preprocessing)
        self.columns = {"session": session_column, "user": user_column, "item": item_column, "time": time_column}
        self.session_gap = session_gap
        self.delimiter = delimiter
        self.header = header
        self.time_format = time_format

    def required_files(self) -> list[str]:
        return ["events"]

    def fingerprint(self) -> dict[str, Any]:
        return {"source": "csv_sessions", "version": 1, "file": file_identity(self.file()), "columns": self.columns,
                "session_gap": self.session_gap, "delimiter": self.delimiter, "header": self.header,
                "time_format": self.time_format, "preprocessing": self.preprocessing.as_dict()}

    def read_events(self) -> SessionEvents:
        p = self.file()
        keys = ["session" if self.columns["session"] is not None else "user", "item", "time"]
        columns = []
        for key in keys:
            col = self.columns[key]
            if not self.header and not isinstance(col, int):
                raise ConfigError(f"data.source.{key}_column={col!r}: without a header, columns are 0-based indices")
            columns.append(Column(col, key, "time" if key == "time" else "label", self.time_format,
                                  config=f"data.source.{key}_column"))
        expected = f"{self.delimiter!r}-separated rows with {keys[0]}, item and time ({self.time_format}) columns"
        who, items, seconds = read_columns(p, columns, sep=self.delimiter, header=self.header, expected=expected)
        if len(items) == 0:
            raise DataError(f"{p}: no events; expected {expected}")
        if keys[0] == "user":
            who = sessions_from_user_events(who, seconds, float(self.session_gap))
        return SessionEvents.from_ids(who, items, seconds, str(p))


class MovieLensSessionSource:
    """``data=ml_1m_sessions``: MovieLens-1M ratings (read, and downloaded into ``download_dir`` when ``data.path``
    is not set, by the graph data's :class:`~recsys.data.sources.movielens.MovieLensSource`) cut into sessions: a
    user's ratings in time order start a new session after ``session_gap`` seconds without a rating. Then the
    GRU4Rec preprocessing, so GRU4Rec runs on user–item data. ``rating_threshold`` keeps ratings ``>=`` it (null:
    all).
    """

    name = "ml_1m_sessions"

    def __init__(self, path: str | None = None, download_dir: str | None = None, variant: str = "1m",
                 session_gap: float = 3600.0, rating_threshold: float | None = None,
                 preprocessing: dict[str, Any] | None = None) -> None:
        self.reader = MovieLensSource(variant=variant, path=path, download_dir=download_dir)
        self.variant = variant
        self.session_gap = float(session_gap)
        if not self.session_gap > 0:
            raise ConfigError(f"data.source.session_gap must be > 0 seconds, got {session_gap}")
        self.rating_threshold = rating_threshold
        self.preprocessing = _preprocessing(preprocessing)
        self.name = f"ml_{variant.replace('-', '_')}_sessions"

    def fingerprint(self) -> dict[str, Any]:
        return {"source": self.name, "version": 1, "session_gap": self.session_gap,
                "rating_threshold": self.rating_threshold, "preprocessing": self.preprocessing.as_dict(),
                "files": self.reader.file_identities()}

    def read_events(self) -> SessionEvents:
        inter = self.reader.read(self.reader.files())
        keep = np.ones(len(inter.users), dtype=bool)
        if self.rating_threshold is not None and inter.ratings is not None:
            keep = inter.ratings >= self.rating_threshold
        users, items, times = inter.users[keep], inter.item_ids[inter.items[keep]], inter.times[keep]
        sessions = sessions_from_user_events(users, times, self.session_gap)
        return SessionEvents.from_ids(sessions, items, times, inter.origin)

    def build(self) -> SessionSplits:
        splits = preprocess_sessions(self.read_events(), self.preprocessing)
        splits.meta["source"] = self.name
        return splits


__all__ = [
    "CsvSessionSource", "DigineticaSource", "EventFileSource", "MovieLensSessionSource", "PreparedSessionSource",
    "YoochooseClicksSource",
]
