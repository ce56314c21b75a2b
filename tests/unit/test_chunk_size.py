"""``data.steps_per_chunk=auto``: the DataModule picks T from the measured step cost (issue 16)."""

from __future__ import annotations

import time
from functools import partial
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch

from recsys.data.chunk_size import auto_steps_per_chunk
from recsys.data.datamodule import AUTO
from recsys.data.graph_datamodule import GraphDataModule
from recsys.data.sources.synthetic import SyntheticGraphSource
from recsys.models.components.lightgcn import LightGCNEncoder
from recsys.models.graph_module import GraphRecommender
from recsys.sampling import UniformNegativeSampler

STEP_SECONDS = 0.010


class SleepyModel(pl.LightningModule):
    """A step that costs ~10 ms: ``batch_loss`` sleeps, then returns a loss touching every weight."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(4, 3))
        self.bias = torch.nn.Parameter(torch.randn(3))
        self.calls = 0

    def chunk_steps(self, chunk):
        return chunk

    def batch_loss(self, batch):
        self.calls += 1
        time.sleep(STEP_SECONDS)
        return ((batch["x"] @ self.weight + self.bias).pow(2).sum(),)


class ExampleChunks:
    """Counts the example chunks drawn."""

    def __init__(self) -> None:
        self.drawn = 0

    def __call__(self):
        self.drawn += 1
        return [{"x": torch.ones(2, 4)}, {"x": torch.zeros(2, 4)}]  # a chunk: the first step is timed


def fake_trainer(model, limit_train_batches=1.0, val_check_interval=1.0, max_steps=-1):
    strategy = SimpleNamespace(batch_to_device=lambda batch: batch)
    return SimpleNamespace(lightning_module=model, limit_train_batches=limit_train_batches, max_steps=max_steps,
                           val_check_interval=val_check_interval, strategy=strategy)


def test_auto_picks_enough_steps_for_the_target_and_leaves_the_model_as_it_was():
    torch.manual_seed(0)
    model = SleepyModel()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    example = ExampleChunks()
    steps = auto_steps_per_chunk(fake_trainer(model), example, target_seconds=0.05, repeats=5)
    assert steps in (4, 5, 6)  # ceil(0.05 / ~0.010)
    assert example.drawn == 1 and model.calls == 6  # one example chunk, its first step timed (warm-up + 5)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # no optimiser step
    assert all(p.grad is None for p in model.parameters())  # gradients cleared


def test_auto_is_capped_by_max_steps_and_at_least_one():
    assert auto_steps_per_chunk(fake_trainer(SleepyModel()), ExampleChunks(), target_seconds=10.0, max_steps=7) == 7
    assert auto_steps_per_chunk(fake_trainer(SleepyModel()), ExampleChunks(), target_seconds=1e-9) == 1


@pytest.mark.parametrize("trainer_kwargs", [{"limit_train_batches": 3}, {"limit_train_batches": 0.5},
                                            {"limit_train_batches": 1},  # fast_dev_run's one batch: an int
                                            {"val_check_interval": 10}, {"max_steps": 40}])
def test_one_step_per_chunk_when_loader_batches_are_counted(trainer_kwargs):
    """``limit_train_batches`` / an integer ``val_check_interval`` / ``max_steps`` are checked between loader batches
    (chunks): T = 1, without timing anything."""
    model, example = SleepyModel(), ExampleChunks()
    assert auto_steps_per_chunk(fake_trainer(model, **trainer_kwargs), example, target_seconds=0.05) == 1
    assert model.calls == 0 and example.drawn == 0


def test_a_model_without_batch_loss_gets_one_step_per_chunk():
    example = ExampleChunks()
    assert auto_steps_per_chunk(fake_trainer(pl.LightningModule()), example, target_seconds=0.05) == 1
    assert example.drawn == 0


def test_an_explicit_value_is_kept_and_auto_is_one_outside_a_fit():
    assert graph_datamodule(steps_per_chunk=3).chunk_steps() == 3
    dm = graph_datamodule()
    dm.setup("fit")
    assert dm.chunk_steps() == 1 and dm.steps_per_chunk == AUTO


def graph_datamodule(steps_per_chunk=AUTO) -> GraphDataModule:
    source = SyntheticGraphSource(num_users=40, num_items=30, latent_dim=4, num_communities=2, min_interactions=3,
                                  max_interactions=8, seed=1)
    return GraphDataModule(source, batch_size=16, eval_batch_size=16, cache_dir=None, validate_on_test=True,
                           negative_sampler=UniformNegativeSampler(), steps_per_chunk=steps_per_chunk)


@pytest.mark.parametrize("limit_train_batches", [1.0, 2])
def test_resolved_in_a_real_fit_before_the_first_epoch(limit_train_batches):
    dm = graph_datamodule()
    dm.setup("fit")
    assert dm.chunk_steps() == 1  # auto outside a fit: one step per chunk
    model = GraphRecommender(dm.info, encoder=LightGCNEncoder, optimizer=partial(torch.optim.Adam, lr=0.01),
                             embedding_dim=4, num_layers=1)
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         limit_val_batches=0, limit_train_batches=limit_train_batches)
    trainer.fit(model, datamodule=dm)
    batches = dm.epoch_sampler().num_batches()
    assert dm.steps_per_chunk == AUTO  # the configured value is left as it is
    if limit_train_batches == 1.0:
        # a step of this tiny model takes well under 0.5 s / 256: the cap
        assert dm.chunk_steps() == 256 and len(dm.train_dataloader()) == 1
        assert trainer.global_step == batches  # every BPR step of the epoch, in one chunk
    else:
        assert dm.chunk_steps() == 1
        assert trainer.global_step == 2  # two loader batches of one step each
