"""The recommend task: ``python recommend.py`` (``configs/recommend.yaml``) is :func:`main`.

It validates the request, loads the run (:func:`recsys.runs.load_run`) and asks it for top-k rows, ranked with the
evaluation's scoring and tie rule (:func:`recsys.metrics.topk_excluding`):

* users (graph models): the excluded items are train ∪ validation by default (``exclude_seen``); with
  ``retrieval=faiss`` the rows come from an export's FAISS index (:class:`recsys.export.FaissRetriever`);
* sessions (session models): the next item after each prefix; as in evaluation, items of the prefix are not
  excluded unless asked.

Rows are ``user, rank, item, score`` (``session, rank, item, score`` for sessions) in the dataset's original ids;
:func:`write_rows` streams chunks of rows to ``.csv``/``.json``/``.parquet`` through a temporary file renamed at
the end (never a partial output file), else they are printed. :func:`prefix_loader` feeds session prefixes to
``trainer.predict``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, ListConfig
from torch.utils.data import DataLoader
from tqdm import tqdm

from recsys.errors import ConfigError, DataError
from recsys.export import FaissRetriever
from recsys.io import atomic_write
from recsys.models.session_recommender import pad_prefixes
from recsys.runs import iter_chunks, load_run
from recsys.utils.run import run_task

log = logging.getLogger(__name__)

OUTPUT_FORMATS = (".csv", ".json", ".parquet")
USER_COLUMNS = ["user", "rank", "item", "score"]
SESSION_COLUMNS = ["session", "rank", "item", "score"]


# -- input -----------------------------------------------------------------------------------------
def prefix_loader(prefixes: Sequence[Sequence[int]], batch_size: int = 1024) -> DataLoader:
    """Batches ``{"prefixes", "lengths"}`` of internal item-id prefixes for ``trainer.predict`` on a session model."""
    arrays = [np.asarray(p, dtype=np.int64) for p in prefixes]
    batches = [dict(zip(("prefixes", "lengths"), pad_prefixes(arrays[part]), strict=True))
               for part in iter_chunks(len(arrays), batch_size)]
    return DataLoader(batches, batch_size=None)


def read_sessions_file(path: str | Path) -> list[list[str]]:
    """One prefix per line, ids separated by whitespace or commas; blank lines and ``#`` comments skipped."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"sessions={str(path)!r}: no such file")
    prefixes = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].replace(",", " ").split()
        if line:
            prefixes.append(line)
    if not prefixes:
        raise DataError(f"sessions={str(path)!r}: no session prefix in the file (one per line)")
    return prefixes


# -- output ----------------------------------------------------------------------------------------
def check_output_path(output: str | Path) -> Path:
    """``output`` as a path, if it names a ``.csv``/``.json``/``.parquet`` file that can be written (pyarrow for
    Parquet); else a ``ConfigError``."""
    path = Path(output)
    if path.suffix.lower() not in OUTPUT_FORMATS:
        raise ConfigError(f"output={str(output)!r}: expected a file ending in {', '.join(OUTPUT_FORMATS)}")
    if path.is_dir():
        raise ConfigError(f"output={str(output)!r} is a folder; give a file name")
    if path.suffix.lower() == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError as err:
            raise ConfigError(f"output={str(output)!r}: Parquet needs pyarrow (pip install -e \".[parquet]\")") from err
    return path


def write_rows(output: str | Path, chunks: Iterable[pd.DataFrame], columns: Sequence[str]) -> int:
    """Stream row chunks to ``output`` (format by suffix) via a temporary file renamed at the end; returns the row
    count. An error while producing the chunks leaves no file behind."""
    path = check_output_path(output)
    suffix = path.suffix.lower()
    count = 0

    def write(f: Any) -> None:
        nonlocal count
        if suffix == ".csv":
            f.write((",".join(columns) + "\n").encode())
            for chunk in chunks:
                f.write(chunk.to_csv(index=False, header=False).encode())
                count += len(chunk)
        elif suffix == ".json":
            f.write(b"[")
            first = True
            for chunk in chunks:
                if len(chunk):
                    text = chunk.to_json(orient="records")[1:-1]
                    f.write((text if first else "," + text).encode())
                    first = False
                count += len(chunk)
            f.write(b"]\n")
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            writer = None
            try:
                for chunk in chunks:
                    table = pa.Table.from_pandas(chunk[list(columns)], preserve_index=False)
                    if writer is None:
                        writer = pq.ParquetWriter(f, table.schema)
                    writer.write_table(table)
                    count += len(chunk)
            finally:
                if writer is not None:
                    writer.close()
            if writer is None:  # no chunk: still a valid, empty file
                pq.write_table(pa.table({c: pa.array([], pa.string()) for c in columns}), f)

    atomic_write(path, write)
    return count


