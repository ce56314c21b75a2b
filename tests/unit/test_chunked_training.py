"""Chunked manual optimisation trains exactly as one step per Lightning batch (issues 13 and 16).

A real ``pl.Trainer`` fits the same model on the same data with ``data.steps_per_chunk`` = 1 and larger chunks;
the chunking changes neither the draws nor the order of the optimiser steps, so the final weights, the number
of optimiser steps and the logged epoch loss are those of T = 1 (float order unchanged: bitwise expected,
checked to 1e-6).
"""

from __future__ import annotations

import functools
from functools import partial

import pytest
import pytorch_lightning as pl
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from recsys.data.graph_datamodule import GraphDataModule
from recsys.data.session_datamodule import SessionDataModule
from recsys.data.sources.session_synthetic import SyntheticSessionSource
from recsys.data.sources.synthetic import SyntheticGraphSource
from recsys.models.chunked import STEP_HOOKS, lightning_steps_needed
from recsys.models.components.lightgcn import LightGCNEncoder
from recsys.models.graph_module import GraphRecommender
from recsys.models.gru4rec_module import GRU4Rec
from recsys.optim import AdagradM
from recsys.sampling import SessionNegativeSampler, UniformNegativeSampler

EPOCHS = 2


def fit(model: pl.LightningModule, dm: pl.LightningDataModule) -> pl.Trainer:
    trainer = pl.Trainer(max_epochs=EPOCHS, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         limit_val_batches=0)
    trainer.fit(model, datamodule=dm)
    return trainer


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_training(runs: dict[int, tuple[dict[str, torch.Tensor], int, float]],
                         initial: dict[str, torch.Tensor]) -> None:
    (base_weights, base_steps, base_loss) = runs[1]
    assert any(not torch.equal(base_weights[k], initial[k]) for k in initial)  # it trained
    for t, (weights, steps, loss) in runs.items():
        assert steps == base_steps, t  # one optimiser step per training step, whatever the chunking
        assert loss == pytest.approx(base_loss, rel=1e-6, abs=1e-7), t
        assert weights.keys() == base_weights.keys()
        for k in weights:
            torch.testing.assert_close(weights[k], base_weights[k], rtol=1e-6, atol=1e-6, msg=lambda m, k=k: f"{k}: {m}")


def session_datamodule(steps_per_chunk: int) -> SessionDataModule:
    source = SyntheticSessionSource(num_items=60, num_sessions=700, num_days=4.0, mean_length=4.0, seed=1)
    return SessionDataModule(source, batch_size=6, eval_batch_size=16, cache_dir=None, validate_on_test=True,
                             negative_sampler=SessionNegativeSampler(n_sample=8, alpha=0.5), seed=5,
                             steps_per_chunk=steps_per_chunk)


@pytest.mark.slow  # three fits of 2 epochs: 1–7 s on a loaded 2-core machine
def test_gru4rec_trains_identically_whatever_the_chunking():
    runs, initial = {}, None
    for t in (1, 7, 64):
        dm = session_datamodule(t)
        dm.setup("fit")
        pl.seed_everything(0)
        # momentum: the row-sparse path of AdagradM; dropout: global-RNG draws that must keep their order
        model = GRU4Rec(dm.info, partial(AdagradM, lr=0.05, momentum=0.2), layers=[12], loss="cross-entropy",
                        logq=1.0, dropout_hidden=0.2, dropout_embed=0.1)
        initial = initial or snapshot(model)
        assert all(torch.equal(v, initial[k]) for k, v in snapshot(model).items())  # same start
        trainer = fit(model, dm)
        steps = dm.train_dataloader().sampler.num_steps
        assert steps > 64  # several chunks of 7, more than one of 64 in an epoch
        assert trainer.global_step == EPOCHS * steps
        runs[t] = (snapshot(model), trainer.global_step, float(trainer.callback_metrics["train/loss"]))
    assert_same_training(runs, initial)


def graph_datamodule(steps_per_chunk: int) -> GraphDataModule:
    source = SyntheticGraphSource(num_users=60, num_items=50, latent_dim=4, num_communities=3, min_interactions=3,
                                  max_interactions=12, seed=2)
    return GraphDataModule(source, batch_size=16, eval_batch_size=32, cache_dir=None, validate_on_test=True,
                           negative_sampler=UniformNegativeSampler(), seed=3, steps_per_chunk=steps_per_chunk)


