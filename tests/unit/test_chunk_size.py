"""``data.steps_per_chunk=auto``: the StepsPerChunk callback picks T from the measured step cost (issue 16)."""

from __future__ import annotations

import time
from functools import partial
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch

from recsys.data.datamodule import AUTO
from recsys.data.graph_datamodule import GraphDataModule
from recsys.data.sources.synthetic import SyntheticGraphSource
from recsys.models.components.lightgcn import LightGCNEncoder
from recsys.models.graph_module import GraphRecommender
from recsys.sampling import UniformNegativeSampler
from recsys.utils.chunk_size import StepsPerChunk

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


class StubData:
    def __init__(self, steps_per_chunk=AUTO) -> None:
        self.steps_per_chunk = steps_per_chunk
        self.examples = 0

    def example_batch(self):
        self.examples += 1
        return [{"x": torch.ones(2, 4)}, {"x": torch.zeros(2, 4)}]  # a chunk: the first step is timed


def fake_trainer(data: StubData, limit_train_batches=1.0, val_check_interval=1.0, world_size=1, max_steps=-1):
    strategy = SimpleNamespace(batch_to_device=lambda batch: batch)
    return SimpleNamespace(datamodule=data, limit_train_batches=limit_train_batches, max_steps=max_steps,
                           val_check_interval=val_check_interval, world_size=world_size, strategy=strategy)


def test_auto_picks_enough_steps_for_the_target_and_leaves_the_model_as_it_was():
    torch.manual_seed(0)
    model = SleepyModel()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = StubData()
    callback = StepsPerChunk(target_seconds=0.05)
    callback.on_fit_start(fake_trainer(data), model)
    assert data.steps_per_chunk in (4, 5, 6)  # ceil(0.05 / ~0.010)
    assert data.examples == 1 and model.calls >= callback.repeats  # one example chunk, its first step timed
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # no optimiser step
    assert all(p.grad is None for p in model.parameters())  # gradients cleared


def test_auto_is_capped_by_max_steps_and_at_least_one():
    data = StubData()
    StepsPerChunk(target_seconds=10.0, max_steps=7).on_fit_start(fake_trainer(data), SleepyModel())
    assert data.steps_per_chunk == 7
    data = StubData()
    StepsPerChunk(target_seconds=1e-9).on_fit_start(fake_trainer(data), SleepyModel())
    assert data.steps_per_chunk == 1


@pytest.mark.parametrize("trainer_kwargs", [{"limit_train_batches": 3}, {"limit_train_batches": 0.5},
                                            {"limit_train_batches": 1},  # fast_dev_run's one batch: an int
                                            {"val_check_interval": 10}, {"world_size": 2}, {"max_steps": 40}])
def test_one_step_per_chunk_when_loader_batches_are_counted_or_under_ddp(trainer_kwargs):
    """``limit_train_batches`` / an integer ``val_check_interval`` / ``max_steps`` are checked between loader batches
    (chunks); DDP needs one backward per forward: T = 1, without timing anything."""
    model, data = SleepyModel(), StubData()
    StepsPerChunk(target_seconds=0.05).on_fit_start(fake_trainer(data, **trainer_kwargs), model)
    assert data.steps_per_chunk == 1
    assert model.calls == 0 and data.examples == 0


def test_an_explicit_value_or_a_model_without_batch_loss_is_left_alone():
    data = StubData(steps_per_chunk=3)
    StepsPerChunk(target_seconds=0.05).on_fit_start(fake_trainer(data), SleepyModel())
    assert data.steps_per_chunk == 3
    data = StubData()
    StepsPerChunk(target_seconds=0.05).on_fit_start(fake_trainer(data), pl.LightningModule())
    assert data.steps_per_chunk == AUTO


def graph_datamodule() -> GraphDataModule:
    source = SyntheticGraphSource(num_users=40, num_items=30, latent_dim=4, num_communities=2, min_interactions=3,
                                  max_interactions=8, seed=1)
    return GraphDataModule(source, batch_size=16, eval_batch_size=16, cache_dir=None, validate_on_test=True,
                           negative_sampler=UniformNegativeSampler(), steps_per_chunk=AUTO)


@pytest.mark.parametrize("limit_train_batches", [1.0, 2])
def test_resolved_in_a_real_fit_before_the_first_epoch(limit_train_batches):
    dm = graph_datamodule()
    dm.setup("fit")
    assert dm.chunk_steps() == 1  # unresolved auto: one step per chunk
    model = GraphRecommender(dm.info, encoder=LightGCNEncoder, optimizer=partial(torch.optim.Adam, lr=0.01),
                             embedding_dim=4, num_layers=1)
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         limit_val_batches=0, limit_train_batches=limit_train_batches,
                         callbacks=[StepsPerChunk(target_seconds=0.05, max_steps=3)])
    trainer.fit(model, datamodule=dm)
    batches = dm.epoch_sampler().num_batches()
    if limit_train_batches == 1.0:
        assert isinstance(dm.steps_per_chunk, int) and 1 <= dm.steps_per_chunk <= 3
        assert trainer.global_step == batches  # every BPR step of the epoch, in chunks
    else:
        assert dm.steps_per_chunk == 1
        assert trainer.global_step == 2  # two loader batches of one step each
