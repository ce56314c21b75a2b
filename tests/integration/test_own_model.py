"""A user's own model, written as a user would: a graph encoder in this file (under 40 lines) and a config file
in a folder of the user's own (``hydra.searchpath``). It trains through ``train.py`` with chunks, clipping and
accumulation, resumes, and recommends — no framework file changes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from tests.integration.conftest import TINY_DATA, TRAIN_QUIET, check, read_metrics, run_script


class MLPEncoder(nn.Module):
    """MF with a two-layer MLP on the embeddings: ``e = x + W₂ relu(W₁ x)``; scores ``e_uᵀ e_i``."""

    adjacency_norm = "sym"  # the operator GraphRecommender builds (unused here)
    regularize_ego = True  # the L2 term on the batch's ego embeddings

    def __init__(self, num_users: int, num_items: int, embedding_dim: int = 16, hidden: int = 32) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_users + num_items, embedding_dim)
        nn.init.normal_(self.embedding.weight, std=0.1)
        self.mlp = nn.Sequential(nn.Linear(embedding_dim, hidden), nn.ReLU(), nn.Linear(hidden, embedding_dim))

    def ego(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        return self.embedding.weight if rows is None else self.embedding(rows)

    def forward(self, adj, rows: torch.Tensor | None = None) -> torch.Tensor:
        x = self.ego(rows)
        return x + self.mlp(x)


CONFIG = """\
_target_: recsys.models.graph_module.GraphRecommender
encoder:
  _target_: tests.integration.test_own_model.MLPEncoder
  _partial_: true
optimizer:
  _target_: torch.optim.Adam
  _partial_: true
  lr: 0.01
reg_weight: 1.0e-4
topk: [10, 20]
metrics: [recall, ndcg]
embedding_dim: 16
hidden: 32
"""


@pytest.mark.slow
def test_own_encoder_trains_resumes_and_recommends(tmp_path: Path):
    conf = tmp_path / "conf" / "model"
    conf.mkdir(parents=True)
    (conf / "mlp_mf.yaml").write_text(CONFIG)
    run = tmp_path / "run"
    args = ["model=mlp_mf", f"hydra.searchpath=[file://{tmp_path / 'conf'}]", f"hydra.run.dir={run}",
            f"paths.data_dir={tmp_path / 'data'}", *TINY_DATA, *TRAIN_QUIET, "data.steps_per_chunk=4",
            "trainer.gradient_clip_val=0.5", "trainer.accumulate_grad_batches=2", "trainer.check_val_every_n_epoch=1"]
    check(run_script("train.py", *args, "trainer.max_epochs=2"))
    first = read_metrics(run)
    assert first["epochs_trained"] == 2 and first["test/recall@20"] > 0
    check(run_script("train.py", *args, "trainer.max_epochs=3", "ckpt_path=last"))  # continue the same run
    resumed = read_metrics(run)
    assert resumed["epochs_trained"] == 3 and "resumed_from" in resumed
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert {"encoder.mlp.0.weight", "encoder.mlp.2.weight", "encoder.embedding.weight"} <= set(state)
    out = tmp_path / "rec.csv"
    check(run_script("recommend.py", f"ckpt_path={run}", "users=[0,3]", "k=5", f"output={out}",
                     f"hydra.searchpath=[file://{tmp_path / 'conf'}]", f"hydra.run.dir={tmp_path / 'rec'}",
                     "extras.print_config=false", "progress=false"))
    rows = pd.read_csv(out, dtype={"user": str, "item": str})
    assert rows.groupby("user").size().to_dict() == {"0": 5, "3": 5}