def test_lightgcn_trains_identically_whatever_the_chunking():
    runs, initial = {}, None
    for t in (1, 5):
        dm = graph_datamodule(t)
        dm.setup("fit")
        pl.seed_everything(0)
        model = GraphRecommender(dm.info, encoder=LightGCNEncoder, optimizer=partial(torch.optim.Adam, lr=0.01),
                                 reg_weight=1e-3, embedding_dim=8, num_layers=2, edge_dropout=0.1)
        initial = initial or snapshot(model)
        trainer = fit(model, dm)
        batches = dm.epoch_sampler().num_batches()
        assert batches > 5 and len(dm.train_dataloader()) == -(-batches // t)
        assert trainer.global_step == EPOCHS * batches
        runs[t] = (snapshot(model), trainer.global_step, float(trainer.callback_metrics["train/loss"]))
    assert_same_training(runs, initial)


class CountsSteps(pl.Callback):
    """A callback that listens to the per-step hooks: the steps then go through Lightning's wrappers."""

    def __init__(self) -> None:
        self.calls = {h: 0 for h in STEP_HOOKS}

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        self.calls["on_before_backward"] += 1

    def on_after_backward(self, trainer, pl_module) -> None:
        self.calls["on_after_backward"] += 1

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.calls["on_before_optimizer_step"] += 1


def test_plain_steps_train_as_lightnings_wrapped_steps():
    """Without a listener the steps skip manual_backward/LightningOptimizer.step; with one (a callback with the
    per-step hooks) they go through them and every hook runs once per optimiser step. Same weights, same
    global_step, bit for bit."""
    runs = {}
    for listener in (None, CountsSteps()):
        dm = graph_datamodule(5)
        dm.setup("fit")
        pl.seed_everything(0)
        model = GraphRecommender(dm.info, encoder=LightGCNEncoder, optimizer=partial(torch.optim.Adam, lr=0.01),
                                 reg_weight=1e-3, embedding_dim=8, num_layers=2, edge_dropout=0.1)
        trainer = pl.Trainer(max_epochs=EPOCHS, accelerator="cpu", logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                             limit_val_batches=0, callbacks=[listener] if listener else [])
        assert lightning_steps_needed(trainer, model) is (listener is not None)
        trainer.fit(model, datamodule=dm)
        assert model._lightning_steps is (listener is not None)  # the branch each run took
        steps = EPOCHS * dm.epoch_sampler().num_batches()
        assert trainer.global_step == steps
        if listener is not None:
            assert listener.calls == {h: steps for h in STEP_HOOKS}
        runs[listener is None] = snapshot(model)
    for k, v in runs[True].items():
        assert torch.equal(v, runs[False][k]), k


@pytest.mark.slow  # two fits of 2 epochs
def test_gru4rec_plain_steps_write_their_gradients_and_train_as_autograd_does(monkeypatch):
    """GRU4Rec's plain steps take its written-out gradients (``batch_gradients``), the wrapped ones autograd through
    ``batch_loss``: the same training to float rounding (the summation order differs)."""
    calls = {"gradients": 0, "loss": 0}
    gradients, loss = GRU4Rec.batch_gradients, GRU4Rec.batch_loss

    def counted_gradients(self, step):
        out = gradients(self, step)
        calls["gradients"] += out is not None
        return out

    def counted_loss(self, step):
        calls["loss"] += 1
        return loss(self, step)

    monkeypatch.setattr(GRU4Rec, "batch_gradients", counted_gradients)
    monkeypatch.setattr(GRU4Rec, "batch_loss", counted_loss)
    runs = {}
    for listener in (None, CountsSteps()):
        calls.update(gradients=0, loss=0)
        dm = session_datamodule(16)
        dm.setup("fit")
        pl.seed_everything(0)
        model = GRU4Rec(dm.info, partial(AdagradM, lr=0.05), layers=[12], loss="cross-entropy", logq=1.0,
                        dropout_embed=0.1)
        trainer = pl.Trainer(max_epochs=EPOCHS, accelerator="cpu", logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                             limit_val_batches=0, callbacks=[listener] if listener else [])
        trainer.fit(model, datamodule=dm)
        assert all(p.grad is None for p in model.parameters())  # no (read-only) written-out gradient outlives the epoch
        steps = trainer.global_step
        assert steps == EPOCHS * dm.train_dataloader().sampler.num_steps
        assert calls == ({"gradients": steps, "loss": 0} if listener is None else {"gradients": 0, "loss": steps})
        runs[listener is None] = (snapshot(model), float(trainer.callback_metrics["train/loss"]))
    assert runs[True][1] == pytest.approx(runs[False][1], rel=1e-5)
    for k, v in runs[True][0].items():
        torch.testing.assert_close(v, runs[False][0][k], rtol=1e-5, atol=1e-5, msg=lambda m, k=k: f"{k}: {m}")


class OwnBackward(GraphRecommender):
    def backward(self, loss, *args, **kwargs) -> None:
        loss.backward(*args, **kwargs)


class HookedModule(GraphRecommender):
    def on_before_optimizer_step(self, optimizer) -> None:
        pass


@pytest.mark.parametrize(("trainer_kwargs", "module_class", "needed"), [
    ({}, GraphRecommender, False),
    ({"precision": "bf16-mixed"}, GraphRecommender, False),  # autocast around the step only, no loss scaling
    ({"precision": "64-true"}, GraphRecommender, False),
    ({"strategy": "ddp", "devices": 1}, GraphRecommender, True),  # DDP prepares its reduction in pre_backward
    ({"profiler": "simple"}, GraphRecommender, True),
    ({}, OwnBackward, True),
    ({}, HookedModule, True),
])
def test_lightning_steps_needed(trainer_kwargs, module_class, needed):
    dm = graph_datamodule(1)
    dm.setup("fit")
    model = module_class(dm.info, encoder=LightGCNEncoder, optimizer=partial(torch.optim.Adam, lr=0.01), embedding_dim=4)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, **trainer_kwargs)
    assert lightning_steps_needed(trainer, model) is needed


