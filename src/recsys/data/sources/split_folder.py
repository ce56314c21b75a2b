"""``data=gowalla|yelp2018|amazon_book``: the NGCF/LightGCN split folders.

Format: ``train.txt`` and ``test.txt``, one line per user ``user item item …`` (single spaces, 0-based ids).
A line holding only a user id (possibly with trailing spaces; Amazon-Book's test file has four) is a user
with no items. When ``user_list.txt``/``item_list.txt`` are present (header ``org_id remap_id …``, one entry per
line), every id must be below their number of entries. Parsing is vectorised
(:mod:`recsys.data.sources.int_tokens`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recsys.data.preprocess import TEST, TRAIN, Interactions
from recsys.data.sources.files import FileGraphSource, RemoteFile
from recsys.data.sources.int_tokens import first_token_flags, parse_int_tokens
from recsys.data.sources.text import read_bytes
from recsys.errors import ConfigError, DataError

LIGHTGCN = "https://raw.githubusercontent.com/kuandeng/LightGCN/b067ec05f16a24e0e1efe63cd82385f0c469af20/Data"
LIGHTGCN_PYTORCH = (
    "https://raw.githubusercontent.com/gusye1234/LightGCN-PyTorch/947ca2b3b1d2d3545b114145710cb06c4e57b3d2/data"
)

# Checksums are pinned only where they were computed from a copy of the file (../shared/datasets/README.md):
# sha256 for Gowalla, git blob ids for the Yelp2018 and Amazon-Book train files, none for their test files.
REMOTE: dict[str, dict[str, RemoteFile]] = {
    "gowalla": {
        "train.txt": RemoteFile(f"{LIGHTGCN}/gowalla/train.txt",
                                "sha256:7244696fdeb23911319cf7b689f2e15a3c4c92549c873a5677b44e3f13cc3e62"),
        "test.txt": RemoteFile(f"{LIGHTGCN_PYTORCH}/gowalla/test.txt",
                               "sha256:099a2a73924e4b754dc6efd730d764f492321b53c38eb93298850c83acf57be3"),
    },
    "yelp2018": {
        "train.txt": RemoteFile(f"{LIGHTGCN}/yelp2018/train.txt", "git-blob:cda12361055ba448ae4bd1070f6000c16dea8f22"),
        "test.txt": RemoteFile(f"{LIGHTGCN}/yelp2018/test.txt", None),
    },
    "amazon-book": {
        "train.txt": RemoteFile(f"{LIGHTGCN}/amazon-book/train.txt",
                                "git-blob:6ef55159c5f1fd7f6d86eb9ff290d0cc2854ac99"),
        "test.txt": RemoteFile(f"{LIGHTGCN}/amazon-book/test.txt", None),
    },
}

EXPECTED = "lines 'user item item ...' of non-negative integer ids separated by spaces"


@dataclass
class UserLines:
    """One parsed split file: the user of every non-empty line (and its 0-based line), the (user, item)
    pairs and the 0-based line of every pair."""

    line_users: np.ndarray
    user_lines: np.ndarray
    users: np.ndarray
    items: np.ndarray
    item_lines: np.ndarray


def read_user_lines(path: Path) -> UserLines:
    """Parse one ``user item item …`` file without a Python loop per token or line."""
    tokens = parse_int_tokens(read_bytes(path), path, EXPECTED)
    first = first_token_flags(tokens)
    line_users = tokens.values[first]
    group = np.cumsum(first) - 1
    is_item = ~first
    return UserLines(line_users, tokens.line[first], line_users[group[is_item]], tokens.values[is_item],
                     tokens.line[is_item])


def count_list_entries(path: Path) -> int:
    """Number of entries of a ``user_list.txt``/``item_list.txt`` (non-blank lines after the header)."""
    buf = np.frombuffer(read_bytes(path), dtype=np.uint8)
    if len(buf) == 0:
        raise DataError(f"{path}: empty file; expected a header 'org_id remap_id' and one line per id")
    bounds = np.concatenate([[-1], np.flatnonzero(buf == 10), [len(buf)]])
    # non-whitespace bytes per line, from a cumulative count
    nonspace = np.concatenate([[0], np.cumsum(~np.isin(buf, (9, 10, 13, 32)))])
    per_line = nonspace[bounds[1:]] - nonspace[bounds[:-1] + 1]
    return int((per_line > 0).sum()) - 1  # minus the header


class SplitFolderSource(FileGraphSource):
    """A LightGCN/NGCF split folder (``train.txt``, ``test.txt``; optional ``user_list.txt``/``item_list.txt``).

    ``dataset`` names a known download (``gowalla``, ``yelp2018``, ``amazon-book``); with ``data.path`` any
    folder in this format is read. The split defaults to ``given`` (the files' own train/test).
    """

    version = 1
    format_help = (
        "a folder with train.txt and test.txt, one line per user 'user item item ...' (0-based ids), "
        "as in the LightGCN/NGCF repositories"
    )

    def __init__(self, dataset: str | None = None, **kwargs: Any) -> None:
        if dataset is not None and dataset not in REMOTE:
            raise ConfigError(f"data.source.dataset={dataset!r} is not one of {sorted(REMOTE)} (or null with data.path)")
        self.dataset = dataset
        self.name = (dataset or "split_folder").replace("-", "_")
        super().__init__(**kwargs)

    def params(self) -> dict[str, Any]:
        return {"dataset": self.dataset}

    def required_files(self) -> list[str]:
        return ["train.txt", "test.txt"]

    def optional_files(self) -> list[str]:
        return ["user_list.txt", "item_list.txt"]

    def remote_files(self) -> dict[str, RemoteFile]:
        return REMOTE.get(self.dataset or "", {})

    def read(self, files: dict[str, Path]) -> Interactions:
        parsed = {name: read_user_lines(files[name]) for name in ("train.txt", "test.txt")}
        line_users = np.concatenate([f.line_users for f in parsed.values()])
        users = np.concatenate([f.users for f in parsed.values()])
        items = np.concatenate([f.items for f in parsed.values()])
        if len(items) == 0:
            raise DataError(f"{files['train.txt']}: no interactions (every line holds only a user id)")
        for kind in ("user", "item"):
            list_name = f"{kind}_list.txt"
            if list_name not in files:
                continue
            limit = count_list_entries(files[list_name])
            for name in ("train.txt", "test.txt"):
                f = parsed[name]
                ids, lines = (f.line_users, f.user_lines) if kind == "user" else (f.items, f.item_lines)
                bad = np.flatnonzero(ids >= limit)
                if len(bad):
                    raise DataError(
                        f"{files[name]}, line {int(lines[bad[0]]) + 1}: {kind} id {int(ids[bad[0]])} is beyond "
                        f"{list_name} ({limit} entries, ids 0..{limit - 1}); expected ids listed there"
                    )
        part = np.concatenate([np.full(len(parsed["train.txt"].users), TRAIN, dtype=np.int8),
                               np.full(len(parsed["test.txt"].users), TEST, dtype=np.int8)])
        # ids are factorised (not np.arange(max + 1)), so one stray huge id cannot allocate a huge table;
        # users listed with no items keep their id until the final re-indexing drops them
        user_ids = np.unique(line_users)
        item_ids = np.unique(items)
        return Interactions(users=np.searchsorted(user_ids, users), items=np.searchsorted(item_ids, items),
                            user_ids=user_ids, item_ids=item_ids, part=part, origin=str(files["train.txt"].parent))

