"""One short Gowalla run per graph model (``model=mf|lightgcn|ngcf``) beats MostPop on test recall@20.

Uses the real Gowalla split in ``../shared/datasets/gowalla`` (a missing folder is a failure, not a skip).
Each run is a few hundred BPR steps of batch 4096 on 2 CPU cores, validation on one batch of users only
(one epoch: it only picks the checkpoint), then the full test ranking of all 29,858 users.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.conftest import ROOT, TRAIN_QUIET, check, read_metrics, run_script

GOWALLA = ROOT.parent / "shared" / "datasets" / "gowalla"

# model → extra overrides of its short run (steps of batch 4096; an epoch is 198 steps)
SHORT_RUNS = {
    "mf": ["+trainer.limit_train_batches=150", "model.optimizer.lr=0.005"],
    "lightgcn": ["+trainer.limit_train_batches=75", "model.optimizer.lr=0.005"],
    "ngcf": ["+trainer.limit_train_batches=40", "model.optimizer.lr=0.005"],
}


def _run(model: str, data_dir: Path, run_dir: Path, *extra: str) -> dict:
    assert (GOWALLA / "train.txt").is_file(), f"{GOWALLA} is missing: the Gowalla runs need the shared dataset"
    check(run_script(
        "train.py", "data=gowalla", f"data.path={GOWALLA}", f"model={model}", f"paths.data_dir={data_dir}",
        f"hydra.run.dir={run_dir}", *TRAIN_QUIET, "trainer.max_epochs=1", "trainer.check_val_every_n_epoch=1",
        "+trainer.limit_val_batches=1", "data.batch_size=4096", *extra,
        env={"OMP_NUM_THREADS": "1"}, timeout=1800,
    ))
    return read_metrics(run_dir)


@pytest.fixture(scope="module")
def gowalla_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    root = tmp_path_factory.mktemp("gowalla_models")
    pop = _run("pop", root / "data", root / "pop")
    return root, pop["test/recall@20"]


@pytest.mark.slow
@pytest.mark.parametrize("model", list(SHORT_RUNS))
def test_short_gowalla_run_beats_mostpop(model: str, gowalla_runs: tuple[Path, float]) -> None:
    root, pop_recall = gowalla_runs
    assert 0.02 < pop_recall < 0.08  # MostPop on this split is ~0.04 (sanity check of the floor itself)
    metrics = _run(model, root / "data", root / model, *SHORT_RUNS[model])
    assert metrics["test/recall@20"] > pop_recall, (model, metrics["test/recall@20"], pop_recall)
