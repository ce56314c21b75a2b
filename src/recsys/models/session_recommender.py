"""Base LightningModule of session models: next-item evaluation over session-parallel steps.

Evaluation (algorithms.md §3.5): the validation/test sessions arrive as chunks of session-parallel steps
(lanes; :mod:`recsys.data.session_batches`); every lane's state (GRU4Rec: hidden state) is reset when a new
session starts in it; at every event except a session's last, all training items are scored and the true next
item is ranked (:func:`~recsys.metrics.next_item_ranks`, ``tie_mode`` ``standard`` | ``conservative`` |
``median``). ``recall@K`` = fraction of events whose next item has rank ≤ K (a hit rate), ``mrr@K`` = mean of
``1/rank`` (0 beyond K); computed exactly from the ranks by ``TopKMetrics.update(ranks=...)`` (one relevant
item per event), summed over processes. Items seen earlier in the session are not excluded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch

from recsys.errors import ConfigError
from recsys.metrics import TIE_MODES, TopKMetrics, next_item_ranks
from recsys.models.ranking_module import TopKRecommender

SESSION_METRICS = ("recall", "mrr")
STEP_KEYS = ("inputs", "targets", "lanes", "reset")


def session_steps(chunk: dict[str, torch.Tensor]) -> Iterator[dict[str, torch.Tensor]]:
    """The steps of a chunk ``{inputs, targets, lanes, reset (E,), ptr (T+1,), [negatives, neg_log_q (T, n)]}``:
    step ``t`` is rows ``ptr[t]:ptr[t+1]`` (and row ``t`` of the per-step negatives)."""
    bounds = chunk["ptr"].tolist()
    per_step = [k for k in ("negatives", "neg_log_q") if k in chunk]
    for t in range(len(bounds) - 1):
        lo, hi = bounds[t], bounds[t + 1]
        step = {k: chunk[k][lo:hi] for k in STEP_KEYS}
        step.update({k: chunk[k][t] for k in per_step})
        yield step


class SessionRecommender(TopKRecommender):
    """Base class: next-item evaluation over session-parallel steps with per-lane state.

    Subclasses implement :meth:`eval_scores` (scores ``(b, N)`` of one step, updating the lane state and
    honouring ``step["reset"]``); the per-pass state is dropped by :meth:`reset_eval_state`. The epoch
    hooks and metric logging are those of :class:`~recsys.models.ranking_module.TopKRecommender`.
    """

    data_kind = "session"

    def __init__(
        self,
        num_items: int,
        topk: Sequence[int] = (5, 10, 20),
        metrics: Sequence[str] = SESSION_METRICS,
        tie_mode: str = "standard",
    ) -> None:
        super().__init__(topk, metrics)
        if tie_mode not in TIE_MODES:
            raise ConfigError(f"model.tie_mode={tie_mode!r}; expected one of {TIE_MODES}")
        self.num_items = num_items
        self.tie_mode = tie_mode

    # -- to implement ----------------------------------------------------------------------------
    def eval_scores(self, step: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def reset_eval_state(self) -> None:
        """Forget the lanes' state (called before and after every evaluation pass)."""

    # -- evaluation ------------------------------------------------------------------------------
    def prepare_scoring(self) -> None:
        self.reset_eval_state()

    def finish_scoring(self) -> None:
        self.reset_eval_state()

    def evaluate_batch(self, chunk: dict[str, torch.Tensor], metric: TopKMetrics) -> None:
        """Ranks of every step's next items, one metric update per chunk (rows named by the chunk's
        ``sessions``/``positions`` when the loader gives them: the per-event test results)."""
        ranks = [next_item_ranks(self.eval_scores(step), step["targets"], self.tie_mode)
                 for step in session_steps(chunk) if step["inputs"].numel()]
        if ranks:
            ids = torch.stack([chunk["sessions"], chunk["positions"]], 1) if "sessions" in chunk else None
            metric.update(ranks=torch.cat(ranks), row_ids=ids)

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        """``batch``: ``{"prefixes" (S, L), "lengths" (S,)}`` (item ids, padded) → ``{"items" (S, k), "scores"
        (S, k)}``: the next-item top ``predict_k`` after each prefix (:func:`recsys.recommend.topk_sessions`)."""
        from recsys.recommend import topk_sessions

        with self.float32_scoring():
            items, scores = topk_sessions(self, batch["prefixes"], batch["lengths"],
                                          self.predict_k or self.test_metrics.max_k)
        return {"items": items, "scores": scores}


class LaneState:
    """Per-lane tensors of a session-parallel pass (e.g. the GRU's hidden state per layer).

    Sized by the first non-empty step of a pass (which holds every lane); rows are gathered for the step's
    ``lanes``, zeroed where ``reset``, and written back (detached) after the step.
    """

    def __init__(self, factory: Callable[[int], list[torch.Tensor]]) -> None:
        self.factory = factory
        self.tensors: list[torch.Tensor] | None = None

    def clear(self) -> None:
        self.tensors = None

    def gather(self, lanes: torch.Tensor, reset: torch.Tensor) -> list[torch.Tensor]:
        if self.tensors is None:
            self.tensors = self.factory(lanes.numel())
        reset = reset[:, None]
        return [t.index_select(0, lanes).masked_fill_(reset, 0.0) for t in self.tensors]

    @torch.no_grad()
    def scatter(self, lanes: torch.Tensor, values: list[torch.Tensor]) -> None:
        assert self.tensors is not None
        for t, v in zip(self.tensors, values, strict=True):
            t.index_copy_(0, lanes, v.detach().to(t.dtype))
