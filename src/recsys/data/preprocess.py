"""Preprocessing of raw interactions: rating threshold, de-duplication, iterative k-core, splits, re-indexing.

Every step is a handful of array operations (sorts, ``bincount``, ``lexsort``), never a Python loop per
interaction or per user. The pipeline (:func:`preprocess`) runs, in order:

1. ``rating_threshold``: keep interactions with ``rating >= threshold`` (explicit → implicit feedback);
2. de-duplication of (user, item) pairs (the earliest by time is kept; a pair given in both the train and the
   test file of a source is kept in train only);
3. iterative k-core: drop users with fewer than ``min_user_interactions`` and items with fewer than
   ``min_item_interactions`` interactions, repeated until nothing changes (a fixed point);
4. the split (``given``, ``random``, ``temporal``, ``leave_one_out``, ``global_temporal``);
5. validation/test items never seen in train: counted, warned about, dropped or kept (``unseen_items``);
6. dense re-indexing ``0..n-1`` of the users and items that remain, original ids kept in
   ``GraphSplits.user_ids`` / ``item_ids`` (as strings).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from recsys.data.interactions import GraphSplits
from recsys.errors import ConfigError, DataError

log = logging.getLogger(__name__)

TRAIN, VALID, TEST = 0, 1, 2
SPLITS = ("given", "random", "temporal", "leave_one_out", "global_temporal")
UNSEEN_POLICIES = ("drop", "keep")


@dataclass
class Interactions:
    """Raw interactions with integer codes into the original-id arrays.

    ``users[k]``/``items[k]`` index ``user_ids``/``item_ids`` (the ids as they appear in the source).
    ``part`` (optional, int8) is the source's own split: 0 train, 1 valid, 2 test.
    """

    users: np.ndarray
    items: np.ndarray
    user_ids: np.ndarray
    item_ids: np.ndarray
    ratings: np.ndarray | None = None
    times: np.ndarray | None = None
    part: np.ndarray | None = None
    origin: str = "dataset"

    def __len__(self) -> int:
        return len(self.users)

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    def take(self, index: np.ndarray) -> Interactions:
        """Rows selected by a boolean mask or an index array (id arrays unchanged)."""
        return Interactions(
            users=self.users[index], items=self.items[index], user_ids=self.user_ids, item_ids=self.item_ids,
            ratings=None if self.ratings is None else self.ratings[index],
            times=None if self.times is None else self.times[index],
            part=None if self.part is None else self.part[index], origin=self.origin,
        )

    @classmethod
    def from_ids(
        cls,
        users: np.ndarray,
        items: np.ndarray,
        ratings: np.ndarray | None = None,
        times: np.ndarray | None = None,
        part: np.ndarray | None = None,
        origin: str = "dataset",
    ) -> Interactions:
        """Factorise original ids (any sortable dtype) into codes; ``user_ids``/``item_ids`` are sorted."""
        user_ids, u = np.unique(np.asarray(users), return_inverse=True)
        item_ids, i = np.unique(np.asarray(items), return_inverse=True)
        return cls(u.astype(np.int64).reshape(-1), i.astype(np.int64).reshape(-1), user_ids, item_ids,
                   ratings, times, part, origin)


@dataclass
class PreprocessConfig:
    """What :func:`preprocess` does; every field is part of the dataset cache key."""

    split: str = "given"
    split_ratios: tuple[float, ...] = (0.8, 0.1, 0.1)
    rating_threshold: float | None = None
    min_user_interactions: int = 0
    min_item_interactions: int = 0
    unseen_items: str = "drop"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ConfigError(f"data.source.split={self.split!r} is not one of {SPLITS}")
        ratios = tuple(float(r) for r in self.split_ratios)
        if len(ratios) == 2:
            ratios = (ratios[0], 0.0, ratios[1])
        if len(ratios) != 3 or min(ratios) < 0 or not np.isclose(sum(ratios), 1.0) or ratios[0] <= 0:
            raise ConfigError(
                f"data.source.split_ratios={list(self.split_ratios)} must be [train, valid, test] (or [train, test]) "
                "fractions >= 0 summing to 1 with train > 0"
            )
        self.split_ratios = ratios
        if self.unseen_items not in UNSEEN_POLICIES:
            raise ConfigError(f"data.source.unseen_items={self.unseen_items!r} is not one of {UNSEEN_POLICIES}")
        for key in ("min_user_interactions", "min_item_interactions"):
            if int(getattr(self, key)) < 0:
                raise ConfigError(f"data.source.{key} must be >= 0, got {getattr(self, key)}")

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["split_ratios"] = list(self.split_ratios)
        return d


# -- filters ---------------------------------------------------------------------------------------
def apply_rating_threshold(inter: Interactions, threshold: float | None) -> Interactions:
    """Keep interactions with ``rating >= threshold`` (``None``: keep all)."""
    if threshold is None:
        return inter
    if inter.ratings is None:
        raise ConfigError(f"data.source.rating_threshold={threshold} is set but {inter.origin} has no rating column")
    kept = inter.take(inter.ratings >= threshold)
    if len(kept) == 0:
        raise DataError(
            f"{inter.origin}: the rating filter (data.source.rating_threshold={threshold}) removed all "
            f"{len(inter)} interactions (ratings range {inter.ratings.min()}..{inter.ratings.max()})"
        )
    log.info("Rating threshold >= %s kept %d of %d interactions", threshold, len(kept), len(inter))
    return kept


def drop_duplicates(inter: Interactions) -> Interactions:
    """Keep one row per (user, item) pair: the earliest by time (ties/no time: the first in file order).

    With a source split (``part``), duplicates are removed within each part first; a pair present in both
    train and valid/test is then kept only in the earliest part (train), with a warning.
    """
    n = len(inter)
    if n == 0:
        return inter
    key = inter.users * np.int64(max(inter.num_items, 1)) + inter.items
    order_keys = [np.arange(n)]
    if inter.times is not None:
        order_keys.append(inter.times)
    if inter.part is not None:
        order_keys.append(inter.part)
    order = np.lexsort((*order_keys, key))  # by key, then part, then time, then position
    sorted_key = key[order]
    first = np.ones(n, dtype=bool)
    first[1:] = sorted_key[1:] != sorted_key[:-1]
    keep = np.zeros(n, dtype=bool)
    keep[order[first]] = True
    dropped = n - int(keep.sum())
    if dropped:
        if inter.part is not None:
            in_two = np.zeros(n, dtype=bool)
            sp = inter.part[order]
            in_two[1:] = (~first[1:]) & (sp[1:] != sp[:-1])
            if in_two.any():
                log.warning("%s: %d (user, item) pairs appear in more than one split file; kept in the earliest "
                            "(train) only", inter.origin, int(in_two.sum()))
        log.info("%s: dropped %d duplicate (user, item) rows", inter.origin, dropped)
    return inter.take(keep)


def kcore_filter(inter: Interactions, min_user: int, min_item: int) -> Interactions:
    """Iterative k-core: repeat dropping users with < ``min_user`` and items with < ``min_item`` interactions
    until every remaining user and item meets its minimum (a fixed point). Counts are over all interactions,
    whatever their split in a ``given`` source."""
    if min_user <= 1 and min_item <= 1:
        return inter
    n0 = len(inter)
    rounds = 0
    while True:
        du = np.bincount(inter.users, minlength=inter.num_users)
        di = np.bincount(inter.items, minlength=inter.num_items)
        ok_u = du[inter.users] >= min_user
        ok_i = di[inter.items] >= min_item
        keep = ok_u & ok_i
        if keep.all():
            break
        if not keep.any():
            culprit = []
            if not ok_u.any():
                culprit.append(f"no user has >= min_user_interactions={min_user} interactions")
            if not ok_i.any():
                culprit.append(f"no item has >= min_item_interactions={min_item} interactions")
            if not culprit:
                culprit.append("users and items that pass one minimum fail the other")
            raise DataError(
                f"{inter.origin}: the k-core filter (data.source.min_user_interactions={min_user}, "
                f"data.source.min_item_interactions={min_item}) removed all {n0} interactions after "
                f"{rounds + 1} round(s): {'; '.join(culprit)}"
            )
        inter = inter.take(keep)
        rounds += 1
    log.info("k-core (users >= %d, items >= %d): %d rounds, kept %d of %d interactions",
             min_user, min_item, rounds, len(inter), n0)
    return inter


# -- splits ----------------------------------------------------------------------------------------
def _rank_within_user(users: np.ndarray, order_key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every row: its 0-based rank among its user's rows by ``order_key`` (stable), and the user's degree."""
    n = len(users)
    order = np.lexsort((np.arange(n), order_key, users))
    deg = np.bincount(users)
    starts = np.cumsum(deg) - deg
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - starts[users[order]]
    return rank, deg[users]


