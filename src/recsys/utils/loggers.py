"""Logger variants that keep working when a run's stages happen in different processes (``ddp_spawn``)."""

from __future__ import annotations

import csv

from lightning_fabric.loggers.logger import rank_zero_experiment
from pytorch_lightning.loggers import CSVLogger as _LightningCSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter


class _HeaderMergingWriter(ExperimentWriter):
    """Lightning's CSV writer, plus: the columns already in ``metrics.csv`` count as known.

    With ``ddp_spawn`` each stage (fit, test) runs in freshly spawned workers holding a copy of the parent's
    writer, which never saw the columns the fit workers wrote; Lightning's writer then rewrites the file
    with only its own columns and fails (``dict contains fields not in fieldnames``). Merging the file's
    header first keeps every column of every stage.
    """

    def __init__(self, log_dir: str, append: bool = False) -> None:
        self.append = append
        super().__init__(log_dir=log_dir)

    def _check_log_dir_exists(self) -> None:
        if not self.append:  # a resumed run continues its metrics.csv instead of deleting it
            super()._check_log_dir_exists()

    def _record_new_keys(self) -> set[str]:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                header = next(csv.reader(f), [])
            missing = set(header) - set(self.metrics_keys)
            if missing:
                self.metrics_keys = sorted(set(self.metrics_keys) | missing)
        return super()._record_new_keys()


class CSVLogger(_LightningCSVLogger):
    """``pytorch_lightning.loggers.CSVLogger`` whose ``metrics.csv`` survives multi-process stages; with
    ``append = True`` (set by ``recsys.train`` when resuming) an existing ``metrics.csv`` is continued."""

    append: bool = False

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:  # type: ignore[override]
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _HeaderMergingWriter(log_dir=self.log_dir, append=self.append)
        return self._experiment
