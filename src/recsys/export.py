"""The export folder of a run: written by :func:`export_embeddings` (its final embeddings), served by
:class:`FaissRetriever` (approximate top-k from its FAISS inner-product index, for ``recommend.py
retrieval=faiss``). One module owns the format, both ways; the export task is ``scripts/export_embeddings.py``.

``python scripts/export_embeddings.py ckpt_path=<ckpt or run folder> output=<dir> [index=faiss]`` writes:

* ``users.npy`` ``(num_users, d)`` float32 and ``items.npy`` ``(num_items, d)`` float32: graph models' final
  embeddings (after propagation for LightGCN/NGCF, the tables for MF), so ``score(u, i) = users[u] · items[i]``;
  GRU4Rec: ``items.npy`` = ``[Wy | by]`` ``(num_items, H + 1)`` (output table and item bias,
  :meth:`GRU4RecNet.score_all`), scored by ``[h, 1] · items[i]`` with ``h`` the GRU output; SASRec: ``items.npy`` =
  the item table ``E`` ``(num_items, d)``, scored by ``F · items[i]`` with ``F`` the last position's output; session
  models write no ``users.npy``. Each model says what it exports
  (:meth:`~recsys.models.ranking_module.TopKRecommender.export_rows`);
* ``user_ids.csv`` / ``item_ids.csv`` (or ``.parquet`` with ``ids_format=parquet``): columns ``index, id``, the
  original id of every row;
* ``meta.json``: ``model``, ``dim``, ``dataset``, ``num_users``, ``num_items``, ``scoring`` (inner product),
  ``ckpt_path``, ``index`` (``items.faiss`` or null);
* with ``index=faiss`` (extra ``[serve]``): ``items.faiss``, a ``faiss.IndexFlatIP`` of the item rows.

The folder is written under a temporary name and renamed into place (never a partial export).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from recsys.errors import ConfigError, DataError
from recsys.metrics import topk_excluding
from recsys.runs import Run, iter_chunks, model_name, rows_frame

FAISS_HINT = 'retrieval with FAISS needs faiss-cpu: pip install -e ".[serve]"'
INDEX_FILE = "items.faiss"


def import_faiss() -> Any:
    """The ``faiss`` module (extra ``[serve]``); a ``ConfigError`` with the install hint without it."""
    try:
        import faiss
    except ImportError as err:
        raise ConfigError(FAISS_HINT) from err
    return faiss


def run_embeddings(run: Run) -> tuple[np.ndarray | None, np.ndarray, str]:
    """(user rows or None, item rows, how a query is formed) whose inner products are the model's scores: the
    model's :meth:`~recsys.models.ranking_module.TopKRecommender.export_rows`."""
    model = run.model
    with torch.no_grad():
        rows = model.export_rows() if hasattr(model, "export_rows") else None
    if rows is None:
        raise ConfigError(f"{type(model).__name__} has no embeddings to export (a popularity/co-occurrence baseline); "
                          "export a LightGCN, NGCF, MF, GRU4Rec or SASRec run")
    users, items, query = rows
    return None if users is None else _numpy(users), _numpy(items), query


def _numpy(rows: torch.Tensor) -> np.ndarray:
    return rows.detach().float().cpu().numpy()


def _write_ids(folder: Path, name: str, ids: np.ndarray, ids_format: str) -> str:
    frame = pd.DataFrame({"index": np.arange(len(ids)), "id": ids.astype(str)})
    if ids_format == "parquet":
        frame.to_parquet(folder / f"{name}.parquet", index=False)
        return f"{name}.parquet"
    frame.to_csv(folder / f"{name}.csv", index=False)
    return f"{name}.csv"