def _ratio_parts(rank: np.ndarray, deg: np.ndarray, ratios: tuple[float, float, float]) -> np.ndarray:
    """Rows with rank < round(deg * r_train) → train, < round(deg * (r_train + r_valid)) → valid, else test.
    Every user keeps at least one train row."""
    train_end = np.maximum(np.floor(deg * ratios[0] + 0.5), 1)
    valid_end = np.maximum(np.floor(deg * (ratios[0] + ratios[1]) + 0.5), train_end)
    part = np.full(len(rank), TEST, dtype=np.int8)
    part[rank < valid_end] = VALID
    part[rank < train_end] = TRAIN
    return part


def split_random(inter: Interactions, ratios: tuple[float, float, float], seed: int) -> np.ndarray:
    """Per-user random split by ratio (seeded): part of every row."""
    rng = np.random.default_rng(seed)
    rank, deg = _rank_within_user(inter.users, rng.random(len(inter)))
    return _ratio_parts(rank, deg, ratios)


def _require_times(inter: Interactions, split: str) -> np.ndarray:
    if inter.times is None:
        raise ConfigError(f"data.source.split={split} needs timestamps but {inter.origin} has none; "
                          "use split=random (or given)")
    return inter.times


def split_temporal(inter: Interactions, ratios: tuple[float, float, float]) -> np.ndarray:
    """Per-user split by time: each user's earliest interactions train, then valid, the latest test."""
    rank, deg = _rank_within_user(inter.users, _require_times(inter, "temporal"))
    return _ratio_parts(rank, deg, ratios)


