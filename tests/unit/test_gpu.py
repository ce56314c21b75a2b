"""Checks that need a CUDA device (``pytest -m gpu``; skipped where none is visible, run by scripts/gpu_check.sh)."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from recsys.data.bpr_batches import BPREpochSampler
from recsys.data.graph_datamodule import GraphDataModule
from recsys.data.interactions import UserItemCSR
from recsys.data.sources.synthetic import SyntheticGraphSource
from recsys.models.chunked import lightning_steps_needed
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


def test_sixteen_bit_mixed_precision_steps_go_through_lightning():
    """16-mixed scales the loss (GradScaler): the chunked steps must keep Lightning's wrappers."""
    dm = GraphDataModule(SyntheticGraphSource(num_users=50, num_items=40, min_interactions=3, max_interactions=20,
                                              seed=2), batch_size=16, cache_dir=None)
    dm.setup("fit")
    model = GraphRecommender(dm.info, encoder=LightGCNEncoder, optimizer=torch.optim.Adam, embedding_dim=4)
    trainer = pl.Trainer(accelerator="gpu", devices=1, precision="16-mixed", logger=False, enable_checkpointing=False)
    assert lightning_steps_needed(trainer, model)


@pytest.mark.parametrize("loss", ["cross-entropy", "bpr-max"])
def test_gru4rec_written_out_gradients_on_the_gpu(loss):
    """GRU4Rec's written-out gradients equal autograd's on the device, dropout draws included."""
    from tests.unit.test_gru4rec_gradients import make_model, steps

    manual = make_model(loss, "shared", [6], 8, "false", dropout_embed=0.2, logq=1.0).cuda()
    reference = make_model(loss, "shared", [6], 8, "false", dropout_embed=0.2, logq=1.0).cuda()
    manual.on_train_epoch_start(), reference.on_train_epoch_start()
    for step in steps(8):
        step = {k: v.cuda() for k, v in step.items()}
        torch.cuda.manual_seed(3)
        (got,) = manual.batch_gradients(step)
        torch.cuda.manual_seed(3)
        (want,) = reference.batch_loss(step)
        reference.zero_grad()
        want.backward()
        torch.testing.assert_close(got, want.detach(), rtol=1e-10, atol=1e-12)
        for p, q in zip(manual.parameters(), reference.parameters(), strict=True):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-8, atol=1e-10)
