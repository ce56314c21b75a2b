"""Checks that need a CUDA device (``pytest -m gpu``; skipped where none is visible, run by scripts/gpu_check.sh)."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from recsys.data.bpr_batches import BPREpochSampler
from recsys.data.graph_datamodule import GraphDataModule
from recsys.data.sources.synthetic import SyntheticGraphSource
from recsys.sampling import InBatchNegativeSampler, PopularityNegativeSampler, UniformNegativeSampler

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize("negatives", [UniformNegativeSampler(2, n_sample=3), PopularityNegativeSampler(1, alpha=0.75),
                                       InBatchNegativeSampler(n_sample=2)], ids=repr)
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
        if "neg_items" in a:
            for u, row in zip(users.tolist(), a["neg_items"].cpu().tolist(), strict=True):
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
