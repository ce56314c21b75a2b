"""per_user.parquet of train.py's test and of eval.py: one row per evaluated user (graph) or test event (session),
every metric@K, averaging to metrics.json's test values; eval.py of the best checkpoint writes the same rows. The
2-process rows are checked in test_ddp.py (assert_test_metrics_match_single_process)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from recsys.builders import build_datamodule
from tests.integration.conftest import QUIET, ROOT, TINY_DATA, TRAIN_QUIET, check, read_metrics, run_script

TINY_SESSIONS = ["data.source.num_items=100", "data.source.num_sessions=1500", "data.source.num_days=5"]


def assert_means_equal_metrics(table: pd.DataFrame, metrics: dict) -> list[str]:
    columns = [c for c in table.columns if "@" in c]
    assert sorted(f"test/{c}" for c in columns) == sorted(k for k in metrics if k.startswith("test/"))
    for c in columns:
        assert abs(table[c].mean() - metrics[f"test/{c}"]) <= 1e-6, c
    return columns


def datamodule(tmp_path, *overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, f"paths.data_dir={tmp_path / 'data'}"])
    GlobalHydra.instance().clear()
    dm = build_datamodule(cfg)
    dm.prepare_data()
    dm.setup("test")
    return dm


@pytest.mark.slow
def test_graph_test_writes_one_row_per_user_and_eval_writes_the_same(tmp_path):
    run = tmp_path / "run"
    check(run_script("train.py", f"hydra.run.dir={run}", f"paths.data_dir={tmp_path / 'data'}", *TINY_DATA,
                     *TRAIN_QUIET, "trainer.max_epochs=2", "trainer.check_val_every_n_epoch=1", "model.embedding_dim=8"))
    metrics = read_metrics(run)
    table = pd.read_parquet(run / "per_user.parquet")
    assert list(table.columns[:1]) == ["user"] and len(assert_means_equal_metrics(table, metrics)) == 15
    dm = datamodule(tmp_path, *TINY_DATA)
    with_test = np.flatnonzero(np.bincount(dm.splits.test[0], minlength=dm.splits.num_users))
    assert table["user"].tolist() == with_test.tolist()  # every user with a test item once, in id order
    assert metrics["data_identity"] == dm.identity

    check(run_script("eval.py", f"ckpt_path={metrics['best_checkpoint']}", f"hydra.run.dir={tmp_path / 'eval'}", *QUIET))
    again = pd.read_parquet(tmp_path / "eval" / "per_user.parquet")
    pd.testing.assert_frame_equal(again, table, check_exact=True)
    assert read_metrics(tmp_path / "eval")["data_identity"] == metrics["data_identity"]


@pytest.mark.slow
def test_session_test_writes_one_row_per_test_event(tmp_path):
    run = tmp_path / "run"
    check(run_script("train.py", "model=spop", f"hydra.run.dir={run}", f"paths.data_dir={tmp_path / 'data'}",
                     *TINY_SESSIONS, *TRAIN_QUIET))
    metrics = read_metrics(run)
    table = pd.read_parquet(run / "per_user.parquet")
    assert list(table.columns[:2]) == ["session", "position"]
    columns = assert_means_equal_metrics(table, metrics)
    assert columns == [f"{m}@{k}" for m in ("recall", "mrr") for k in (5, 10, 20)]
    test = datamodule(tmp_path, "model=spop", *TINY_SESSIONS).splits.test
    assert len(table) == test.num_steps
    # (session, position) in split order: each session's positions 0 .. len-2
    order = {s: i for i, s in enumerate(test.session_ids)}
    index = table["session"].map(order).to_numpy()
    assert (np.diff(index) >= 0).all()
    expected = np.concatenate([np.arange(n - 1) for n in test.lengths if n >= 2])
    assert np.array_equal(table["position"].to_numpy(), expected)
