"""Checks that need a CUDA device (``pytest -m gpu``; skipped where none is visible, run by scripts/gpu_check.sh)."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from recsys.data.bpr_batches import BPREpochSampler
from recsys.data.graph_datamodule import GraphDataModule
from recsys.data.sources.synthetic import SyntheticGraphSource
from recsys.info import UserItemCSR
from recsys.models.chunked import StepOptions
from recsys.models.components.lightgcn import LightGCNEncoder
from recsys.models.graph_module import GraphRecommender
from recsys.sampling import (
    HardNegativeSampler,
    InBatchNegativeSampler,
    PopularityNegativeSampler,
    UniformNegativeSampler,
)

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize("negatives", [UniformNegativeSampler(2, n_sample=3), PopularityNegativeSampler(1, alpha=0.75),
                                       InBatchNegativeSampler(n_sample=2), InBatchNegativeSampler(num_negatives=2),
                                       HardNegativeSampler(1, candidates=4)], ids=repr)
def test_bpr_epoch_is_drawn_on_the_gpu(negatives):
    """Every batch comes out on the device, its negatives are never the row's train positives, and the epoch
    is a function of (seed, epoch) there too."""
    source = SyntheticGraphSource(num_users=80, num_items=60, min_interactions=3, max_interactions=20, seed=1)
    train = source.build().csr("train")
    neg = negatives.bind(train)

    def epoch():
        sampler = BPREpochSampler(train, neg, batch_size=32, seed=4, steps_per_chunk=4, device="cuda")
        sampler.set_epoch(2)
        return [b for chunk in sampler for b in chunk]

    first, again = epoch(), epoch()
    for a, b in zip(first, again, strict=True):
        assert all(t.device.type == "cuda" for t in a.values())
        assert all(torch.equal(a[k], b[k]) for k in a)
        users = a["users"].cpu()
        per_row = a.get("neg_items", a.get("neg_candidates"))
        if per_row is not None:
            for u, row in zip(users.tolist(), per_row.reshape(len(users), -1).cpu().tolist(), strict=True):
                assert not set(row) & set(train.indices[train.indptr[u]:train.indptr[u + 1]].tolist())
        if "neg_shared" in a:
            shared = a["neg_shared"].cpu()
            blocked = train.contains(users[:, None], shared[None, :])
            assert not (a["neg_shared_mask"].cpu() & blocked).any()


def test_train_loader_draws_on_the_trainers_device():
    dm = GraphDataModule(SyntheticGraphSource(num_users=50, num_items=40, min_interactions=3, max_interactions=20, seed=2), batch_size=16, cache_dir=None,
                         steps_per_chunk=2)
    dm.setup("fit")
    trainer = pl.Trainer(accelerator="gpu", devices=1, logger=False, enable_checkpointing=False)
    dm.trainer = trainer
    chunk = next(iter(dm.train_dataloader()))
    assert all(t.device.type == "cuda" for batch in chunk for t in batch.values())


def test_exact_fallback_draws_on_the_gpu():
    """A user with all items but one exhausts the rejection rounds: the dense fallback (``multinomial`` with the
    device's generator) must return that one item."""
    users = torch.tensor([0] * 49 + [1])
    items = torch.tensor(list(range(49)) + [3])
    train = UserItemCSR.from_pairs(users, items, 2, 50)
    neg = UniformNegativeSampler(8).bind(train)
    sampler = BPREpochSampler(train, neg, batch_size=64, seed=1, device="cuda")
    for batch in sampler.batches():
        assert batch["neg_items"].device.type == "cuda"
        rows = batch["users"] == 0
        assert (batch["neg_items"][rows] == 49).all()


def test_sixteen_bit_mixed_precision_trains_with_clipping():
    """16-mixed scales the loss (GradScaler); clipping runs on the unscaled gradients; training moves the weights."""
    dm = GraphDataModule(SyntheticGraphSource(num_users=50, num_items=40, min_interactions=3, max_interactions=20,
                                              seed=2), batch_size=16, cache_dir=None, steps_per_chunk=4)
    dm.setup("fit")
    model = GraphRecommender(dm.info, encoder=LightGCNEncoder, optimizer=torch.optim.Adam, embedding_dim=4)
    model.step_options = StepOptions(gradient_clip_val=0.1)
    before = model.encoder.ego().detach().clone()
    trainer = pl.Trainer(accelerator="gpu", devices=1, precision="16-mixed", logger=False, enable_checkpointing=False,
                         max_epochs=1, limit_val_batches=0, enable_progress_bar=False)
    trainer.fit(model, datamodule=dm)
    assert trainer.global_step == dm.epoch_sampler().num_batches()
    assert not torch.equal(model.encoder.ego().detach().cpu(), before)


@pytest.mark.parametrize("loss", ["cross-entropy", "bpr-max"])
def test_gru4rec_step_on_the_gpu_equals_the_column_loss(loss):
    """GRU4Rec's loss over distinct candidates equals the column loss on the device, gradients included."""
    from tests.unit.test_gru4rec_step import column_loss, make_model, steps

    got_model = make_model(loss, "shared", [6], 8, "false", dropout_embed=0.2, logq=1.0).cuda()
    ref_model = make_model(loss, "shared", [6], 8, "false", dropout_embed=0.2, logq=1.0).cuda()
    got_model.on_train_epoch_start(), ref_model.on_train_epoch_start()
    for step in steps(8):
        step = {k: v.cuda() for k, v in step.items()}
        torch.cuda.manual_seed(3)
        (got,) = got_model.batch_loss(step)
        torch.cuda.manual_seed(3)
        want = column_loss(ref_model, step)
        got_model.zero_grad(), ref_model.zero_grad()
        got.backward(), want.backward()
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
        for p, q in zip(got_model.parameters(), ref_model.parameters(), strict=True):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-8, atol=1e-10)
