"""Chunked manual optimisation trains exactly as one step per Lightning batch, and as Lightning's automatic loop.

A real ``pl.Trainer`` fits the same model on the same data with ``data.steps_per_chunk`` = 1 and larger chunks;
the chunking changes neither the draws nor the order of the optimiser steps, so the final weights, the number
of optimiser steps and the logged epoch loss are those of T = 1. Gradient accumulation and clipping
(:class:`~recsys.models.chunked.StepOptions`) give the weights of Lightning's automatic optimisation with
``accumulate_grad_batches`` / ``gradient_clip_val``.
"""

from __future__ import annotations

from functools import partial

import pytest
import pytorch_lightning as pl
import torch

from recsys.data.graph_datamodule import GraphDataModule
from recsys.data.session_datamodule import SessionDataModule
from recsys.data.sources.session_synthetic import SyntheticSessionSource
from recsys.data.sources.synthetic import SyntheticGraphSource
from recsys.errors import ConfigError
from recsys.losses import SESSION_LOSSES
from recsys.models.chunked import StepOptions
from recsys.models.components.lightgcn import LightGCNEncoder
from recsys.models.components.ngcf import NGCFEncoder
from recsys.models.components.simgcl import SimGCLEncoder
from recsys.models.graph_module import GraphRecommender
from recsys.models.gru4rec_module import GRU4Rec
from recsys.models.simgcl_module import SimGCL, XSimGCL
from recsys.optim import AdagradM
from recsys.sampling import SessionNegativeSampler, UniformNegativeSampler

EPOCHS = 2


def fit(model: pl.LightningModule, dm: pl.LightningDataModule, callbacks=(), **kwargs) -> pl.Trainer:
    trainer = pl.Trainer(max_epochs=EPOCHS, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         limit_val_batches=0, callbacks=list(callbacks), **kwargs)
    trainer.fit(model, datamodule=dm)
    return trainer


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_weights(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], tol: float = 1e-6) -> None:
    assert got.keys() == want.keys()
    for k in got:
        torch.testing.assert_close(got[k], want[k], rtol=tol, atol=tol, msg=lambda m, k=k: f"{k}: {m}")


def assert_same_training(runs: dict[int, tuple[dict[str, torch.Tensor], int, float]],
                         initial: dict[str, torch.Tensor]) -> None:
    (base_weights, base_steps, base_loss) = runs[1]
    assert any(not torch.equal(base_weights[k], initial[k]) for k in initial)  # it trained
    for t, (weights, steps, loss) in runs.items():
        assert steps == base_steps, t  # one optimiser step per training step, whatever the chunking
        assert loss == pytest.approx(base_loss, rel=1e-6, abs=1e-7), t
        assert_same_weights(weights, base_weights)


def session_datamodule(steps_per_chunk: int) -> SessionDataModule:
    source = SyntheticSessionSource(num_items=60, num_sessions=700, num_days=4.0, mean_length=4.0, seed=1)
    return SessionDataModule(source, batch_size=6, eval_batch_size=16, cache_dir=None, validate_on_test=True,
                             negative_sampler=SessionNegativeSampler(n_sample=8, alpha=0.5), seed=5,
                             steps_per_chunk=steps_per_chunk)


@pytest.mark.slow  # two fits of 2 epochs per loss
@pytest.mark.parametrize("loss", SESSION_LOSSES)
def test_gru4rec_trains_identically_whatever_the_chunking(loss):
    runs, initial = {}, None
    for t in (1, 64):
        dm = session_datamodule(t)
        dm.setup("fit")
        pl.seed_everything(0)
        # momentum: the row-sparse path of AdagradM; dropout: global-RNG draws that must keep their order
        model = GRU4Rec(dm.info, partial(AdagradM, lr=0.05, momentum=0.2), layers=[12], loss=loss,
                        logq=1.0 if loss == "cross-entropy" else 0.0, dropout_hidden=0.2, dropout_embed=0.1)
        initial = initial or snapshot(model)
        assert all(torch.equal(v, initial[k]) for k, v in snapshot(model).items())  # same start
        trainer = fit(model, dm)
        steps = dm.train_dataloader().sampler.num_steps
        assert steps > 64  # more than one chunk of 64 in an epoch
        assert trainer.global_step == EPOCHS * steps
        runs[t] = (snapshot(model), trainer.global_step, float(trainer.callback_metrics["train/loss"]))
    assert_same_training(runs, initial)


