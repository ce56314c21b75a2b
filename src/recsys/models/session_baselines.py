"""Session baselines on the GRU4Rec evaluation path (nothing to train: ``train.py`` validates and tests them).

* :class:`SessionMostPop` (``model=session_pop``): ``score(i) = supp(i)``, the number of training events.
* :class:`SessionPop` (``model=spop``, S-POP): the items of the current session ranked by how often they
  occurred in it so far, then by global popularity: ``score(i) = n_session(i) + supp(i) / (supp(i) + 1)``
  (the popularity term is in ``[0, 1)``, so it only breaks ties; as GRU4Rec's baseline code).
* :class:`ItemKNN` (``model=item_knn``): item-to-item co-occurrence of the current item (GRU4Rec's Item-KNN):
  ``sim(i, j) = c_ij / ((s_i + λ)^α (s_j + λ)^(1−α))`` with events counted as GRU4Rec's ``baselines.ItemKNN.fit``
  does, repeats included: every training event of ``i`` adds 1 to ``c_ij`` for each distinct item ``j`` of its
  session (the official ``iarray[session_items] += 1`` adds once per distinct index), so
  ``c_ij = Σ_sessions n_s(i)·[j ∈ s]`` (``n_s(i)`` = events of ``i`` in session ``s``; not symmetric) and
  ``s_i`` = training events of ``i``; the ``neighbours`` most similar items of every item are kept,
  all others score 0; ``popularity_tiebreak`` adds ``1e-6 · supp/(supp+1)`` so zero-similarity items are
  ranked by popularity instead of tying.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch

from recsys.info import SessionInfo, SessionSequences
from recsys.models.session_recommender import SESSION_METRICS, LaneState, SessionRecommender
from recsys.settings import NON_NEGATIVE_NUMBER, POSITIVE_INT, UNIT_INTERVAL, Settings, check_settings


def _squashed_popularity(support: torch.Tensor) -> torch.Tensor:
    s = support.double()
    return (s / (s + 1.0)).float()


class SessionMostPop(SessionRecommender):
    """Items ranked by their number of training events, whatever the session."""

    def __init__(self, info: SessionInfo, tie_mode: str = "standard", topk: Sequence[int] = (5, 10, 20),
                 metrics: Sequence[str] = SESSION_METRICS) -> None:
        super().__init__(info.num_items, topk, metrics, tie_mode)
        self.save_hyperparameters({"num_items": info.num_items, "tie_mode": tie_mode}, logger=False)
        self.register_buffer("popularity", info.item_support.float(), persistent=False)

    def eval_scores(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.popularity.expand(batch["inputs"].numel(), -1).clone()

    def configure_optimizers(self) -> None:
        return None


class SessionPop(SessionRecommender):
    """S-POP: session counts of the items seen so far in the session, ties broken by global popularity."""

    def __init__(self, info: SessionInfo, tie_mode: str = "standard", topk: Sequence[int] = (5, 10, 20),
                 metrics: Sequence[str] = SESSION_METRICS) -> None:
        super().__init__(info.num_items, topk, metrics, tie_mode)
        self.save_hyperparameters({"num_items": info.num_items, "tie_mode": tie_mode}, logger=False)
        self.register_buffer("tiebreak", _squashed_popularity(info.item_support), persistent=False)
        self._state = LaneState(lambda lanes: [torch.zeros(lanes, self.num_items, device=self.device)])

    def reset_eval_state(self) -> None:
        self._state.clear()

    def eval_scores(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        (counts,) = self._state.gather(batch["lanes"], batch["reset"])
        counts[torch.arange(counts.shape[0], device=counts.device), batch["inputs"]] += 1.0
        self._state.scatter(batch["lanes"], [counts])
        return counts + self.tiebreak

    def configure_optimizers(self) -> None:
        return None


def cooccurrence_neighbours(
    train: SessionSequences, num_items: int, neighbours: int = 100, lmbd: float = 20.0, alpha: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``neighbours`` similar items of every item, ``(N, k)`` ids and similarities (0-padded), from the
    session co-occurrence counts (array ops: a sparse ``Cᵀ B`` with ``C`` the session × item event counts and
    ``B`` its 0/1 incidence, so repeated clicks count as in GRU4Rec's baseline, module docstring)."""
    sess = train.session_of_event()
    keys, counts = np.unique(sess * num_items + train.items, return_counts=True)  # (session, item) → events
    rows, cols = keys // num_items, keys % num_items
    support = np.bincount(train.items, minlength=num_items).astype(np.float64)  # events per item
    index = torch.from_numpy(np.stack([rows, cols]))
    shape = (train.num_sessions, num_items)
    events = torch.sparse_coo_tensor(index, torch.from_numpy(counts.astype(np.float64)), shape,
                                     check_invariants=False).coalesce()
    incidence = torch.sparse_coo_tensor(index, torch.ones(len(keys), dtype=torch.float64), shape,
                                        check_invariants=False).coalesce()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        co = torch.sparse.mm(events.t().coalesce(), incidence).coalesce()  # co[i, j] = Σ_s n_s(i)·[j ∈ s]
    i, j = co.indices().numpy()
    c = co.values().numpy()
    off = i != j
    i, j, c = i[off], j[off], c[off]
    sim = c / ((support[i] + lmbd) ** alpha * (support[j] + lmbd) ** (1.0 - alpha))
    order = np.lexsort((j, -sim, i))  # by item, then similarity descending (lower id first on ties)
    i, j, sim = i[order], j[order], sim[order]
    first = np.searchsorted(i, np.arange(num_items))
    pos = np.arange(len(i)) - first[i]
    keep = pos < neighbours
    ids = np.zeros((num_items, neighbours), dtype=np.int64)
    vals = np.zeros((num_items, neighbours), dtype=np.float32)
    ids[i[keep], pos[keep]] = j[keep]
    vals[i[keep], pos[keep]] = sim[keep]
    return torch.from_numpy(ids), torch.from_numpy(vals)


