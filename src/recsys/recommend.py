"""Top-k recommendations from a trained run, with the evaluation's scoring and tie rule.

* users (graph models): ``score_users`` on the users, the excluded items (train ∪ validation by default) set to
  −∞ as :meth:`~recsys.models.ranking_module.TopKRecommender.evaluate_batch` does, then
  :func:`~recsys.metrics.rank_topk` (ties → lower item id). Scores are float32.
* sessions (session models): the prefix is fed step by step through ``eval_scores`` (the evaluation path:
  one lane per prefix, state reset at the first item), the scores after the last item are ranked by
  :func:`~recsys.metrics.rank_topk`. As in evaluation, items of the prefix are not excluded unless asked.

Rows are ``user, rank, item, score`` (``session, rank, item, score`` for sessions) in the dataset's original ids;
:func:`write_rows` streams chunks of rows to ``.csv``/``.json``/``.parquet`` through a temporary file renamed at
the end (never a partial output file). ``python recommend.py`` (``configs/recommend.yaml``) is :func:`main`.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from recsys.errors import ConfigError, DataError
from recsys.info import UserItemCSR
from recsys.io import atomic_write
from recsys.metrics import rank_topk

if TYPE_CHECKING:
    from omegaconf import DictConfig


log = logging.getLogger(__name__)

OUTPUT_FORMATS = (".csv", ".json", ".parquet")
USER_COLUMNS = ["user", "rank", "item", "score"]
SESSION_COLUMNS = ["session", "rank", "item", "score"]


# -- scoring ---------------------------------------------------------------------------------------
def topk_users(
    model: Any, users: torch.Tensor, k: int, exclude: UserItemCSR | None = None,
    mask: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` items ``(B, k)`` and their float32 scores of ``users`` (internal ids); ``model.prepare_scoring()``
    must have run. The items of ``exclude`` (rows = users) or the ``mask`` pairs ``(batch_row, item)`` are set to
    −∞ first; excluded items that still enter the top k (fewer than k allowed items) keep score −∞."""
    scores = model.score_users(users).float()
    if exclude is not None:
        mask = exclude.gather_rows(users.cpu())
    if mask is not None:
        scores[mask[0].to(scores.device), mask[1].to(scores.device)] = -torch.inf
    k = min(k, scores.shape[1])
    top = rank_topk(scores, k)
    return top, torch.gather(scores, 1, top)