def graph_datamodule(steps_per_chunk: int, batch_size: int = 16) -> GraphDataModule:
    source = SyntheticGraphSource(num_users=60, num_items=50, latent_dim=4, num_communities=3, min_interactions=3,
                                  max_interactions=12, seed=2)
    return GraphDataModule(source, batch_size=batch_size, eval_batch_size=32, cache_dir=None, validate_on_test=True,
                           negative_sampler=UniformNegativeSampler(), seed=3, steps_per_chunk=steps_per_chunk)


GRAPH_ENCODERS = {
    "mf": partial(LightGCNEncoder, num_layers=0),
    "lightgcn": partial(LightGCNEncoder, num_layers=2, edge_dropout=0.1),
    "ngcf": partial(NGCFEncoder, layer_sizes=[8, 8], node_dropout=0.1, message_dropout=[0.1, 0.1]),
    # the noise of the views: global-RNG draws that must keep their order
    "simgcl": partial(SimGCLEncoder, num_layers=2, eps=0.1),
    "xsimgcl": partial(SimGCLEncoder, num_layers=2, eps=0.2),
}
GRAPH_MODULES = {"simgcl": SimGCL, "xsimgcl": XSimGCL}


ADAM = partial(torch.optim.Adam, lr=0.01)


def graph_model(dm: GraphDataModule, encoder: str = "lightgcn", cls=GraphRecommender, optimizer=ADAM) -> GraphRecommender:
    return cls(dm.info, encoder=GRAPH_ENCODERS[encoder], optimizer=optimizer, reg_weight=1e-3, embedding_dim=8)