def _progress(iterable: Iterable[Any], total: int, enabled: bool, desc: str) -> Iterable[Any]:
    if not enabled:
        return iterable
    return tqdm(iterable, total=total, desc=desc, unit="chunk", file=sys.stderr)


# -- the CLI ---------------------------------------------------------------------------------------
def _as_list(value: Any, key: str) -> list[Any] | str:
    if isinstance(value, (ListConfig, list, tuple)):
        return list(value)
    if isinstance(value, str) and value == "all":
        return value
    if isinstance(value, (str, int)):
        return [value]
    raise ConfigError(f"{key}={value!r}: expected a list of ids, e.g. {key}=[id1,id2]" + (" or all" if key == "users" else ""))


def recommend_from_config(cfg: DictConfig) -> dict[str, Any]:
    """``python recommend.py``: validate the request, load the run, write or print the rows."""
    output = cfg.get("output")
    if output:
        check_output_path(output)
    k = int(cfg.k)
    if k < 1:
        raise ConfigError(f"k={k}: expected a positive integer")
    queries = [key for key in ("users", "session", "sessions") if cfg.get(key) is not None]
    if len(queries) != 1:
        raise ConfigError("give exactly one of users=[...] / users=all (graph models), session=[...] or "
                          f"sessions=<file> (session models); got {queries or 'none'}")
    query = queries[0]
    if query == "sessions" and not Path(str(cfg.sessions)).is_file():
        raise DataError(f"sessions={str(cfg.sessions)!r}: no such file")
    run = load_run(cfg.ckpt_path, data=cfg.get("data"), device=cfg.get("device", "cpu"))
    retrieval = str(cfg.get("retrieval") or "exact")
    if retrieval not in ("exact", "faiss"):
        raise ConfigError(f"retrieval={retrieval!r}: expected exact or faiss")
    chunk = int(cfg.get("chunk_size") or 1024)
    exclude = cfg.get("exclude_seen")
    progress = bool(cfg.get("progress", True))

    if query == "users":
        users = _as_list(cfg.users, "users")
        exclude = True if exclude is None else bool(exclude)
        if retrieval == "faiss":
            if not cfg.get("index_path"):
                raise ConfigError("retrieval=faiss needs index_path=<folder written by scripts/export_embeddings.py index=faiss>")
            retriever = FaissRetriever(cfg.index_path, run)
            internal = np.arange(run.num_users) if users == "all" else run.user_map.to_internal(users, "users")
            chunks = retriever.iter_recommend(internal, k, exclude, chunk)
            total = -(-len(internal) // chunk)
        elif users == "all":
            chunks = run.iter_recommend_all(k, exclude_seen=exclude, chunk_size=chunk)
            total = -(-run.num_users // chunk)
        else:
            chunks = iter([run.recommend(users, k, exclude_seen=exclude, chunk_size=chunk)])
            total = 1
        columns = USER_COLUMNS
    else:
        if retrieval == "faiss":
            raise ConfigError("retrieval=faiss answers user queries (users=...) only; drop it for session=/sessions=")
        prefixes = [_as_list(cfg.session, "session")] if query == "session" else read_sessions_file(cfg.sessions)
        exclude = False if exclude is None else bool(exclude)
        frame = run.recommend_sessions(prefixes, k, exclude_seen=exclude, chunk_size=chunk)
        chunks, total, columns = iter([frame]), 1, SESSION_COLUMNS
    chunks = _progress(chunks, total, progress and total > 1, "recommend")
    if output:
        count = write_rows(output, chunks, columns)
        log.info("Wrote %d rows to %s", count, output)
        print(f"wrote {count} rows to {output}")
        return {"rows": count, "output": str(output)}
    count = 0
    for i, frame in enumerate(chunks):
        print(frame.to_string(index=False, header=i == 0))
        count += len(frame)
    return {"rows": count}


def main(cfg: DictConfig) -> None:
    """Hydra task of ``recommend.py``."""
    run_task(recommend_from_config, cfg)
