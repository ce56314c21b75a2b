"""``data=synthetic_sessions``: the embedded default session data, generated from a seed (no files).

Generative model (vectorised over sessions; one loop over the at most ``max_length`` positions):

* item popularity ``w_i ∝ rank_i^(-zipf_exponent)`` over a random ranking; every item belongs to one of
  ``num_communities`` communities;
* a sparse item transition graph: every item gets ``successors`` successor items from its own community,
  drawn ∝ popularity, with Dirichlet(1) transition probabilities;
* a session picks a community (∝ its total popularity), a first item ∝ popularity inside it, and then at
  every step: with ``repeat_prob`` one of its own earlier items (re-clicks), else with ``follow_prob`` a
  successor of the current item, else a fresh item ∝ popularity inside the session's community;
* session length ``1 + Geometric(1 / (mean_length − 1))`` capped at ``max_length``; start times uniform over
  ``num_days`` days, gaps between clicks exponential with mean ``mean_gap_seconds``.

The next item thus depends on the current item (transitions), on the session (community, repeats) and on
popularity: MostPop is a floor, S-POP and item-to-item co-occurrence catch parts of the structure and a
sequence model can use all of it. The events then go through the GRU4Rec preprocessing (time split: the
last day → test, the day before → valid).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from recsys.data.session_data import SessionSplits
from recsys.data.session_preprocess import DAY, SessionEvents, SessionPreprocessing, preprocess_sessions
from recsys.errors import ConfigError

EPOCH_2020 = 1_577_836_800.0  # 2020-01-01T00:00:00Z


def _draw_within(
    rng: np.random.Generator, groups: np.ndarray, weights: np.ndarray, item_group: np.ndarray
) -> np.ndarray:
    """One item per entry of ``groups``, drawn ∝ ``weights`` among the items of that group (inverse CDF)."""
    order = np.argsort(item_group, kind="stable")
    cum = np.cumsum(weights[order])
    total = np.bincount(item_group, weights=weights, minlength=int(item_group.max()) + 1)
    start = np.cumsum(total) - total
    x = start[groups] + rng.random(len(groups)) * total[groups]
    pos = np.searchsorted(cum, x, side="right").clip(max=len(order) - 1)
    return order[pos]


def generate_synthetic_sessions(
    num_items: int = 1000,
    num_sessions: int = 20000,
    num_communities: int = 20,
    successors: int = 4,
    follow_prob: float = 0.7,
    repeat_prob: float = 0.1,
    zipf_exponent: float = 0.8,
    mean_length: float = 5.0,
    max_length: int = 30,
    num_days: float = 10.0,
    mean_gap_seconds: float = 60.0,
    seed: int = 0,
) -> SessionEvents:
    """Draw the raw click events (see the module docstring)."""
    if num_items < successors + 1 or num_sessions < 1 or num_communities < 1 or successors < 1:
        raise ConfigError("data.source: need num_items > successors >= 1, num_sessions >= 1, num_communities >= 1")
    if not (0 <= follow_prob <= 1 and 0 <= repeat_prob < 1):
        raise ConfigError(f"data.source: follow_prob ({follow_prob}) and repeat_prob ({repeat_prob}) must be in [0, 1]")
    if not mean_length > 2 or max_length < 2:
        raise ConfigError(f"data.source: need mean_length > 2 and max_length >= 2, got {mean_length}, {max_length}")
    rng = np.random.default_rng(seed)
    weights = (rng.permutation(num_items) + 1.0) ** (-zipf_exponent)
    community = rng.integers(num_communities, size=num_items)
    community = np.unique(community, return_inverse=True)[1].reshape(-1)  # no empty community
    n_comm = int(community.max()) + 1

    succ = _draw_within(rng, np.repeat(community, successors), weights, community).reshape(num_items, successors)
    trans = rng.gamma(1.0, size=(num_items, successors))
    trans_cdf = np.cumsum(trans / trans.sum(1, keepdims=True), 1)

    comm_weight = np.bincount(community, weights=weights, minlength=n_comm)
    sess_comm = rng.choice(n_comm, size=num_sessions, p=comm_weight / comm_weight.sum())
    lengths = np.minimum(1 + rng.geometric(1.0 / (mean_length - 1.0), size=num_sessions), max_length)
    width = int(lengths.max())
    seq = np.zeros((num_sessions, width), dtype=np.int64)
    seq[:, 0] = _draw_within(rng, sess_comm, weights, community)
    for t in range(1, width):
        active = np.flatnonzero(lengths > t)
        cur = seq[active, t - 1]
        u = rng.random(len(active))
        nxt = _draw_within(rng, sess_comm[active], weights, community)
        follow = (u >= repeat_prob) & (u < repeat_prob + (1 - repeat_prob) * follow_prob)
        k = (rng.random(len(active))[:, None] > trans_cdf[cur]).sum(1).clip(max=successors - 1)
        nxt[follow] = succ[cur, k][follow]
        repeat = u < repeat_prob
        earlier = (rng.random(len(active)) * t).astype(np.int64)
        nxt[repeat] = seq[active, earlier][repeat]
        seq[active, t] = nxt

    starts = np.sort(rng.random(num_sessions)) * num_days * DAY + EPOCH_2020
    gaps = rng.exponential(mean_gap_seconds, size=(num_sessions, width))
    gaps[:, 0] = 0.0
    times = starts[:, None] + np.cumsum(gaps, 1)
    valid = np.arange(width)[None, :] < lengths[:, None]
    sessions = np.broadcast_to(np.arange(num_sessions)[:, None], seq.shape)[valid]
    return SessionEvents.from_ids(sessions, seq[valid], times[valid], origin="synthetic_sessions")


class SyntheticSessionSource:
    """Session source wrapping :func:`generate_synthetic_sessions` + the GRU4Rec preprocessing."""

    name = "synthetic_sessions"

    def __init__(self, preprocessing: dict[str, Any] | None = None, **params: Any) -> None:
        self.params = dict(params)
        try:
            self.preprocessing = SessionPreprocessing(**dict(preprocessing or {}))
        except TypeError as err:
            raise ConfigError(f"data.source.preprocessing: {err}") from err

    def fingerprint(self) -> dict[str, Any]:
        return {"source": self.name, "version": 1, **self.params, "preprocessing": self.preprocessing.as_dict()}

    def build(self) -> SessionSplits:
        try:
            events = generate_synthetic_sessions(**self.params)
        except TypeError as err:
            raise ConfigError(f"data.source: {err}") from err
        splits = preprocess_sessions(events, self.preprocessing)
        splits.meta.update({"source": self.name, "seed": str(self.params.get("seed", 0))})
        return splits
