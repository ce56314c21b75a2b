"""What the graph and session DataModules share: cached preparation, set-up, split choice, chunked training."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytorch_lightning as pl
from torch.utils.data import DataLoader

from recsys.data.cache import Source, cache_key, ensure_cached, load_or_build
from recsys.data.chunk_size import auto_steps_per_chunk
from recsys.data.loading import EpochSampler, distributed_rank_and_world
from recsys.errors import ConfigError
from recsys.sampling import NegativeSampler, UniformNegativeSampler
from recsys.settings import NON_NEGATIVE_INT, POSITIVE_INT, Settings, check_settings, either, one_of

log = logging.getLogger(__name__)

AUTO = "auto"


class RecDataModule(pl.LightningDataModule):
    """A dataset source built (or read from the cache) once, on one process, and its loaders.

    * ``prepare_data`` builds the cache file (Lightning runs it on one process per node); ``setup`` loads it
      and calls :meth:`on_splits`; ``val`` loads the validation split, or the test split with
      ``validate_on_test=True`` (the papers' protocol; runs made that way say so in ``metrics.json``).
    * Training batches come in chunks of ``steps_per_chunk`` optimiser steps (:mod:`recsys.models.chunked`):
      an int, or ``auto`` (chosen from the measured step cost when a fit first asks for the training loader,
      :mod:`recsys.data.chunk_size`; 1 outside a fit); always 1 under DDP.

    ``path`` is ``data.path``, only interpolated into ``source.path`` by the configs.
    """

    kind = "?"
    #: the ``data.*`` settings (:mod:`recsys.settings`; subclasses extend them): the training loader's
    #: (:class:`~recsys.data.loading.EpochSampler`), ``steps_per_chunk`` also ``auto``
    settings: ClassVar[Settings] = {
        **EpochSampler.settings,
        "eval_batch_size": POSITIVE_INT,
        "num_workers": NON_NEGATIVE_INT,
        "steps_per_chunk": either(one_of(AUTO), EpochSampler.settings["steps_per_chunk"]),
    }

    def __init__(
        self,
        source: Source,
        batch_size: int,
        eval_batch_size: int,
        cache_dir: str | None = None,
        validate_on_test: bool = False,
        num_workers: int = 0,
        seed: int = 0,
        negative_sampler: NegativeSampler | None = None,
        path: str | None = None,
        steps_per_chunk: int | str = AUTO,
    ) -> None:
        check_settings("data", {"batch_size": batch_size, "eval_batch_size": eval_batch_size, "num_workers": num_workers,
                                "steps_per_chunk": steps_per_chunk}, type(self))
        super().__init__()
        self.source = source
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.validate_on_test = validate_on_test
        self.num_workers = num_workers
        self.seed = seed
        self.negative_sampler = negative_sampler or UniformNegativeSampler()
        self.path = path
        self.steps_per_chunk = steps_per_chunk
        self._auto_steps: int | None = None  # data.steps_per_chunk=auto, resolved in the first fit
        self.splits: Any = None

    # -- preparation ---------------------------------------------------------------------------
    def prepare_data(self) -> None:
        if self.cache_dir is not None:
            ensure_cached(self.source, self.cache_dir)

    def setup(self, stage: str | None = None) -> None:
        if self.splits is not None:
            return
        self.on_splits(load_or_build(self.source, self.cache_dir))

    def on_splits(self, splits: Any) -> None:
        """Keep the loaded splits (subclasses derive what their loaders need)."""
        self.splits = splits

    @property
    def identity(self) -> str:
        """``<source name>-<cache key>``: equal for two runs exactly when they evaluate the same dataset and split
        (the key hashes the source fingerprint: configuration, preprocessing, file identities)."""
        return f"{self.source.name}-{cache_key(self.source)}"

    def evaluation_units(self, split: str, ids: np.ndarray) -> dict[str, np.ndarray]:
        """The columns naming evaluated rows of ``split`` given their ids ``(n, c)`` (as the evaluation batches
        name them to :class:`~recsys.metrics.TopKMetrics`), original ids where the data has them."""
        raise NotImplementedError

    def empty_validation(self, how: str) -> ConfigError:
        return ConfigError(f"data source {self.source.name!r} has an empty validation split; set {how}")

    def chunk_steps(self) -> int:
        """Training steps per chunk: ``data.steps_per_chunk``; 1 under DDP (one backward per forward of the wrapped
        model); ``auto`` is measured once, in the first fit (:func:`~recsys.data.chunk_size.auto_steps_per_chunk`),
        and is 1 outside a fit."""
        _, world = distributed_rank_and_world()
        if world > 1:
            return 1
        if self.steps_per_chunk != AUTO:
            return int(self.steps_per_chunk)
        if self._auto_steps is None:
            if self.trainer is None or self.trainer.lightning_module is None:
                return 1
            self._auto_steps = 1  # the example chunk below is drawn with one step per chunk
            self._auto_steps = auto_steps_per_chunk(self.trainer, self.example_batch)
        return self._auto_steps

    # -- loaders -------------------------------------------------------------------------------
    def eval_loader(self, split: str, testing: bool) -> DataLoader:
        """Evaluation batches over ``split`` (``valid`` or ``test``); ``testing``: for the test stage."""
        raise NotImplementedError

    def val_dataloader(self) -> DataLoader:
        return self.eval_loader("test" if self.validate_on_test else "valid", testing=False)

    def test_dataloader(self) -> DataLoader:
        return self.eval_loader("test", testing=True)

    def example_batch(self) -> Any:
        """One training step's batch (drawn apart from the epochs' streams), for measuring the step cost."""
        raise NotImplementedError
