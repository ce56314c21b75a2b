"""Per-user (per-event) test results: ``per_user.parquet`` in the run folder, the input of paired significance tests.

Every test (``train.py``'s test stage, ``eval.py``) writes one row per evaluated unit with every metric@K of the
run (the columns of :attr:`recsys.metrics.TopKMetrics.row_columns`):

* graph data: one row per evaluated user, ``user`` = its original id;
* session data: one row per test event (a next-item prediction), ``session`` (original id) and ``position``
  (0-based position of the input event in the session), with ``recall@K`` and ``mrr@K``.

The means of the columns are the run's ``test/*`` values of ``metrics.json``. Under DDP every rank holds the rows
of its shard; :func:`gather_rows` collects them with the strategy's ``all_gather`` (padded to the longest rank)
and rank 0 writes them, sorted by the units' dense ids, so the file equals a one-process run's. Parquet needs
pyarrow; without it the same table is written as ``per_user.csv``. Files are written atomically.
:class:`recsys.utils.callbacks.PerUserResults` writes them; this module stays light (no torch until
:func:`gather_rows`), so ``scripts/compare.py`` starts fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from recsys.errors import DataError
from recsys.io import atomic_write

if TYPE_CHECKING:
    import torch

STEM = "per_user"
#: the file names, in the order they are looked for
FILE_NAMES = (f"{STEM}.parquet", f"{STEM}.csv")


def has_parquet() -> bool:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


def gather_rows(trainer: Any, ids: torch.Tensor, values: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Every rank's rows ``(ids (n, c), values (n, m))`` on every rank of the Lightning ``trainer`` (a collective:
    all ranks call it), sorted by ids (lexicographically): the same arrays whatever the number of processes. Ranks
    hold different numbers of rows (and a rank without rows has ``c = 0``): sizes are gathered first and the rows
    padded to the longest."""
    import torch

    if trainer.world_size > 1:
        gather = trainer.strategy.all_gather
        sizes = gather(torch.tensor([ids.shape[0], ids.shape[1]], device=values.device)).reshape(-1, 2).cpu()
        longest, width = int(sizes[:, 0].max()), int(sizes[:, 1].max())
        padded_ids = ids.new_zeros(longest, width)
        padded_ids[: ids.shape[0], : ids.shape[1]] = ids
        padded_values = values.new_zeros(longest, values.shape[1])
        padded_values[: values.shape[0]] = values
        all_ids, all_values = gather(padded_ids).cpu(), gather(padded_values).cpu()
        ids = torch.cat([all_ids[r, :n] for r, n in enumerate(sizes[:, 0].tolist())])
        values = torch.cat([all_values[r, :n] for r, n in enumerate(sizes[:, 0].tolist())])
    ids_np, values_np = ids.cpu().numpy(), values.cpu().numpy()
    order = np.lexsort(ids_np.T[::-1]) if ids_np.shape[1] else np.arange(len(ids_np))
    return ids_np[order], values_np[order]


def write_table(frame, folder: str | Path) -> Path:
    """Write ``frame`` as ``<folder>/per_user.parquet`` (``.csv`` without pyarrow), atomically; return the path."""
    path = Path(folder) / FILE_NAMES[0 if has_parquet() else 1]
    if path.suffix == ".parquet":
        atomic_write(path, lambda f: frame.to_parquet(f, index=False))
    else:
        atomic_write(path, lambda f: f.write(frame.to_csv(index=False).encode()))
    return path


def find_file(run_dir: str | Path) -> Path | None:
    """The per-user file of a run folder, or None."""
    return next((p for p in (Path(run_dir) / n for n in FILE_NAMES) if p.is_file()), None)


def read_table(run_dir: str | Path):
    """The per-user table of a run folder (pandas). Unit columns (those without ``@``) are read as strings, so
    files of either format compare equal; a missing or unreadable file raises :class:`DataError` naming it."""
    import pandas as pd

    path = find_file(run_dir)
    if path is None:
        raise DataError(f"{run_dir}: no {' or '.join(FILE_NAMES)} (written by the test of train.py or by eval.py)")
    try:
        frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype=str)
    except Exception as err:  # noqa: BLE001 - pyarrow/pandas raise many types for a damaged file
        raise DataError(f"{path}: not a readable per-user table ({type(err).__name__}: {err})") from err
    metrics = [c for c in frame.columns if "@" in c]
    units = [c for c in frame.columns if "@" not in c]
    if not metrics or not units:
        raise DataError(f"{path}: expected unit columns (user or session, position) and metric@K columns, "
                        f"got {list(frame.columns)}")
    frame[units] = frame[units].astype(str)
    try:
        frame[metrics] = frame[metrics].astype(np.float64)
    except ValueError as err:
        raise DataError(f"{path}: a metric column is not numeric ({err})") from err
    return frame
