"""recsys's CSV logger: columns written by another process's stage are kept, a resumed run continues the file,
a new run replaces it."""

from __future__ import annotations

import pandas as pd

from recsys.utils.loggers import CSVLogger


def rows(logger: CSVLogger) -> pd.DataFrame:
    return pd.read_csv(logger.metrics_file)


def test_columns_of_another_stage_are_kept_and_a_resume_appends(tmp_path):
    fit = CSVLogger(tmp_path, name="csv", version="")
    fit.log_metrics({"train/loss": 0.5, "epoch": 0}, step=0)
    fit.log_metrics({"val/recall@20": 0.1, "epoch": 0}, step=1)
    fit.finalize("success")
    test = CSVLogger(tmp_path, name="csv", version="")  # a stage run in fresh processes (ddp_spawn), same file
    test.append = True
    test.log_metrics({"test/recall@20": 0.2}, step=2)
    test.save()
    frame = rows(test)
    assert list(frame.columns) == sorted(["epoch", "step", "test/recall@20", "train/loss", "val/recall@20"])
    assert frame["step"].tolist() == [0, 1, 2]
    assert frame["train/loss"].iloc[0] == 0.5 and frame["test/recall@20"].iloc[2] == 0.2
    test.log_metrics({"test/recall@20": 0.3}, step=3)  # same columns: appended
    test.save()
    assert rows(test)["test/recall@20"].tolist()[2:] == [0.2, 0.3]

    fresh = CSVLogger(tmp_path, name="csv", version="")  # a new run in the same folder starts its own file
    fresh.log_metrics({"train/loss": 0.9}, step=0)
    fresh.save()
    assert rows(fresh).to_dict("list") == {"step": [0], "train/loss": [0.9]}
