"""Top-K ranking metrics as torchmetrics Metrics with summed states (exact under DDP).

Protocol (LightGCN / NGCF full ranking: Wang et al., SIGIR'19 §4.1.2; He et al., SIGIR'20 §4.1), per evaluated
user u with relevant set T_u and ranked list r_1..r_K:

* recall@K    = |hits in top K| / |T_u|
* precision@K = |hits in top K| / K
* hit_rate@K  = 1 if any hit in top K else 0
* ndcg@K      = Σ_{r<=K} hit_r / log2(r+1)  /  Σ_{r<=min(K,|T_u|)} 1 / log2(r+1)
* mrr@K       = 1 / (rank of the first hit) if it is <= K else 0

Users with no relevant item are not counted. The metric keeps, per (metric, K), the sum over users, and
the number of users: both reduce by summation across processes, so the mean is exact under DDP.
With ``keep_rows=True`` it also keeps every evaluated row's values with the ids the caller names it by
(:meth:`TopKMetrics.rows`: the per-user / per-event results of a test, gathered by
:mod:`recsys.utils.per_user`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric

METRIC_NAMES = ("recall", "ndcg", "precision", "hit_rate", "mrr")
TIE_MODES = ("standard", "conservative", "median")


def rank_topk(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` best items per row, best first; ties broken by the lower item index.

    Deterministic (unlike ``torch.topk`` on ties), so evaluation is reproducible bit for bit and equal
    across devices and process counts. Fast path: one ``topk`` of ``k + 1`` — when the ``(k+1)``-th score
    is strictly below the ``k``-th, the selected set is exact and only its order among equal scores needs
    fixing; rows with a tie across the cut (rare with real-valued scores) take the exact path.
    """
    n = scores.shape[1]
    if k >= n:
        return _order_by_score_then_index(scores, torch.arange(n, device=scores.device).expand_as(scores))
    vals, idx = torch.topk(scores, k + 1, dim=1)
    idx = idx[:, :k]
    cut_tied = vals[:, k] == vals[:, k - 1]
    if cut_tied.any():
        idx = idx.clone()
        idx[cut_tied] = _select_topk_exact(scores[cut_tied], k)
    return _order_by_score_then_index(scores, idx)


