"""Base LightningModule of session models: next-item evaluation over session-parallel steps.

Evaluation (Hidasi et al., ICLR'16 §4): the validation/test sessions arrive as chunks of session-parallel steps
(lanes; :mod:`recsys.data.session_batches`); every lane's state (GRU4Rec: hidden state) is reset when a new
session starts in it; at every event except a session's last, all training items are scored and the true next
item is ranked (:func:`~recsys.metrics.next_item_ranks`, ``tie_mode`` ``standard`` | ``conservative`` |
``median``). ``recall@K`` = fraction of events whose next item has rank ≤ K (a hit rate), ``mrr@K`` = mean of
``1/rank`` (0 beyond K); computed exactly from the ranks by ``TopKMetrics.update(ranks=...)`` (one relevant
item per event), summed over processes. Items seen earlier in the session are not excluded.

Recommendation: :meth:`SessionRecommender.prefix_scores` feeds prefixes of item ids through the same evaluation
step (one lane per prefix); :meth:`SessionRecommender.topk_after_prefixes` ranks the next item after each.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from recsys.metrics import TIE_MODES, TopKMetrics, next_item_ranks, topk_excluding
from recsys.models.ranking_module import TopKRecommender
from recsys.settings import Settings, check_settings, one_of

SESSION_METRICS = ("recall", "mrr")
STEP_KEYS = ("inputs", "targets", "lanes", "reset")


@dataclass(frozen=True)
class StepColumns:
    """The columns of a chunk's T session-parallel steps (each step's lanes' targets, then its extra negatives)
    grouped into each step's distinct items, for the whole chunk at once: one sort of the ``step · N + item`` keys
    (int32 when they fit) instead of one ``unique`` per step.

    The chunk's columns are its E targets, then its ``T × n`` negatives row by row; ``column_candidate`` is each
    column's index into ``candidates``, step t's distinct items (sorted) are
    ``candidates[cand_ptr[t]:cand_ptr[t+1]]``, and ``column_item`` holds every column's index among its step's
    candidates in step order (step t's targets, then its negatives: :meth:`step_column_items` splits it)."""

    candidates: torch.Tensor
    cand_ptr: torch.Tensor
    column_candidate: torch.Tensor
    column_item: torch.Tensor
    step_sizes: list[int]
    n: int

    @classmethod
    def of(cls, chunk: dict[str, torch.Tensor], num_items: int) -> StepColumns:
        ptr, targets, negatives = chunk["ptr"], chunk["targets"], chunk.get("negatives")
        num_steps, device = ptr.numel() - 1, ptr.device
        dtype = torch.int32 if num_steps * num_items < 2**31 else torch.int64
        steps = torch.arange(num_steps + 1, device=device, dtype=dtype)
        sizes = ptr.diff()
        keys = torch.repeat_interleave(steps[:-1] * num_items, sizes, output_size=targets.numel())
        keys = keys + targets.to(dtype)
        n = 0 if negatives is None else negatives.shape[1]
        if negatives is not None:
            keys = torch.cat([keys, (steps[:-1, None] * num_items + negatives.to(dtype)).reshape(-1)])
        distinct, column_candidate = torch.unique(keys, return_inverse=True)
        cand_ptr = torch.searchsorted(distinct, steps * num_items)
        column_step = torch.div(keys, num_items, rounding_mode="floor")
        column_item = column_candidate - cand_ptr[column_step]
        if n:  # step order: step t's b_t targets move n places per earlier step, its negatives follow them
            place = torch.cat([torch.arange(targets.numel(), device=device) + n * column_step[:targets.numel()],
                               ((ptr[1:] + n * steps[:-1].long())[:, None]
                                + torch.arange(n, device=device)).reshape(-1)])
            column_item = torch.empty_like(column_item).index_copy_(0, place, column_item)
        return cls(distinct.remainder(num_items).long(), cand_ptr, column_candidate, column_item, sizes.tolist(), n)

    def step_column_items(self) -> tuple[torch.Tensor, ...]:
        """Every step's columns ``(b_t + n,)``: its targets', then its negatives' index among its candidates."""
        return self.column_item.split([b + self.n for b in self.step_sizes])


def session_steps(chunk: dict[str, torch.Tensor]) -> Iterator[dict[str, torch.Tensor]]:
    """The steps of a chunk ``{inputs, targets, lanes, reset (E,), ptr (T+1,), [negatives, neg_log_q (T, n)]}``:
    step ``t`` is rows ``ptr[t]:ptr[t+1]`` (and row ``t`` of the per-step negatives)."""
    sizes = chunk["ptr"].diff().tolist()
    parts = {k: chunk[k].split(sizes) for k in STEP_KEYS}
    parts.update({k: chunk[k].unbind(0) for k in ("negatives", "neg_log_q") if k in chunk})
    for t in range(len(sizes)):
        yield {k: part[t] for k, part in parts.items()}


def as_chunk(step: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A single step as a chunk of one (:func:`session_steps` gives it back)."""
    chunk = {k: step[k] for k in STEP_KEYS}
    chunk["ptr"] = torch.tensor([0, step["inputs"].numel()], device=step["inputs"].device)
    chunk.update({k: step[k][None] for k in ("negatives", "neg_log_q") if k in step})
    return chunk


class SessionRecommender(TopKRecommender):
    """Base class: next-item evaluation over session-parallel steps with per-lane state.

    Subclasses implement :meth:`eval_scores` (scores ``(b, N)`` of one step, updating the lane state and
    honouring ``step["reset"]``); the per-pass state is dropped by :meth:`reset_eval_state`. The epoch
    hooks and metric logging are those of :class:`~recsys.models.ranking_module.TopKRecommender`.
    """

    data_kind = "session"
    #: the training batches a trained subclass needs (``data.train_batches``; None: nothing to train)
    train_batches: str | None = None
    settings: ClassVar[Settings] = {**TopKRecommender.settings, "tie_mode": one_of(*TIE_MODES)}

    def __init__(
        self,
        num_items: int,
        topk: Sequence[int] = (5, 10, 20),
        metrics: Sequence[str] = SESSION_METRICS,
        tie_mode: str = "standard",
    ) -> None:
        check_settings("model", {"tie_mode": tie_mode}, type(self))
        super().__init__(topk, metrics)
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

    # -- recommendation ---------------------------------------------------------------------------
    def prefix_scores(self, prefixes: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Float32 scores ``(S, N)`` of the next item after each prefix (``prefixes`` ``(S, L)`` internal ids,
        padded beyond ``lengths``), computed by :meth:`eval_scores`: one lane per prefix, reset at the first item,
        one vectorised step per position (not per session). The evaluation state is reset before and after."""
        n = prefixes.shape[0]
        prefixes, lengths = prefixes.to(self.device), lengths.to(self.device)
        out: torch.Tensor | None = None
        self.reset_eval_state()
        try:
            for t in range(int(lengths.max())):
                lanes = (lengths > t).nonzero().squeeze(1)
                step = {"inputs": prefixes[lanes, t], "lanes": lanes,
                        "reset": torch.full_like(lanes, t == 0, dtype=torch.bool), "targets": torch.zeros_like(lanes)}
                scores = self.eval_scores(step).float()
                if out is None:
                    out = torch.empty(n, scores.shape[1], device=self.device)
                last = lengths[lanes] == t + 1
                out[lanes[last]] = scores[last]
        finally:
            self.reset_eval_state()
        assert out is not None
        return out

    def topk_after_prefixes(self, prefixes: torch.Tensor, lengths: torch.Tensor, k: int,
                            exclude_seen: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-``k`` next items ``(S, k)`` and float32 scores after each prefix (:meth:`prefix_scores` ranked by
        :func:`~recsys.metrics.topk_excluding`); with ``exclude_seen`` the prefix's own items are set to −∞."""
        scores = self.prefix_scores(prefixes, lengths)
        exclude = None
        if exclude_seen:
            prefixes, lengths = prefixes.to(scores.device), lengths.to(scores.device)
            valid = torch.arange(prefixes.shape[1], device=scores.device)[None, :] < lengths[:, None]
            rows = torch.arange(prefixes.shape[0], device=scores.device)[:, None].expand_as(prefixes)[valid]
            exclude = (rows, prefixes[valid])
        return topk_excluding(scores, k, exclude)

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        """``batch``: ``{"prefixes" (S, L), "lengths" (S,)}`` (item ids, padded; :func:`pad_prefixes`) →
        ``{"items" (S, k), "scores" (S, k)}``: the next-item top ``predict_k`` after each prefix
        (:meth:`topk_after_prefixes`)."""
        with self.float32_scoring():
            items, scores = self.topk_after_prefixes(batch["prefixes"], batch["lengths"],
                                                     self.predict_k or self.test_metrics.max_k)
        return {"items": items, "scores": scores}


def pad_prefixes(prefixes: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """The input of :meth:`SessionRecommender.topk_after_prefixes`: an ``(S, L)`` int64 tensor of the prefixes
    (internal item ids, padded with 0) and their lengths ``(S,)``."""
    lengths = np.array([len(p) for p in prefixes], dtype=np.int64)
    flat = np.concatenate(prefixes).astype(np.int64) if len(prefixes) else np.zeros(0, np.int64)
    padded = np.zeros((len(prefixes), int(lengths.max(initial=1))), dtype=np.int64)
    padded[np.arange(padded.shape[1])[None, :] < lengths[:, None]] = flat
    return torch.from_numpy(padded), torch.from_numpy(lengths)


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
