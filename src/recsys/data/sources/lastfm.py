"""``data=lastfm``: the Last.fm split shipped with LightGCN-PyTorch (``data/lastfm``).

``data1.txt`` (train, CRLF lines) and ``test1.txt`` (test): tab-separated ``user item weight`` with **1-based**
ids (the LightGCN-PyTorch loader subtracts 1); the weight (a listening count) is kept as the rating column,
so ``rating_threshold`` can filter on it, and is otherwise ignored (binary interactions). The weight can
be written in scientific notation (``3.2466e+05``), so the files are read with pandas' C parser.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from recsys.data.preprocess import TEST, TRAIN, Interactions
from recsys.data.sources.columns import integer_column, numeric_column
from recsys.data.sources.delimited import read_table
from recsys.data.sources.files import FileGraphSource, RemoteFile
from recsys.data.sources.split_folder import LIGHTGCN_PYTORCH
from recsys.errors import DataError

REMOTE = {
    "data1.txt": RemoteFile(f"{LIGHTGCN_PYTORCH}/lastfm/data1.txt",
                            "sha256:c82af3228cbbda2f55a39244de09ed93292894f1d0d9f1908ebb57e27598fded"),
    "test1.txt": RemoteFile(f"{LIGHTGCN_PYTORCH}/lastfm/test1.txt",
                            "sha256:de4417c0e6123284ce59a0934bcf5288ec1ec8774a18a1eef453c9952dfa48f9"),
}
EXPECTED = "tab-separated 'user item weight' rows with 1-based integer ids"


class LastFMSource(FileGraphSource):
    """LightGCN-PyTorch's Last.fm files (``data1.txt`` train, ``test1.txt`` test)."""

    name = "lastfm"
    version = 1
    format_help = "a folder with data1.txt and test1.txt (tab-separated 'user item weight', 1-based ids)"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)

    def required_files(self) -> list[str]:
        return ["data1.txt", "test1.txt"]

    def remote_files(self) -> dict[str, RemoteFile]:
        return REMOTE

    def read(self, files: dict[str, Path]) -> Interactions:
        tables = [(read_table(files[name], [0, 1, 2], sep="\t", header=False, expected=EXPECTED), part)
                  for name, part in (("data1.txt", TRAIN), ("test1.txt", TEST))]
        users = np.concatenate([integer_column(t, 0, "user", minimum=1) for t, _ in tables])
        items = np.concatenate([integer_column(t, 1, "item", minimum=1) for t, _ in tables])
        weights = np.concatenate([numeric_column(t, 2, "weight") for t, _ in tables])
        part = np.concatenate([np.full(len(t), p, dtype=np.int8) for t, p in tables])
        if len(users) == 0:
            raise DataError(f"{files['data1.txt']}: no interactions; expected {EXPECTED}")
        user_ids, item_ids = np.unique(users), np.unique(items)  # original 1-based ids, kept as they are
        return Interactions(
            users=np.searchsorted(user_ids, users), items=np.searchsorted(item_ids, items), user_ids=user_ids,
            item_ids=item_ids, ratings=weights, part=part, origin=str(files["data1.txt"].parent),
        )