@pytest.mark.parametrize("encoder", GRAPH_ENCODERS)
def test_graph_models_train_identically_whatever_the_chunking(encoder):
    runs, initial = {}, None
    for t in (1, 5):
        dm = graph_datamodule(t)
        dm.setup("fit")
        pl.seed_everything(0)
        model = graph_model(dm, encoder, GRAPH_MODULES.get(encoder, GraphRecommender))
        initial = initial or snapshot(model)
        trainer = fit(model, dm)
        batches = dm.epoch_sampler().num_batches()
        assert batches > 5 and len(dm.train_dataloader()) == -(-batches // t)
        assert trainer.global_step == EPOCHS * batches
        runs[t] = (snapshot(model), trainer.global_step, float(trainer.callback_metrics["train/loss"]))
    assert_same_training(runs, initial)


class CountsOptimizerSteps(pl.Callback):
    """A callback with the per-step hook: it runs once per optimiser step."""

    def __init__(self) -> None:
        self.calls = 0

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.calls += 1


class GradientNorms:
    """Records the global 2-norm and the largest |value| of the gradients every update used (read after the update:
    Lightning clips inside the step's closure, after the step's pre-hooks)."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.norms: list[float] = []
        self.largest: list[float] = []
        optimizer.register_step_post_hook(self)

    def __call__(self, optimizer, args, kwargs) -> None:
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        self.norms.append(float(torch.linalg.vector_norm(torch.cat([g.reshape(-1) for g in grads]))))
        self.largest.append(max(float(g.abs().max()) for g in grads))


class RecordsGradients(GraphRecommender):
    def configure_optimizers(self):
        optimizer = super().configure_optimizers()
        self.recorder = GradientNorms(optimizer)
        return optimizer


class AutomaticSteps(GraphRecommender):
    """The same model trained by Lightning's automatic optimisation (one step batch per Lightning batch)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.automatic_optimization = True

    def training_step(self, chunk, batch_idx):
        (step,) = chunk
        return self.batch_loss(step)[0]


@pytest.mark.parametrize(("accumulate", "clip", "algorithm"), [(1, 0.05, "norm"), (2, None, "norm"),
                                                               (2, 0.05, "norm"), (3, 0.002, "value")])
def test_accumulation_and_clipping_train_as_lightnings_automatic_loop(accumulate, clip, algorithm):
    """The same weights (1e-6) as ``Trainer(accumulate_grad_batches=k, gradient_clip_val=c)`` under automatic
    optimisation, for chunks of 1 and of 4 steps (13 steps an epoch: the epoch's last update takes the remainder);
    every update's gradient norm (or value) is within the limit, and the limit was reached (clipping happened)."""
    sgd = partial(torch.optim.SGD, lr=0.5)
    dm = graph_datamodule(1, batch_size=20)
    dm.setup("fit")
    batches = dm.epoch_sampler().num_batches()
    assert accumulate == 1 or batches % accumulate != 0  # an incomplete last accumulation window
    pl.seed_everything(0)
    auto = graph_model(dm, "mf", AutomaticSteps, sgd)
    counter = CountsOptimizerSteps()
    trainer = fit(auto, dm, [counter], accumulate_grad_batches=accumulate, gradient_clip_val=clip,
                  gradient_clip_algorithm=algorithm)
    updates = EPOCHS * -(-batches // accumulate)
    assert trainer.global_step == updates == counter.calls
    want = snapshot(auto)
    for t in (1, 4):
        dm = graph_datamodule(t, batch_size=20)
        dm.setup("fit")
        pl.seed_everything(0)
        model = graph_model(dm, "mf", RecordsGradients, sgd)
        model.step_options = StepOptions(accumulate, clip, algorithm)
        counter = CountsOptimizerSteps()
        trainer = fit(model, dm, [counter])
        assert trainer.global_step == updates == counter.calls == len(model.recorder.norms)
        assert_same_weights(snapshot(model), want)
        if clip:
            seen = model.recorder.norms if algorithm == "norm" else model.recorder.largest
            assert max(seen) <= clip * (1 + 1e-5)
            assert max(seen) >= clip * (1 - 1e-4)  # the limit bound (torch divides by the norm + 1e-6)


@pytest.mark.parametrize("steps_per_chunk", [1, 4])
def test_a_callback_step_hook_runs_once_per_optimiser_step(steps_per_chunk):
    dm = graph_datamodule(steps_per_chunk)
    dm.setup("fit")
    model = graph_model(dm)
    counter = CountsOptimizerSteps()
    trainer = fit(model, dm, [counter])
    assert counter.calls == trainer.global_step == EPOCHS * dm.epoch_sampler().num_batches()


@pytest.mark.parametrize(("options", "key"), [
    ({"accumulate_grad_batches": 0}, "trainer.accumulate_grad_batches"),
    ({"gradient_clip_val": -1.0}, "trainer.gradient_clip_val"),
    ({"gradient_clip_algorithm": "max"}, "trainer.gradient_clip_algorithm"),
])
def test_impossible_step_options_name_their_key(options, key):
    with pytest.raises(ConfigError, match=key):
        StepOptions(**options)


def test_gru4rec_refuses_sparse_gradients_with_clipping():
    dm = session_datamodule(1)
    dm.setup("fit")
    model = GRU4Rec(dm.info, partial(AdagradM, lr=0.05), layers=[8], sparse_gradients="true")
    model.step_options = StepOptions(gradient_clip_val=1.0)
    with pytest.raises(ConfigError, match="gradient_clip_val"):
        model.configure_optimizers()
    auto = GRU4Rec(dm.info, partial(AdagradM, lr=0.05, momentum=0.5), layers=[8])
    auto.configure_optimizers()
    assert auto.net.sparse  # momentum: the official row-sparse updates
    auto.step_options = StepOptions(gradient_clip_val=1.0)
    auto.configure_optimizers()
    assert not auto.net.sparse  # clipping needs dense gradients