def topk_excluding(
    scores: torch.Tensor, k: int, exclude: tuple[torch.Tensor, torch.Tensor] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``min(k, N)`` best columns of ``scores`` ``(B, N)`` per row, ranked by :func:`rank_topk` (ties → lower
    index), and their scores; the ``exclude`` pairs ``(row, column)`` are set to −∞ first, **in place**. An
    excluded column that still enters the top (fewer than ``k`` allowed columns) keeps the score −∞.

    The one ranking of the package: evaluation (masked train/validation items), ``predict_step``, ``recommend``
    and the FAISS retrieval of an export (the candidates' columns) call it."""
    if exclude is not None:
        rows, cols = exclude
        scores[rows.to(scores.device), cols.to(scores.device)] = -torch.inf
    top = rank_topk(scores, min(k, scores.shape[1]))
    return top, torch.gather(scores, 1, top)


def hits_at(top: torch.Tensor, target_rows: torch.Tensor, target_items: torch.Tensor, num_items: int) -> torch.Tensor:
    """``hits[b, r]``: whether item ``top[b, r]`` is one of row ``b``'s targets, ``(B, K)`` bool.

    The targets are ``(row, item)`` pairs sorted by row, then item (as ``UserItemCSR.gather_rows`` gives them);
    each top item is looked up by binary search among the sorted keys ``row · N + item`` (``B·K·log T`` work,
    no ``B × N`` matrix)."""
    n = num_items
    keys = target_rows * n + target_items
    if keys.numel() == 0:
        return torch.zeros_like(top, dtype=torch.bool)
    query = torch.arange(top.shape[0], device=top.device)[:, None] * n + top
    pos = torch.searchsorted(keys, query.reshape(-1)).clamp_(max=keys.numel() - 1)
    return (keys[pos] == query.reshape(-1)).view(top.shape)


def next_item_ranks(scores: torch.Tensor, targets: torch.Tensor, tie_mode: str = "standard") -> torch.Tensor:
    """1-based rank of ``targets[b]`` in ``scores[b]`` over all items, ``(b,)`` (GRU4Rec's next-item protocol,
    Hidasi et al., ICLR'16 §4):
    ``standard`` = 1 + #items scoring strictly higher (optimistic, the official default), ``conservative`` =
    #items scoring higher or equal (pessimistic), ``median`` = their mean (the middle of the tied block).
    int64 for ``standard``/``conservative``, float64 for ``median``."""
    target = scores.gather(1, targets[:, None])
    if tie_mode == "standard":
        return (scores > target).sum(1) + 1
    if tie_mode == "conservative":
        return (scores >= target).sum(1)
    if tie_mode == "median":
        return ((scores > target).sum(1) + 1 + (scores >= target).sum(1)).to(torch.float64) / 2
    raise ValueError(f"model.tie_mode={tie_mode!r}; expected one of {TIE_MODES}")


def _order_by_score_then_index(scores: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``idx`` reordered by (score descending, item index ascending)."""
    idx = torch.sort(idx, dim=1).values
    order = torch.sort(torch.gather(scores, 1, idx), dim=1, descending=True, stable=True).indices
    return torch.gather(idx, 1, order)


def _select_topk_exact(scores: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` best items per row (any order), taking the lowest indices among those tied at the cut."""
    kth = torch.topk(scores, k, dim=1).values[:, -1:]
    above = scores > kth
    tied = scores == kth
    free = k - above.sum(1, keepdim=True)  # slots left for items tied with the k-th score
    keep = above | (tied & (torch.cumsum(tied, 1) <= free))
    return keep.nonzero()[:, 1].view(-1, k)


class TopKMetrics(Metric):
    """Accumulates recall/ndcg/precision/hit_rate/mrr at several K from per-user hit lists.

    ``keep_rows``: also keep each row's values (the metrics of :attr:`row_columns`) with its ``row_ids``
    (given to :meth:`update`), until :meth:`reset`; :meth:`rows` returns this process's rows."""

    full_state_update = False
    higher_is_better = True

    def __init__(
        self, ks: Sequence[int] = (10, 20, 50), metrics: Sequence[str] = METRIC_NAMES, keep_rows: bool = False
    ) -> None:
        super().__init__()
        unknown = set(metrics) - set(METRIC_NAMES)
        if unknown:
            raise ValueError(f"unknown metrics {sorted(unknown)}; available: {list(METRIC_NAMES)}")
        if not ks or min(ks) < 1:
            raise ValueError(f"metric cut-offs must be positive integers, got {list(ks)}")
        self.ks = sorted(set(int(k) for k in ks))
        self.metric_names = list(metrics)
        self.keep_rows = keep_rows
        self.add_state("sums", torch.zeros(len(METRIC_NAMES), len(self.ks), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        # IDCG@r for r = 1..max K: a float64 constant computed once, moved to the hits' device on first use (a
        # plain attribute, not a buffer: a module-wide dtype cast such as precision=bf16-true must not round it)
        ideal_ranks = torch.arange(1, self.max_k + 1, dtype=torch.float64)
        self._cum_ideal = torch.cumsum(1.0 / torch.log2(ideal_ranks + 1.0), 0)
        # kept rows (keep_rows): (ids (n, c) int64, values (n, len(row_columns)) float64) per update; not a
        # torchmetrics state (never synced by compute): recsys.utils.per_user gathers them once, after the test
        self._rows: list[tuple[torch.Tensor, torch.Tensor]] = []
        # rows of (metric, K) in the flattened (len(METRIC_NAMES), len(ks)) values, in row_columns order
        self._row_index = torch.tensor([METRIC_NAMES.index(name) * len(self.ks) + j
                                        for name in self.metric_names for j in range(len(self.ks))])

    @property
    def max_k(self) -> int:
        return self.ks[-1]

    @property
    def row_columns(self) -> list[str]:
        """Names of the values of a kept row (``recall@10``, …; the keys of :meth:`compute`, in its order)."""
        return [f"{name}@{k}" for name in self.metric_names for k in self.ks]

    def update(  # type: ignore[override]
        self,
        hits: torch.Tensor | None = None,
        num_relevant: torch.Tensor | None = None,
        *,
        ranks: torch.Tensor | None = None,
        row_ids: torch.Tensor | None = None,
    ) -> None:
        """Either ``hits[u, r]``: whether the item at rank r+1 of user u is relevant (shape ``(B, >= max K)`` or
        narrower when the catalogue is smaller) with ``num_relevant[u] = |T_u|``; or ``ranks=``: one relevant
        item per row at that 1-based rank (:meth:`rank_row_values`). ``row_ids`` ``(B,)`` or ``(B, c)``: what
        names each row in :meth:`rows` (kept with ``keep_rows``; rows without a relevant item are dropped)."""
        if ranks is not None:
            values = self.rank_row_values(ranks)
        elif hits is None or num_relevant is None:
            raise TypeError("TopKMetrics.update takes (hits, num_relevant) or ranks=")
        else:
            keep = num_relevant > 0
            values = self.row_values(hits[keep], num_relevant[keep])
            row_ids = None if row_ids is None else row_ids[keep]
        if values.shape[0] == 0:
            return
        self.sums += values.sum(0)
        self.count += values.shape[0]
        if self.keep_rows and row_ids is not None:
            ids = row_ids.reshape(values.shape[0], -1).to(torch.int64)
            if self._row_index.device != values.device:
                self._row_index = self._row_index.to(values.device)
            self._rows.append((ids, values.flatten(1)[:, self._row_index]))

    def row_values(self, hits: torch.Tensor, num_relevant: torch.Tensor) -> torch.Tensor:
        """Every metric of every row, ``(B, len(METRIC_NAMES), len(ks))`` float64, from ``hits`` (as in
        :meth:`update`) of rows that all have ``num_relevant > 0``."""
        hits = hits.to(torch.float64)
        n_rel = num_relevant.to(torch.float64)
        width = hits.shape[1]
        # no floating-point cumsum here: CUDA has no deterministic kernel for it (it raises under
        # trainer.deterministic=true), so integer counts and one sum per cut-off
        ranks = torch.arange(1, width + 1, device=hits.device, dtype=torch.float64)
        gains = hits / torch.log2(ranks + 1.0)
        cum_hits = torch.cumsum(hits.to(torch.int64), 1).to(torch.float64)
        if self._cum_ideal.device != hits.device:
            self._cum_ideal = self._cum_ideal.to(hits.device)
        cum_ideal = self._cum_ideal
        first_hit = torch.where(hits.any(1), hits.argmax(1).to(torch.float64) + 1.0, torch.inf)
        cols = []
        for k in self.ks:
            c = min(k, width)
            n_hit = cum_hits[:, c - 1]
            ideal = cum_ideal[(n_rel.clamp(max=k) - 1).long()]
            cols.append(torch.stack([
                n_hit / n_rel,
                gains[:, :c].sum(1) / ideal,
                n_hit / k,
                (n_hit > 0).to(torch.float64),
                torch.where(first_hit <= k, 1.0 / first_hit, torch.zeros_like(first_hit)),
            ], 1))
        return torch.stack(cols, 2)

    def rank_row_values(self, ranks: torch.Tensor) -> torch.Tensor:
        """Every metric of rows with one relevant item at 1-based rank ``ranks[b]`` (next-item prediction;
        fractional under the ``median`` tie rule), ``(B, len(METRIC_NAMES), len(ks))`` float64: recall =
        hit_rate = [r ≤ K], ndcg = [r ≤ K] / log2(r + 1) (IDCG = 1), precision = [r ≤ K] / K, mrr = [r ≤ K] / r.
        Equals :meth:`row_values` of the one-hot rows."""
        r = ranks.to(torch.float64)
        cols = []
        for k in self.ks:
            hit = (r <= k).to(torch.float64)
            cols.append(torch.stack([hit, hit / torch.log2(r + 1.0), hit / k, hit, hit / r], 1))
        return torch.stack(cols, 2)

    def rows(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This process's kept rows since the last :meth:`reset`, in update order: ``(ids (n, c) int64, values
        (n, len(row_columns)) float64)`` (``c = 0`` when none was kept)."""
        if not self._rows:
            return (torch.zeros(0, 0, dtype=torch.int64, device=self.sums.device),
                    torch.zeros(0, len(self.row_columns), dtype=torch.float64, device=self.sums.device))
        return torch.cat([ids for ids, _ in self._rows]), torch.cat([v for _, v in self._rows])

    def reset(self) -> None:
        super().reset()
        self._rows = []

    def compute(self) -> dict[str, torch.Tensor]:  # type: ignore[override]
        mean = self.sums / self.count.clamp_min(1.0)
        return {
            f"{name}@{k}": mean[METRIC_NAMES.index(name), j].float()
            for name in self.metric_names
            for j, k in enumerate(self.ks)
        }
