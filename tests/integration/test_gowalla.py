"""The real Gowalla split (``../shared/datasets/gowalla``): exact counts, an independent parse, the Hydra path.

Skipped only when the folder is absent; in CI (``CI=true``) its absence is a failure.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from recsys.data.sources import SplitFolderSource
from tests.integration.conftest import ROOT, TRAIN_QUIET, check, read_metrics, run_script, shared_dataset


@pytest.fixture(scope="module")
def gowalla_path():
    return shared_dataset("gowalla", "train.txt")


@pytest.fixture(scope="module")
def splits(gowalla_path):
    return SplitFolderSource(dataset="gowalla", path=str(gowalla_path)).build()


def test_gowalla_exact_counts(splits):
    assert splits.num_users == 29_858
    assert splits.num_items == 40_981
    assert len(splits.train[0]) == 810_128
    assert len(splits.test[0]) == 217_242
    assert len(splits.valid[0]) == 0
    train_keys = splits.train[0] * splits.num_items + splits.train[1]
    test_keys = splits.test[0] * splits.num_items + splits.test[1]
    assert len(np.unique(train_keys)) == 810_128 and not np.isin(test_keys, train_keys).any()
    assert np.isin(splits.test[1], splits.train[1]).all()  # every test item occurs in train


def python_reference(path) -> np.ndarray:
    """Sorted user * n + item keys read with str.split (independent of the vectorised parser)."""
    keys = []
    with open(path) as f:
        for line in f:
            ids = [int(t) for t in line.split()]
            keys.extend(ids[0] * 40_981 + i for i in ids[1:])
    return np.sort(np.array(keys, dtype=np.int64))


def test_gowalla_matches_a_python_reader(splits, gowalla_path):
    # the dense ids equal the file's ids (every user and item occurs), so keys compare directly
    assert np.array_equal(splits.user_ids.astype(np.int64), np.arange(29_858))
    assert np.array_equal(splits.item_ids.astype(np.int64), np.arange(40_981))
    for split, name in (("train", "train.txt"), ("test", "test.txt")):
        u, i = getattr(splits, split)
        assert np.array_equal(np.sort(u * 40_981 + i), python_reference(gowalla_path / name)), split


@pytest.mark.slow
def test_data_stats_and_train_with_data_path(gowalla_path, tmp_path):
    rel = os.path.relpath(gowalla_path, ROOT)  # as a user types it: data.path=../shared/datasets/gowalla
    proc = check(run_script("scripts/data_stats.py", "data=gowalla", f"data.path={rel}",
                            f"paths.data_dir={tmp_path / 'data'}", f"hydra.run.dir={tmp_path / 'stats'}"))
    assert "29,858" in proc.stdout and "40,981" in proc.stdout and "217,242" in proc.stdout
    assert "carved from train (fraction 0.1" in proc.stdout
    proc = check(run_script(
        "train.py", "data=gowalla", f"data.path={rel}", f"paths.data_dir={tmp_path / 'data'}",
        f"hydra.run.dir={tmp_path / 'run'}", *TRAIN_QUIET, "trainer.max_epochs=1", "+trainer.limit_train_batches=2",
        "+trainer.limit_val_batches=2", "+trainer.limit_test_batches=2", "trainer.check_val_every_n_epoch=1",
        "data.validate_on_test=true", "model.embedding_dim=8",
    ))
    metrics = read_metrics(tmp_path / "run")
    assert metrics["validate_on_test"] is True
    assert "test/recall@20" in metrics
    assert len(list((tmp_path / "data" / "processed").glob("gowalla-*.npz"))) == 1  # reused by the second run
