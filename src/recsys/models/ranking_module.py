"""Base LightningModule for top-K recommenders: exact full-ranking validation and test."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import pytorch_lightning as pl
import torch

from recsys.metrics import METRIC_NAMES, TopKMetrics, hits_at, topk_excluding
from recsys.settings import POSITIVE_INTS, Settings, check_settings


class TopKRecommender(pl.LightningModule):
    """Evaluates ``score_users`` by full ranking over all items, train items masked (Wang et al., SIGIR'19 §4.1.2).

    Per evaluation batch: score every item for the batch's users (into a buffer kept across batches), take the
    top ``max K`` with the masked items (train, plus validation at test time) set to −∞ (ties → lower item id;
    :func:`~recsys.metrics.topk_excluding`), look the top items up among the batch's targets
    (:func:`~recsys.metrics.hits_at`) and feed :class:`~recsys.metrics.TopKMetrics`. Logged at epoch end as
    ``val/recall@20``, ``test/ndcg@20``, …

    Scores are float32 whatever ``trainer.precision``: the evaluation and prediction steps run with autocast
    off (:meth:`float32_scoring`), so mixed precision never changes a ranking.
    """

    #: the kind of DataModule this model trains on (checked before the model is built)
    data_kind = "graph"
    #: the ``model.*`` settings this class owns (:mod:`recsys.settings`; subclasses extend them)
    settings: ClassVar[Settings] = {"topk": POSITIVE_INTS}
    #: scores ranked at a time on the CPU (users × items; the whole batch on an accelerator): ~16 MiB, so the
    #: block stays in cache between the product and the top-k (128 Gowalla users)
    score_block_elements = 1 << 22

    def __init__(self, topk: Sequence[int] = (10, 20, 50), metrics: Sequence[str] = METRIC_NAMES) -> None:
        check_settings("model", {"topk": topk}, type(self))
        super().__init__()
        self.val_metrics = TopKMetrics(topk, metrics)
        # per-user rows of the test, written by recsys.utils.per_user.PerUserResults (per_user.parquet)
        self.test_metrics = TopKMetrics(topk, metrics, keep_rows=True)
        self._score_buffer: torch.Tensor | None = None

    # -- to implement ----------------------------------------------------------------------------
    def score_users(self, users: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Scores ``(len(users), num_items)``; higher is better. ``out``: a float32 buffer of that shape to write
        them into (a hint: the result may be another tensor)."""
        raise NotImplementedError

    def export_rows(self) -> tuple[torch.Tensor | None, torch.Tensor, str] | None:
        """``(user rows or None, item rows, how a query row is formed)`` whose inner products are the model's scores
        (:func:`recsys.export.export_embeddings`); None: the model has no embeddings to export (a baseline)."""
        return None

    def prepare_scoring(self) -> None:
        """Hook run once before an evaluation epoch (e.g. propagate the graph once)."""

    def finish_scoring(self) -> None:
        """Hook run after an evaluation epoch (drop caches)."""

    # -- evaluation ------------------------------------------------------------------------------
    def float32_scoring(self) -> torch.autocast:
        """Autocast off on this module's device: Lightning runs the steps under ``bf16-mixed``/``16-mixed``
        autocast, which would score in half precision and reorder near-ties."""
        return torch.autocast(device_type=self.device.type, enabled=False)

    def evaluate_batch(self, batch: dict[str, torch.Tensor], metric: TopKMetrics) -> None:
        """Score, mask and rank the batch's users block by block (:attr:`score_block_elements` scores on the CPU:
        the block stays in cache between the product and the top-k, ~1.4× faster than whole 1024-user batches on
        Gowalla)."""
        users = batch["users"]
        n = users.numel()
        step = n if self.device.type != "cpu" else max(1, self.score_block_elements // max(1, self._num_items()))
        bounds = [*range(0, n, step), n]
        at = torch.tensor(bounds, device=users.device)
        masks = torch.searchsorted(batch["mask_rows"], at).tolist()
        targets = torch.searchsorted(batch["target_rows"], at).tolist()
        hits = []
        for b, (lo, hi) in enumerate(zip(bounds, bounds[1:], strict=False)):
            scores = self.score_users(users[lo:hi], out=self._buffer(hi - lo)).float()
            masked = slice(masks[b], masks[b + 1])
            top, _ = topk_excluding(scores, metric.max_k, (batch["mask_rows"][masked] - lo, batch["mask_items"][masked]))
            rows = slice(targets[b], targets[b + 1])
            hits.append(hits_at(top, batch["target_rows"][rows] - lo, batch["target_items"][rows], scores.shape[1]))
        num_relevant = torch.bincount(batch["target_rows"], minlength=n)
        metric.update(torch.cat(hits), num_relevant, row_ids=users)

    def _num_items(self) -> int:
        return int(self.hparams.get("num_items") or 0) if hasattr(self, "hparams") else 0

    def _buffer(self, rows: int) -> torch.Tensor | None:
        """A float32 ``(rows, num_items)`` view of the evaluation score buffer (grown as needed, dropped after the
        pass), or ``None`` before the item count is known."""
        num_items = self._num_items()
        if not num_items:
            return None
        buf = self._score_buffer
        if buf is None or buf.shape[0] < rows or buf.device != self.device:
            buf = self._score_buffer = torch.empty(rows, num_items, dtype=torch.float32, device=self.device)
        return buf[:rows]

    # validation and test: the same scoring, each into its own metrics
    def on_validation_epoch_start(self) -> None:
        self.prepare_scoring()

    def on_test_epoch_start(self) -> None:
        self.prepare_scoring()

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        with self.float32_scoring():
            self.evaluate_batch(batch, self.val_metrics)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        with self.float32_scoring():
            self.evaluate_batch(batch, self.test_metrics)

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val", self.val_metrics)

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test", self.test_metrics)

    # -- prediction (trainer.predict) -----------------------------------------------------------
    #: list length of ``predict_step`` (None: the largest evaluated K)
    predict_k: int | None = None

    def topk_users(self, users: torch.Tensor, k: int,
                   exclude: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-``k`` items ``(B, k)`` and their float32 scores of ``users`` (internal ids), ranked as in evaluation
        (:func:`~recsys.metrics.topk_excluding`) with the ``exclude`` pairs ``(batch_row, item)`` set to −∞;
        :meth:`prepare_scoring` must have run."""
        return topk_excluding(self.score_users(users).float(), k, exclude)

    def on_predict_epoch_start(self) -> None:
        self.prepare_scoring()

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        """``batch``: ``{"users"}`` (+ ``mask_rows``/``mask_items`` to exclude, as the evaluation batches) →
        ``{"users", "items" (B, k), "scores" (B, k)}``: the top ``predict_k`` (:meth:`topk_users`)."""
        mask = (batch["mask_rows"], batch["mask_items"]) if "mask_rows" in batch else None
        with self.float32_scoring():
            items, scores = self.topk_users(batch["users"], self.predict_k or self.test_metrics.max_k, mask)
        return {"users": batch["users"], "items": items, "scores": scores}

    def on_predict_epoch_end(self) -> None:
        self.finish_scoring()

    def _log_metrics(self, stage: str, metric: TopKMetrics) -> None:
        # compute() already sums the states over processes, so every rank logs the same exact value
        values = metric.compute()
        metric.reset()
        self.finish_scoring()
        self._score_buffer = None
        for name, value in values.items():
            self.log(f"{stage}/{name}", value, prog_bar=name == "recall@20", sync_dist=False)
