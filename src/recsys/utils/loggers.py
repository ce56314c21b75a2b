"""The CSV logger of every run (``<run>/csv/metrics.csv``), written so that it survives resumes and multi-process
stages."""

from __future__ import annotations

import csv
import io
from argparse import Namespace
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.core.saving import save_hparams_to_yaml
from pytorch_lightning.loggers.logger import Logger
from pytorch_lightning.utilities import rank_zero_only

from recsys.io import atomic_write_text

METRICS_FILE = "metrics.csv"


class CSVLogger(Logger):
    """Metrics to ``<save_dir>/<name>/<version>/metrics.csv`` (a row per logging call: ``step`` and the logged
    values, columns sorted, blanks where a row has no value) and hyper-parameters to ``hparams.yaml``: the layout
    of Lightning's CSVLogger, from a writer of our own that

    * counts the columns already in the file as known: with ``ddp_spawn`` each stage (fit, test) runs in freshly
      spawned workers that never saw the columns the other stage wrote, and every column is kept;
    * continues an existing ``metrics.csv`` when ``append`` is set (by ``recsys.train`` for a resumed run); a new
      run replaces it.

    Rows are buffered and written every ``flush_logs_every_n_steps`` logging calls, on :meth:`save` and at the end.
    Rank 0 writes; a header change rewrites the file atomically.
    """

    def __init__(self, save_dir: str | Path, name: str = "csv", version: int | str = "",
                 flush_logs_every_n_steps: int = 100) -> None:
        super().__init__()
        self._root = Path(save_dir) / name
        self._name, self._version = name, version
        self.flush_logs_every_n_steps = flush_logs_every_n_steps
        self.append = False
        self.rows: list[dict[str, Any]] = []
        self.opened = False  # whether this run has taken metrics.csv over (replaced it, or continues it)

    @property
    def name(self) -> str:
        return self._name

    @property
    def version(self) -> int | str:
        return self._version

    @property
    def save_dir(self) -> str:
        return str(self._root.parent)

    @property
    def log_dir(self) -> str:
        return str(self._root / str(self._version)) if str(self._version) else str(self._root)

    @property
    def metrics_file(self) -> Path:
        return Path(self.log_dir) / METRICS_FILE

    def _open(self) -> None:
        """A new run starts its own ``metrics.csv``; a resumed one (``append``) continues it."""
        if not self.opened:
            Path(self.log_dir).mkdir(parents=True, exist_ok=True)
            if not self.append:
                self.metrics_file.unlink(missing_ok=True)
            self.opened = True

    @rank_zero_only
    def log_hyperparams(self, params: Mapping[str, Any] | Namespace) -> None:
        self._open()
        params = vars(params) if isinstance(params, Namespace) else params
        save_hparams_to_yaml(Path(self.log_dir) / "hparams.yaml", params)

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        row = {k: v.item() if isinstance(v, torch.Tensor) else v for k, v in metrics.items()}
        row["step"] = step if step is not None else len(self.rows)
        self.rows.append(row)
        if len(self.rows) >= self.flush_logs_every_n_steps:
            self.save()

    @rank_zero_only
    def save(self) -> None:
        self._open()
        if not self.rows:
            return
        path = self.metrics_file
        old_rows: list[dict[str, str]] = []
        header: list[str] = []
        if path.is_file():
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                header = list(reader.fieldnames or [])
                new_keys = {k for row in self.rows for k in row} - set(header)
                if new_keys:
                    old_rows = list(reader)
        else:
            new_keys = {k for row in self.rows for k in row}
        if not new_keys:  # the same columns: append
            with open(path, "a", newline="") as f:
                csv.DictWriter(f, fieldnames=header).writerows(self.rows)
        else:  # new columns: the whole file again, under the wider header
            fields = sorted(set(header) | new_keys)
            atomic_write_text(path, _csv_text(fields, [*old_rows, *self.rows]))
        self.rows = []

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self.save()


def _csv_text(fields: list[str], rows: list[Mapping[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
