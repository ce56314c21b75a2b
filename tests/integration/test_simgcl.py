"""SimGCL learns faster than LightGCN on the embedded default (issue 26). The other end-to-end checks of SimGCL and
XSimGCL sit with those of the other models: resume in test_resume.py, 2-process DDP runs and recommend.py in
test_sweeps.py, export in test_export.py, top-k against brute force in tests/unit/test_recommend.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from recsys.builders import build_datamodule, build_model
from tests.integration.conftest import ROOT

#: the budget of the comparison: N epochs of each model
EPOCHS = 3


def test_recall_after(overrides: list[str], data_dir: Path, epochs: int = EPOCHS) -> float:
    """Test recall@20 of the final weights after ``epochs`` epochs on the embedded default (seed 2020)."""
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.data_dir={data_dir}", *overrides])
    resolved = OmegaConf.create({k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("data", "model", "sampler")})
    pl.seed_everything(cfg.seed)
    datamodule = build_datamodule(resolved)
    model = build_model(resolved, datamodule)
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(model, datamodule=datamodule)
    return trainer.test(model, datamodule=datamodule, verbose=False)[0]["test/recall@20"]


test_recall_after.__test__ = False  # a helper, not a test


@pytest.mark.slow
def test_simgcl_beats_lightgcn_after_three_epochs_on_the_embedded_default(tmp_path):
    """N = 3 epochs each, default settings but SimGCL's τ = 1. Measured (seed 2020; seeds 1, 2 alike): LightGCN
    0.179, SimGCL 0.196 (τ = 1), SimGCL without its contrastive term 0.179 (λ = 0: the 5 % margin fails).

    With the papers' τ = 0.2 SimGCL is ahead only after the first epoch (val recall@20 0.078 vs 0.021), then behind
    (0.07 falling to 0.05 over 30 epochs, against 0.18 from epoch 3; XSimGCL 0.11 → 0.08 → 0.11), and that first-epoch
    lead is not the contrastive term's: test recall@20 after one epoch is LightGCN 0.023, SimGCL 0.077, SimGCL without
    its contrastive term (λ = 0) 0.179 (Xavier init, no layer 0 in the mean), XSimGCL 0.109. The embedded
    default is popularity-driven (MostPop reaches 0.179, as LightGCN from epoch 3), and a small τ spreads the
    embeddings uniformly, against popularity. On Last.fm (LightGCN's split) the defaults converge as fast as the
    papers say; val recall@20 after epoch 1 / 3 / 10: LightGCN 0.012 / 0.088 / 0.133, SimGCL 0.110 / 0.123 / 0.118
    (behind from epoch 5), XSimGCL 0.164 / 0.167 / 0.163."""
    lightgcn = test_recall_after(["model=lightgcn"], tmp_path)
    simgcl = test_recall_after(["model=simgcl", "model.temperature=1.0"], tmp_path)
    assert simgcl > 1.05 * lightgcn, (simgcl, lightgcn)