class ItemKNN(SessionRecommender):
    """Item-to-item co-occurrence of the current item (module docstring)."""

    settings: ClassVar[Settings] = {**SessionRecommender.settings, "neighbours": POSITIVE_INT,
                                    "lmbd": NON_NEGATIVE_NUMBER, "alpha": UNIT_INTERVAL}

    def __init__(self, info: SessionInfo, neighbours: int = 100, lmbd: float = 20.0, alpha: float = 0.5,
                 popularity_tiebreak: bool = True, tie_mode: str = "standard", topk: Sequence[int] = (5, 10, 20),
                 metrics: Sequence[str] = SESSION_METRICS) -> None:
        check_settings("model", {"neighbours": neighbours, "lmbd": lmbd, "alpha": alpha}, type(self))
        super().__init__(info.num_items, topk, metrics, tie_mode)
        self.save_hyperparameters({"num_items": info.num_items, "neighbours": neighbours, "lmbd": lmbd,
                                   "alpha": alpha, "tie_mode": tie_mode}, logger=False)
        ids, sims = cooccurrence_neighbours(info.train, info.num_items, neighbours, lmbd, alpha)
        self.register_buffer("neighbour_ids", ids, persistent=False)
        self.register_buffer("neighbour_sims", sims, persistent=False)
        tiebreak = 1e-6 * _squashed_popularity(info.item_support) if popularity_tiebreak else torch.zeros(info.num_items)
        self.register_buffer("tiebreak", tiebreak, persistent=False)

    def eval_scores(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        items = batch["inputs"]
        scores = self.tiebreak.expand(items.numel(), -1).clone()
        return scores.scatter_add_(1, self.neighbour_ids[items], self.neighbour_sims[items])

    def configure_optimizers(self) -> None:
        return None