def split_leave_one_out(inter: Interactions) -> np.ndarray:
    """Each user's latest interaction → test, the one before → valid, the rest train (users with two
    interactions get train + test, with one: train only)."""
    rank, deg = _rank_within_user(inter.users, _require_times(inter, "leave_one_out"))
    part = np.full(len(inter), TRAIN, dtype=np.int8)
    part[(rank == deg - 1) & (deg >= 2)] = TEST
    part[(rank == deg - 2) & (deg >= 3)] = VALID
    return part


def split_global_temporal(inter: Interactions, ratios: tuple[float, float, float]) -> np.ndarray:
    """One global time cut: the earliest ``r_train`` of all interactions train, the next ``r_valid`` valid,
    the latest test (ties broken by file order)."""
    times = _require_times(inter, "global_temporal")
    n = len(inter)
    order = np.lexsort((np.arange(n), times))
    part = np.full(n, TEST, dtype=np.int8)
    train_end = max(int(np.floor(n * ratios[0] + 0.5)), 1)
    valid_end = max(int(np.floor(n * (ratios[0] + ratios[1]) + 0.5)), train_end)
    part[order[:valid_end]] = VALID
    part[order[:train_end]] = TRAIN
    return part


def carve_validation(
    users: np.ndarray, items: np.ndarray, fraction: float, seed: int
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Move ``round(fraction * deg)`` random train items of every user to validation (seeded; every user
    keeps at least one train item). Returns ``(train, valid)`` pairs."""
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"data.validate_fraction={fraction} must be in (0, 1)")
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    rng = np.random.default_rng(seed)
    rank, deg = _rank_within_user(users, rng.random(len(users)))
    part = _ratio_parts(rank, deg, (1.0 - fraction, fraction, 0.0))
    is_valid = part != TRAIN
    return (users[~is_valid], items[~is_valid]), (users[is_valid], items[is_valid])


def assign_split(inter: Interactions, cfg: PreprocessConfig) -> np.ndarray:
    if cfg.split == "given":
        if inter.part is None:
            raise ConfigError(f"data.source.split=given needs a source with its own train/test files; {inter.origin} "
                              "has none: use split=random, temporal, leave_one_out or global_temporal")
        return inter.part
    if cfg.split == "random":
        return split_random(inter, cfg.split_ratios, cfg.seed)
    if cfg.split == "temporal":
        return split_temporal(inter, cfg.split_ratios)
    if cfg.split == "leave_one_out":
        return split_leave_one_out(inter)
    return split_global_temporal(inter, cfg.split_ratios)


def handle_unseen_items(inter: Interactions, part: np.ndarray, policy: str) -> tuple[Interactions, np.ndarray, int]:
    """Count validation/test rows whose item never occurs in train; warn; drop them if ``policy == "drop"``."""
    seen = np.zeros(inter.num_items, dtype=bool)
    seen[inter.items[part == TRAIN]] = True
    unseen = (part != TRAIN) & ~seen[inter.items]
    count = int(unseen.sum())
    if count:
        n_items = len(np.unique(inter.items[unseen]))
        log.warning("%s: %d validation/test interactions (%d items) have items never seen in train; %s "
                    "(data.source.unseen_items=%s)", inter.origin, count, n_items,
                    "dropped" if policy == "drop" else "kept", policy)
        if policy == "drop":
            return inter.take(~unseen), part[~unseen], count
    return inter, part, count


def _compact(codes: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    used = np.zeros(len(ids), dtype=bool)
    used[codes] = True
    new = np.cumsum(used) - 1
    return new[codes].astype(np.int64), ids[used]


def preprocess(inter: Interactions, cfg: PreprocessConfig, meta: dict[str, str] | None = None) -> GraphSplits:
    """Run the whole pipeline (see the module docstring) and return dense-id :class:`GraphSplits`."""
    if len(inter) == 0:
        raise DataError(f"{inter.origin}: no interactions were read")
    n_raw = len(inter)
    inter = apply_rating_threshold(inter, cfg.rating_threshold)
    inter = drop_duplicates(inter)
    inter = kcore_filter(inter, int(cfg.min_user_interactions), int(cfg.min_item_interactions))
    part = assign_split(inter, cfg)
    inter, part, n_unseen = handle_unseen_items(inter, part, cfg.unseen_items)
    users, user_ids = _compact(inter.users, inter.user_ids)
    items, item_ids = _compact(inter.items, inter.item_ids)
    splits = tuple((users[part == p], items[part == p]) for p in (TRAIN, VALID, TEST))
    info = {"split": cfg.split, "raw_interactions": str(n_raw), "unseen_eval_interactions": str(n_unseen),
            "unseen_items": cfg.unseen_items}
    return GraphSplits(
        num_users=len(user_ids), num_items=len(item_ids), train=splits[0], valid=splits[1], test=splits[2],
        user_ids=user_ids.astype(str), item_ids=item_ids.astype(str), meta={**info, **(meta or {})},
    )