@pytest.mark.parametrize("optimizer_class", [AdagradM, torch.optim.Adam])
def test_unhooked_step_updates_as_step_and_yields_to_hooks_and_the_profiler(optimizer_class):
    """Without hooks or a profiler the bare step gives the same parameters and state as ``optimizer.step()``, bit
    for bit; with a step hook (the optimiser's or a global one) or under torch's profiler it is ``step`` itself."""
    from recsys.models.chunked import unhooked_step

    def make() -> tuple[torch.nn.Parameter, torch.optim.Optimizer]:
        p = torch.nn.Parameter(torch.linspace(-1.0, 1.0, 12).view(3, 4))
        return p, optimizer_class([p], lr=0.1)

    (p, opt), (q, ref) = make(), make()
    for k in range(3):
        p.grad, q.grad = torch.full_like(p, 0.5 + k), torch.full_like(q, 0.5 + k)
        step = unhooked_step(opt)
        assert isinstance(step, functools.partial)  # the wrapper left out
        step()
        ref.step()
    assert torch.equal(p, q)
    assert all(torch.equal(a, b) for a, b in zip(opt.state[p].values(), ref.state[q].values(), strict=True))

    calls = []
    handle = opt.register_step_pre_hook(lambda *args: calls.append("own"))
    unhooked_step(opt)()
    handle.remove()
    handle = register_optimizer_step_post_hook(lambda *args: calls.append("global"))
    unhooked_step(opt)()
    handle.remove()
    assert calls == ["own", "global"]
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        unhooked_step(opt)()
    assert any(e.name.startswith("Optimizer.step#") for e in prof.events())
    unhooked_step(opt)()
    assert calls == ["own", "global"]  # hooks removed: not called again
    class Decorated(optimizer_class):  # a step of its own over torch's wrapped one: not left out
        @functools.wraps(optimizer_class.step)
        def step(self, closure=None):
            calls.append("decorated")
            return super().step(closure)

    r, _ = make()
    r.grad = torch.ones_like(r)
    decorated = Decorated([r], lr=0.1)
    unhooked_step(decorated)()
    assert calls[-1] == "decorated"
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1)  # it wraps the instance's step to count calls
    unhooked_step(opt)()
    assert getattr(opt, "_opt_called", False)
    scheduler.step()