def export_embeddings(run: Run, output: str | Path, index: str | None = None, ids_format: str = "csv") -> dict[str, Any]:
    """Write the export folder (module docstring); returns ``meta.json``'s content."""
    if index not in (None, "none", "faiss"):
        raise ConfigError(f"index={index!r}: expected faiss or null")
    if ids_format not in ("csv", "parquet"):
        raise ConfigError(f"ids_format={ids_format!r}: expected csv or parquet")
    if ids_format == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError as err:
            raise ConfigError('ids_format=parquet needs pyarrow (pip install -e ".[parquet]")') from err
    faiss = import_faiss() if index == "faiss" else None
    output = Path(output)
    if output.exists() and (not output.is_dir() or (any(output.iterdir()) and not (output / "meta.json").is_file())):
        raise ConfigError(f"output={str(output)!r} exists and is not an earlier export (no meta.json); choose a new folder")
    users, items, query = run_embeddings(run)
    meta: dict[str, Any] = {
        "model": model_name(run.cfg.model) if run.cfg is not None else type(run.model).__name__,
        "dim": int(items.shape[1]),
        "dataset": str(getattr(run.datamodule.source, "name", "?")),
        "num_users": run.num_users if users is not None else None,
        "num_items": run.num_items,
        "scoring": "inner product",
        "query": query,
        "ckpt_path": str(run.ckpt_path) if run.ckpt_path else None,
        "index": INDEX_FILE if faiss is not None else None,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}.", suffix=".tmp"))
    try:
        np.save(tmp / "items.npy", np.ascontiguousarray(items, dtype=np.float32))
        meta["item_ids"] = _write_ids(tmp, "item_ids", run.item_map.ids, ids_format)
        if users is not None:
            np.save(tmp / "users.npy", np.ascontiguousarray(users, dtype=np.float32))
            meta["user_ids"] = _write_ids(tmp, "user_ids", run.user_map.ids, ids_format)
        if faiss is not None:
            flat = faiss.IndexFlatIP(items.shape[1])
            flat.add(np.ascontiguousarray(items, dtype=np.float32))
            faiss.write_index(flat, str(tmp / INDEX_FILE))
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        old = None
        if output.exists():
            old = output.with_name(f".{output.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            output.rename(old)
        tmp.rename(output)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


class FaissRetriever:
    """Top-k from an export folder's FAISS index: search ``k + max seen`` items per chunk of users, rank these
    candidates with the seen ones (train ∪ validation) excluded (:func:`~recsys.metrics.topk_excluding` over the
    candidate columns, which FAISS returns best first), keep the first ``k``. The user rows come from the export's
    ``users.npy``."""

    def __init__(self, folder: str | Path, run: Run) -> None:
        faiss = import_faiss()
        folder = Path(folder)
        meta_path = folder / "meta.json"
        if not meta_path.is_file():
            raise DataError(f"index_path={str(folder)!r}: no meta.json (write it with scripts/export_embeddings.py)")
        meta = json.loads(meta_path.read_text())
        if not (folder / INDEX_FILE).is_file():
            raise DataError(f"index_path={str(folder)!r}: no {INDEX_FILE}; export with index=faiss")
        if not (folder / "users.npy").is_file():
            raise ConfigError(f"index_path={str(folder)!r}: a {meta.get('model')} export has no user rows to query")
        if meta.get("num_items") != run.num_items or meta.get("num_users") != run.num_users:
            raise ConfigError(
                f"index_path={str(folder)!r} holds {meta.get('num_users')} users × {meta.get('num_items')} items but "
                f"the run's data has {run.num_users} × {run.num_items}: an export of another dataset"
            )
        self.index = faiss.read_index(str(folder / INDEX_FILE))
        self.users = np.load(folder / "users.npy", allow_pickle=False)
        self.run = run

    def search(self, users: np.ndarray, k: int, exclude_seen: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Internal item ids ``(B, k)`` (−1 where fewer remain) and float32 scores (−∞ there) for internal users."""
        k = min(k, self.run.num_items)
        seen = self.run.seen()
        extra = int(seen.degrees[torch.from_numpy(users)].max()) if exclude_seen and len(users) else 0
        width = min(k + extra, self.run.num_items)
        scores, items = self.index.search(np.ascontiguousarray(self.users[users], dtype=np.float32), width)
        drop = torch.from_numpy(items < 0)  # FAISS found fewer than `width` items
        if exclude_seen:
            rows = torch.from_numpy(users)[:, None].expand(-1, width)
            drop |= seen.contains(rows, torch.from_numpy(items.clip(min=0)))
        columns, top_scores = topk_excluding(torch.from_numpy(scores).float(), k, tuple(drop.nonzero().T))
        top_items = np.take_along_axis(items, columns.numpy(), 1)
        kept = torch.isfinite(top_scores).numpy()
        return np.where(kept, top_items, -1), top_scores.numpy()

    def iter_recommend(self, users: np.ndarray, k: int, exclude_seen: bool = True,
                       chunk_size: int = 1024) -> Iterator[pd.DataFrame]:
        """Rows ``user, rank, item, score`` (original ids) per chunk of internal ``users``."""
        for part in iter_chunks(len(users), chunk_size):
            chunk = np.asarray(users[part], dtype=np.int64)
            items, scores = self.search(chunk, k, exclude_seen)
            yield rows_frame("user", self.run.user_map.to_original(chunk),
                             self.run.item_map.to_original(items.clip(min=0)), scores)
