"""AtomicCheckpointIO: a checkpoint appears whole or not at all, and loads back with weights_only=True."""

from __future__ import annotations

import pytest
import torch

from recsys.utils.checkpoint_io import AtomicCheckpointIO


def test_checkpoint_is_written_whole_and_a_failed_write_leaves_the_old_one(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.arange(3.0)}, "epoch": 1}, path)
    assert torch.load(path, weights_only=True)["epoch"] == 1
    with pytest.raises(Exception):  # noqa: B017 (pickling a lambda fails half-way through the write)
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "epoch": 2, "bad": lambda: None}, path)
    assert torch.load(path, weights_only=True)["epoch"] == 1  # the previous checkpoint, intact
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # no temporary file left behind
