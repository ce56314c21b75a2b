"""Checkpoints that appear whole or not at all (a Lightning ``CheckpointIO`` plugin)."""

from __future__ import annotations

from typing import Any

import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO

from recsys.io import atomic_write


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``TorchCheckpointIO`` with local files written atomically (:func:`recsys.io.atomic_write`: a
    temporary file next to the target, fsynced, then renamed over it), so a kill never leaves a truncated
    checkpoint behind (Lightning's own writer keeps its temporary file in the system temp folder, and across file
    systems its "move" is a copy). Remote (``scheme://``) paths use Lightning's writer unchanged. The trainer's
    strategy calls it on rank 0 only."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        atomic_write(path, lambda f: torch.save(checkpoint, f))
        return None
