"""FiniteLossCheck: the first NaN/inf training loss stops the run naming epoch, batch, step and the last good
checkpoint (read at once, or deferred to every n-th step as on an accelerator)."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from recsys.errors import RecsysError
from recsys.utils.callbacks import FiniteLossCheck, NonFiniteLossError, PortableModelCheckpoint

BATCHES = 6  # per epoch


class Blowup(pl.LightningModule):
    """A regression whose loss is NaN from global step ``bad_step`` on."""

    def __init__(self, bad_step: int) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(2))
        self.bad_step = bad_step

    def training_step(self, batch, batch_idx):
        (x,) = batch
        loss = (x @ self.w - 1).pow(2).mean()
        return loss * float("nan") if self.global_step >= self.bad_step else loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def fit(tmp_path, bad_step: int, check: FiniteLossCheck) -> PortableModelCheckpoint:
    last = PortableModelCheckpoint(dirpath=tmp_path / "checkpoints", filename="last", monitor=None,
                                 save_on_train_epoch_end=True, enable_version_counter=False)
    trainer = pl.Trainer(max_epochs=4, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[check, last], default_root_dir=tmp_path)
    data = DataLoader(TensorDataset(torch.ones(BATCHES * 2, 2)), batch_size=2)
    trainer.fit(Blowup(bad_step), data)
    return last


@pytest.mark.parametrize("check", [FiniteLossCheck(), FiniteLossCheck(check_every_n_steps=4, defer=True)],
                         ids=["every-step", "deferred"])
def test_first_nan_names_epoch_batch_step_and_last_checkpoint(tmp_path, check):
    bad = 2 * BATCHES + 1  # epoch 2, batch 1
    with pytest.raises(NonFiniteLossError) as info:
        fit(tmp_path, bad, check)
    assert isinstance(info.value, RecsysError)  # the CLI prints one `error:` line and exits 2
    msg = str(info.value)
    assert f"at epoch 2, batch 1 (global step {bad + 1})" in msg, msg  # global_step counts the step just taken
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert f"last good checkpoint: {last}" in msg, msg
    payload = torch.load(last, map_location="cpu", weights_only=True)
    assert payload["epoch"] == 1 and torch.isfinite(payload["state_dict"]["w"]).all()


def test_nan_in_the_first_epoch_says_no_checkpoint_was_written(tmp_path):
    with pytest.raises(NonFiniteLossError, match="at epoch 0, batch 0 .*no checkpoint was written before it"):
        fit(tmp_path, 0, FiniteLossCheck())


def test_finite_losses_train_to_the_end(tmp_path):
    last = fit(tmp_path, 10**9, FiniteLossCheck(check_every_n_steps=4, defer=True))
    assert torch.load(last.best_model_path, map_location="cpu", weights_only=True)["epoch"] == 3
    assert not list((tmp_path / "checkpoints").glob(".*.tmp"))  # written to a temporary file, then renamed
