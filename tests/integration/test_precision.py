"""Mixed precision must not change the ranking: under ``bf16-mixed`` the evaluation scores are float32.

In-process (seconds): train one epoch with ``precision="bf16-mixed"``, then validate the same weights once
under ``bf16-mixed`` and once under ``32-true``; the scores of every evaluation step are identical and so are
the metrics. A control with the float32 guard removed shows that Lightning's autocast does reach the scoring
path (the scores come out bfloat16), so the equality is not vacuous. ``test_train_cli`` runs the same check
through ``train.py``/``eval.py`` on a saved checkpoint.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir

from recsys.builders import build_datamodule, build_model
from recsys.models.ranking_module import TopKRecommender

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

MODELS = {
    "ngcf": ["model=ngcf", "model.embedding_dim=8", "model.num_layers=2", "data.source.num_users=200",
             "data.source.num_items=150", "data.source.max_interactions=30", "data.batch_size=256"],
    "gru4rec": ["model=gru4rec", "model.layers=[8]", "data.source.num_items=100", "data.source.num_sessions=400",
                "data.source.num_days=5", "data.batch_size=16", "sampler.n_sample=32"],
}


def build(tmp_path: Path, name: str) -> tuple[pl.LightningDataModule, TopKRecommender]:
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[*MODELS[name], f"paths.data_dir={tmp_path}"])
    pl.seed_everything(0, verbose=False)
    datamodule = build_datamodule(cfg)
    return datamodule, build_model(cfg, datamodule)


def trainer(precision: str, **kwargs) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", devices=1, precision=precision, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, **kwargs)


def record_scores(model: TopKRecommender) -> list[torch.Tensor]:
    """Wrap the model's per-step scoring function so every evaluation step's scores are kept."""
    name = "eval_scores" if hasattr(model, "eval_scores") else "score_users"
    inner = getattr(model, name)
    seen: list[torch.Tensor] = []

    def scoring(*args, **kwargs):
        out = inner(*args, **kwargs)
        seen.append(out.detach().clone())
        return out

    setattr(model, name, scoring)
    return seen


def validate(model: TopKRecommender, datamodule, precision: str) -> tuple[dict[str, float], list[torch.Tensor]]:
    seen = record_scores(model)
    try:
        (metrics,) = trainer(precision).validate(model, datamodule=datamodule, verbose=False)
    finally:
        vars(model).pop("eval_scores", None)
        vars(model).pop("score_users", None)
    return metrics, seen


@pytest.mark.parametrize("name", sorted(MODELS))
def test_bf16_training_gives_the_metrics_of_a_float32_evaluation_of_the_same_weights(tmp_path, name, monkeypatch):
    datamodule, model = build(tmp_path, name)
    trainer("bf16-mixed", max_epochs=1, num_sanity_val_steps=0, limit_val_batches=0).fit(model, datamodule=datamodule)
    mixed, mixed_scores = validate(model, datamodule, "bf16-mixed")
    full, full_scores = validate(model, datamodule, "32-true")
    assert mixed.keys() == full.keys() and any(k.startswith("val/recall@") for k in mixed)
    for key in full:
        assert mixed[key] == pytest.approx(full[key], abs=1e-6), key
    assert mixed_scores and len(mixed_scores) == len(full_scores)
    for got, want in zip(mixed_scores, full_scores, strict=True):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, want, rtol=0, atol=0)

    # control: without the guard (and without the float32 score buffer, whose out= autocast leaves alone),
    # Lightning's bf16 autocast reaches the scoring (half-precision scores)
    monkeypatch.setattr(TopKRecommender, "float32_scoring", lambda self: contextlib.nullcontext())
    monkeypatch.setattr(TopKRecommender, "_buffer", lambda self, rows: None)
    _, unguarded = validate(model, datamodule, "bf16-mixed")
    assert unguarded and all(s.dtype == torch.bfloat16 for s in unguarded)


@pytest.mark.parametrize("precision", ["64-true", "bf16-true"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_true_precisions_train_in_chunks_and_score_in_float32(tmp_path, name, precision):
    """Under ``*-true`` precision Lightning changes the default dtype while a step runs: the chunked training
    (per-step loss weights) and the evaluation (its float32 score buffer) must not pick it up."""
    datamodule, model = build(tmp_path, name)
    datamodule.steps_per_chunk = 3
    trainer(precision, max_epochs=1, num_sanity_val_steps=0, limit_val_batches=0).fit(model, datamodule=datamodule)
    assert trainer_metrics_finite(trainer(precision).validate(model, datamodule=datamodule, verbose=False))
    if hasattr(model, "score_users"):
        assert model._buffer(4).dtype == torch.float32


def trainer_metrics_finite(results: list[dict[str, float]]) -> bool:
    (metrics,) = results
    return any(k.startswith("val/recall@") for k in metrics) and all(0.0 <= v <= 1.0 for v in metrics.values())