def session_prefix_scores(model: Any, prefixes: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Scores ``(S, N)`` of the next item after each prefix (``prefixes`` ``(S, L)`` internal ids, padded beyond
    ``lengths``), computed by the model's evaluation step ``eval_scores``: one lane per prefix, reset at the first
    item, one vectorised step per position (not per session)."""
    n = prefixes.shape[0]
    device = model.device
    prefixes, lengths = prefixes.to(device), lengths.to(device)
    out: torch.Tensor | None = None
    model.reset_eval_state()
    try:
        for t in range(int(lengths.max())):
            lanes = (lengths > t).nonzero().squeeze(1)
            batch = {"inputs": prefixes[lanes, t], "lanes": lanes, "reset": torch.full_like(lanes, t == 0, dtype=torch.bool),
                     "targets": torch.zeros_like(lanes)}
            scores = model.eval_scores(batch).float()
            if out is None:
                out = torch.empty(n, scores.shape[1], device=device)
            last = lengths[lanes] == t + 1
            out[lanes[last]] = scores[last]
    finally:
        model.reset_eval_state()
    assert out is not None
    return out


def topk_sessions(model: Any, prefixes: torch.Tensor, lengths: torch.Tensor, k: int,
                  exclude_seen: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` next items ``(S, k)`` and float32 scores after each prefix (ties → lower item id); with
    ``exclude_seen`` the prefix's own items are set to −∞."""
    scores = session_prefix_scores(model, prefixes, lengths)
    if exclude_seen:
        valid = torch.arange(prefixes.shape[1], device=scores.device)[None, :] < lengths.to(scores.device)[:, None]
        rows = torch.arange(prefixes.shape[0], device=scores.device)[:, None].expand_as(prefixes)[valid]
        scores[rows, prefixes.to(scores.device)[valid]] = -torch.inf
    k = min(k, scores.shape[1])
    top = rank_topk(scores, k)
    return top, torch.gather(scores, 1, top)


def pad_prefixes(prefixes: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(S, L)`` int64 tensor of the prefixes (padded with 0) and their lengths ``(S,)``."""
    lengths = np.array([len(p) for p in prefixes], dtype=np.int64)
    flat = np.concatenate(prefixes).astype(np.int64) if len(prefixes) else np.zeros(0, np.int64)
    padded = np.zeros((len(prefixes), int(lengths.max(initial=1))), dtype=np.int64)
    padded[np.arange(padded.shape[1])[None, :] < lengths[:, None]] = flat
    return torch.from_numpy(padded), torch.from_numpy(lengths)


def prefix_loader(prefixes: Sequence[Sequence[int]], batch_size: int = 1024) -> DataLoader:
    """Batches ``{"prefixes", "lengths"}`` of internal item-id prefixes for ``trainer.predict`` on a session model."""
    arrays = [np.asarray(p, dtype=np.int64) for p in prefixes]
    batches = [dict(zip(("prefixes", "lengths"), pad_prefixes(arrays[part]), strict=True))
               for part in iter_chunks(len(arrays), batch_size)]
    return DataLoader(batches, batch_size=None)


def rows_frame(key_name: str, keys: np.ndarray, items: np.ndarray, scores: np.ndarray) -> pd.DataFrame:
    """Long-format rows ``key, rank (1-based), item, score`` of ``(B, k)`` id/score arrays, dropping −∞ scores
    (excluded items that only filled a short list)."""
    b, k = items.shape
    frame = pd.DataFrame({
        key_name: np.repeat(keys, k), "rank": np.tile(np.arange(1, k + 1), b),
        "item": items.reshape(-1), "score": scores.reshape(-1).astype(np.float32),
    })
    return frame[np.isfinite(frame["score"].to_numpy())].reset_index(drop=True)


# -- ids -------------------------------------------------------------------------------------------
class IdMap:
    """Original ids (strings) ↔ internal dense ids, vectorised (a sorted copy + ``searchsorted``)."""

    def __init__(self, ids: np.ndarray | None, size: int, kind: str) -> None:
        self.ids = np.asarray(ids).astype(str) if ids is not None else np.arange(size).astype(str)
        if len(self.ids) != size:
            raise DataError(f"the cached dataset has {len(self.ids)} {kind} ids for {size} {kind}s; delete the cache")
        self.kind = kind
        self._order = np.argsort(self.ids, kind="stable")
        self._sorted = self.ids[self._order]

    def __len__(self) -> int:
        return len(self.ids)

    def to_internal(self, original: Iterable[Any], what: str | None = None) -> np.ndarray:
        """Internal ids of ``original`` (compared as strings); unknown ids → :class:`DataError` listing ≤ 10."""
        query = np.asarray([str(x) for x in original], dtype=str)
        if query.size == 0:
            return np.zeros(0, dtype=np.int64)
        pos = np.searchsorted(self._sorted, query).clip(max=len(self._sorted) - 1)
        found = self._sorted[pos] == query
        if not found.all():
            unknown = list(dict.fromkeys(query[~found].tolist()))
            shown = ", ".join(repr(u) for u in unknown[:10]) + (f" … ({len(unknown)} in all)" if len(unknown) > 10 else "")
            raise DataError(f"{what or self.kind + 's'}: unknown {self.kind} id(s) {shown}; the dataset has "
                            f"{len(self)} {self.kind}s (e.g. {', '.join(repr(x) for x in self.ids[:3].tolist())})")
        return self._order[pos].astype(np.int64)

    def to_original(self, internal: np.ndarray) -> np.ndarray:
        return self.ids[np.asarray(internal)]


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
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="chunk", file=sys.stderr)


# -- the CLI ---------------------------------------------------------------------------------------
def _as_list(value: Any, key: str) -> list[Any] | str:
    from omegaconf import ListConfig

    if isinstance(value, (ListConfig, list, tuple)):
        return list(value)
    if isinstance(value, str) and value == "all":
        return value
    if isinstance(value, (str, int)):
        return [value]
    raise ConfigError(f"{key}={value!r}: expected a list of ids, e.g. {key}=[id1,id2]" + (" or all" if key == "users" else ""))


def recommend_from_config(cfg: DictConfig) -> dict[str, Any]:
    """``python recommend.py``: validate the request, load the run, write or print the rows."""
    from recsys.api import load_run

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
            from recsys.export import FaissRetriever

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
    from recsys.utils.run import run_task

    run_task(recommend_from_config, cfg)


def iter_chunks(n: int, size: int) -> Iterator[slice]:
    if size < 1:
        raise ConfigError(f"chunk_size={size}: expected a positive integer")
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))
