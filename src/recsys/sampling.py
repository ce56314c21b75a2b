"""Negative samplers: the ``sampler/`` config group. They draw in the data loaders; negatives travel in batches.

Strategies (``configs/sampler/<name>.yaml``; LightGCN's BPR sampling, He et al., SIGIR'20; GRU4Rec's extra
samples, Hidasi & Karatzoglou, CIKM'18 §3.1):

* ``uniform``    — :class:`UniformNegativeSampler`: items uniform, rejecting the user's train positives.
* ``popularity`` — :class:`PopularityNegativeSampler`: ``P(i) ∝ count_i^alpha`` (0 = uniform,
  1 = popularity), rejecting train positives.
* ``in_batch``   — :class:`InBatchNegativeSampler`: the other rows' positives of the mini-batch are the
  negatives, plus ``n_sample`` optional extras shared by the batch; entries that are one of the row's own train
  positives are *masked*, not redrawn.
* ``hard``       — :class:`HardNegativeSampler` (dynamic negative sampling): ``candidates`` (M) rejected
  draws per negative; the training module scores them with the current model and keeps the arg-max.
* ``gru4rec``    — :class:`SessionNegativeSampler`: GRU4Rec's ``n_sample`` extra negatives shared by a
  session-parallel step, ``∝ supp(i)^alpha`` (the other lanes' targets are negatives by construction).

Interface
---------
Every sampler has ``num_negatives`` (per positive, BPR; ``None`` = all others for ``in_batch``), ``n_sample``
(extra negatives shared by a mini-batch; GRU4Rec's ``n_sample``) and ``alpha`` (exponent of the proposal
``∝ count^alpha``; GRU4Rec's ``sample_alpha``; 0 for ``uniform``), and:

* ``bind(train: UserItemCSR | None = None, item_counts: Tensor | None = None, num_items: int | None = None)``
  — once, before drawing. With ``train`` the proposal counts are the train item degrees (unless
  ``item_counts`` is given) and rejection against each user's train positives is available. Without
  ``train`` (session data) give ``item_counts`` (``(num_items,)``, e.g. the number of training events of each
  item) or, for ``alpha == 0``, just ``num_items``; then only ``propose`` works. Returns ``self``.
* ``propose(n, generator) -> Tensor`` — ``(n,)`` int64 ids i.i.d. from the proposal (inverse CDF:
  ``searchsorted`` on the cumulative weights), no rejection; ``proposal_weights()`` its ``(num_items,)``
  float64 unnormalised weights (logQ correction).
* ``sample(users, generator) -> Tensor`` — ``(B, num_negatives)`` per-row negatives from the proposal restricted
  to the items *not* in the user's train set (rejection by a batched binary search on sorted
  ``user * num_items + item`` keys; only rejected entries are redrawn; the few left after
  ``MAX_REJECTION_ROUNDS`` are drawn exactly from the masked distribution); ``draw_rejected(users, k, g)``
  the same with ``k`` per row. ``positive_mask(users, items)`` — ``(B, S)`` bool, ``items[s]`` in user b's
  train set. Need ``bind(train)``.
* ``batch_negatives(users, pos_items, generator) -> dict[str, Tensor]`` — the negatives of one BPR batch
  (:mod:`recsys.data.bpr_batches`). Keys (``GraphRecommender.batch_loss`` dispatches on them):
  ``neg_items`` ``(B, n)`` per-row negatives (``uniform``, ``popularity``); ``neg_candidates`` ``(B, n, M)``
  (``hard``: the model keeps the best-scoring one per ``(b, n)``); ``neg_shared`` ``(S,)`` + ``neg_shared_mask``
  ``(B, S)`` bool: negatives shared by the batch and which of them row ``b`` may use (``in_batch``:
  ``S = B + n_sample``, the batch's positives then the extras; the others add ``n_sample`` extras this way).
* :class:`StepNegatives` — the ``n_sample`` shared extras of every session-parallel step of an epoch and
  their log-proposal (:mod:`recsys.data.session_batches`).

Seeding: every draw comes from a generator seeded by ``(seed, epoch, rank, …)`` (:func:`sampling_generator`),
so an epoch's negatives are a function of the epoch and every DDP rank draws its own.
"""

from __future__ import annotations

import copy
from typing import ClassVar

import numpy as np
import torch

from recsys.errors import DataError
from recsys.info import UserItemCSR
from recsys.settings import (
    NON_NEGATIVE_INT,
    NON_NEGATIVE_NUMBER,
    POSITIVE_INT,
    Settings,
    check_settings,
    optional,
)

MAX_REJECTION_ROUNDS = 16
_DENSE_FALLBACK_ELEMENTS = 1 << 24


def sampling_generator(seed: int, epoch: int, rank: int = 0, stream: int = 0, *more: int,
                       device: torch.device | str | None = None) -> torch.Generator:
    """A generator (on ``device``, default the CPU) seeded by a hash of ``(seed, epoch, rank, stream, *more)``
    (numpy ``SeedSequence``)."""
    words = [int(seed) % (1 << 63), int(epoch), int(rank), int(stream), *(int(w) for w in more)]
    state = np.random.SeedSequence(words).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator(device=device or "cpu").manual_seed(int(state))


def cdf_guide(cdf: torch.Tensor, buckets: int) -> torch.Tensor:
    """A guide table for :func:`inverse_cdf` (Chen & Asau, 1974): ``[0, cdf[-1])`` cut into ``buckets`` equal
    slices; for each, the index ``searchsorted(cdf, u, right=True)`` shared by every ``u`` of the slice, or −1
    where a step of the CDF falls inside. The slices are widened by 10⁻¹² (relative) on both sides, far beyond
    the float64 rounding of the bucket :func:`inverse_cdf` computes for a ``u``, and the search is monotone in
    ``u``: a guided answer is the binary search's exactly. At most ``2 · len(cdf)`` slices hold a step (a step
    within the widening of an edge marks both neighbours)."""
    step = cdf[-1] / buckets
    edges = torch.arange(buckets + 1, dtype=torch.float64, device=cdf.device) * step
    lo = torch.searchsorted(cdf, edges[:-1] * (1.0 - 1e-12), right=True)
    hi = torch.searchsorted(cdf, edges[1:] * (1.0 + 1e-12), right=True)
    return torch.where(lo == hi, lo, -1)


def inverse_cdf(cdf: torch.Tensor, u: torch.Tensor, guide: torch.Tensor | None = None) -> torch.Tensor:
    """``torch.searchsorted(cdf, u, right=True)`` for ``u`` in ``[0, cdf[-1]]``; with a :func:`cdf_guide` the
    binary search runs only for the draws whose slice holds a CDF step (~31 ns a draw on the CPU, where the
    guide's lookup costs a few)."""
    if guide is None:
        return torch.searchsorted(cdf, u, right=True)
    bucket = (u * (guide.numel() / cdf[-1])).long().clamp_(max=guide.numel() - 1)
    out = guide.index_select(0, bucket)
    miss = (out < 0).nonzero().squeeze(1)
    if miss.numel():
        out.index_copy_(0, miss, torch.searchsorted(cdf, u.index_select(0, miss), right=True))
    return out


class NegativeSampler:
    """Per-row negatives ``∝ count^alpha`` over the items outside the user's train set.

    Args:
        num_negatives: negatives per positive (BPR averages the pairwise losses over them).
        n_sample: extra negatives shared by the whole mini-batch (0 = none).
        alpha: exponent of the proposal ``P(i) ∝ count_i^alpha``; 0 = uniform over all items.
    """

    #: the kind of data this sampler draws for: None (both), "graph" or "session" (checked by recsys.validation)
    data_kind: str | None = None
    #: the ``sampler.*`` settings (:mod:`recsys.settings`; subclasses extend them)
    settings: ClassVar[Settings] = {"num_negatives": POSITIVE_INT, "n_sample": NON_NEGATIVE_INT,
                                    "alpha": NON_NEGATIVE_NUMBER}

    def __init__(self, num_negatives: int | None = 1, n_sample: int = 0, alpha: float = 0.0) -> None:
        check_settings("sampler", {"num_negatives": num_negatives, "n_sample": n_sample, "alpha": alpha}, type(self))
        self.num_negatives = num_negatives
        self.n_sample = int(n_sample)
        self.alpha = float(alpha)
        self.num_items: int | None = None
        self.train: UserItemCSR | None = None
        self._keys: torch.Tensor | None = None
        self._weights: torch.Tensor | None = None  # (num_items,) float64, None = uniform
        self._cdf: torch.Tensor | None = None
        self._guide: torch.Tensor | None = None

    # -- binding -------------------------------------------------------------------------------
    def bind(
        self,
        train: UserItemCSR | None = None,
        item_counts: torch.Tensor | None = None,
        num_items: int | None = None,
    ) -> NegativeSampler:
        """Attach the proposal counts and (with ``train``) the positives to reject. Returns ``self``."""
        if train is not None:
            num_items = train.num_items
        elif item_counts is not None:
            num_items = int(torch.as_tensor(item_counts).numel())
        if num_items is None or num_items < 1:
            raise DataError("NegativeSampler.bind needs a train CSR, item_counts or num_items >= 1")
        self.num_items = int(num_items)
        if self.alpha == 0.0:
            self._weights = self._cdf = self._guide = None
        else:
            if item_counts is None:
                if train is None:
                    raise DataError(f"sampler.alpha={self.alpha} needs item counts: bind(item_counts=...)")
                item_counts = torch.bincount(train.indices, minlength=self.num_items)
            counts = torch.as_tensor(item_counts, dtype=torch.float64).reshape(-1)
            if counts.numel() != self.num_items or (counts < 0).any() or not torch.isfinite(counts).all():
                raise DataError(f"item_counts must be {self.num_items} finite non-negative numbers")
            weights = counts.pow(self.alpha)
            if weights.sum() <= 0:
                raise DataError("every item has count 0: the popularity proposal is empty")
            self._weights = weights
            self._cdf = torch.cumsum(weights, 0)
            self._guide = cdf_guide(self._cdf, min(max(8 * self.num_items, 1 << 16), 1 << 22))
        self.train = train
        self._keys = None
        if train is not None:
            self._check_every_user_has_a_negative(train)
            self._keys = train.keys()
        return self

    def to(self, device: torch.device | str | None) -> NegativeSampler:
        """A copy whose tables live on ``device`` (``self`` when already there or ``device`` is None): its draws
        then happen there, from a generator on that device. (:meth:`bind` works on the CPU: bind, then move.)"""
        if device is None or self.train is None or torch.device(device) == self.train.indptr.device:
            return self
        out = copy.copy(self)
        out.train = self.train.to(device)
        for name in ("_keys", "_weights", "_cdf"):
            value = getattr(self, name)
            setattr(out, name, None if value is None else value.to(device))
        out._guide = None  # a plain binary search there (parallel, no host synchronisation)
        return out

    def _check_every_user_has_a_negative(self, train: UserItemCSR) -> None:
        if self._weights is None:
            support, pos_support = torch.full((train.num_users,), self.num_items), train.degrees
        else:
            positive = (self._weights > 0).long()
            support = positive.sum().expand(train.num_users)
            rows, items = train.pairs()
            pos_support = torch.zeros(train.num_users, dtype=torch.long).index_add_(0, rows, positive[items])
        full = (pos_support >= support).nonzero()
        if full.numel():
            u = int(full[0])
            raise DataError(
                f"user {u} interacted in train with all {int(support[u])} items the sampler can propose "
                f"(sampler.alpha={self.alpha}): no negative item exists for it (filter such users out)"
            )

    # -- proposal ------------------------------------------------------------------------------
    def proposal_weights(self) -> torch.Tensor:
        """Unnormalised proposal ``count^alpha`` of every item, ``(num_items,)`` float64."""
        self._require_bound()
        if self._weights is None:
            device = None if self.train is None else self.train.indptr.device
            return torch.ones(self.num_items, dtype=torch.float64, device=device)
        return self._weights.clone()

    def propose(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` i.i.d. item ids from the proposal ``∝ count^alpha`` (no rejection), int64 ``(n,)``."""
        self._require_bound()
        if self._cdf is None:
            return torch.randint(self.num_items, (n,), generator=generator, device=generator.device)
        u = torch.rand(n, generator=generator, dtype=torch.float64, device=generator.device) * self._cdf[-1]
        return inverse_cdf(self._cdf, u, self._guide).clamp_(max=self.num_items - 1)

    # -- per-row negatives ---------------------------------------------------------------------
    def sample(self, users: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Negatives of shape ``(len(users), num_negatives)``, never one of the user's train positives."""
        return self.draw_rejected(users, self.num_negatives, generator)

    def draw_rejected(self, users: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
        """``(len(users), k)`` proposal draws conditioned on not being in the user's train set."""
        if self.train is None:
            raise RuntimeError("NegativeSampler.bind(train) must be called before sample()")
        users_rep = users[:, None].expand(-1, k).reshape(-1)
        items = self.propose(users_rep.numel(), generator)
        todo = self.train.contains(users_rep, items, self._keys).nonzero().squeeze(1)
        for _ in range(MAX_REJECTION_ROUNDS):
            if todo.numel() == 0:
                break
            items[todo] = self.propose(todo.numel(), generator)
            todo = todo[self.train.contains(users_rep[todo], items[todo], self._keys)]
        if todo.numel():
            items[todo] = self._draw_exact(users_rep[todo], generator)
        return items.view(-1, k)

    def _draw_exact(self, users: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One draw per user from the proposal with the user's positives zeroed (dense, chunked)."""
        assert self.train is not None and self.num_items is not None
        base = self.proposal_weights()
        out = torch.empty(users.numel(), dtype=torch.int64, device=users.device)
        chunk = max(1, _DENSE_FALLBACK_ELEMENTS // self.num_items)
        for lo in range(0, users.numel(), chunk):
            part = users[lo : lo + chunk]
            weights = base.expand(part.numel(), -1).clone()
            rows, items = self.train.gather_rows(part)
            weights[rows, items] = 0.0
            out[lo : lo + chunk] = torch.multinomial(weights, 1, generator=generator).squeeze(1)
        return out

    def shared_negatives(self, users: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """``n_sample`` proposal draws shared by the batch and the ``(B, S)`` mask of usable ones."""
        if self.n_sample == 0:
            return {}
        shared = self.propose(self.n_sample, generator)
        return {"neg_shared": shared, "neg_shared_mask": ~self.positive_mask(users, shared)}

    def positive_mask(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """``out[b, s] = items[s] in train row users[b]``, ``(B, S)`` bool.

        Built from the batch rows' positives (``B · degree`` binary searches into the sorted unique
        ``items``) and one ``(B, S)`` gather, instead of ``B · S`` searches in the global keys.
        """
        if self.train is None:
            raise RuntimeError("NegativeSampler.bind(train) must be called before drawing batch negatives")
        uniq, inverse = torch.unique(items, return_inverse=True)
        rows, row_items = self.train.gather_rows(users)
        col = torch.searchsorted(uniq, row_items).clamp_(max=max(uniq.numel() - 1, 0))
        hit = uniq[col] == row_items if uniq.numel() else torch.zeros_like(row_items, dtype=torch.bool)
        seen = torch.zeros(users.numel(), uniq.numel(), dtype=torch.bool, device=users.device)
        seen[rows[hit], col[hit]] = True
        return seen[:, inverse]

    def batch_negatives(
        self, users: torch.Tensor, pos_items: torch.Tensor, generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        """Negatives of one BPR batch: ``neg_items`` ``(B, num_negatives)`` (+ shared extras)."""
        return {"neg_items": self.sample(users, generator), **self.shared_negatives(users, generator)}

    def _require_bound(self) -> None:
        if self.num_items is None:
            raise RuntimeError(f"{type(self).__name__}.bind(...) must be called before drawing")

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_negatives={self.num_negatives}, n_sample={self.n_sample}, "
            f"alpha={self.alpha})"
        )


class UniformNegativeSampler(NegativeSampler):
    """``sampler=uniform``: items uniform over the catalogue, rejecting train positives (LightGCN/NGCF)."""

    def __init__(self, num_negatives: int = 1, n_sample: int = 0) -> None:
        super().__init__(num_negatives=num_negatives, n_sample=n_sample, alpha=0.0)


class PopularityNegativeSampler(NegativeSampler):
    """``sampler=popularity``: ``P(i) ∝ count_i^alpha`` (train degree), rejecting train positives."""

    def __init__(self, num_negatives: int = 1, alpha: float = 1.0, n_sample: int = 0) -> None:
        super().__init__(num_negatives=num_negatives, n_sample=n_sample, alpha=alpha)


class InBatchNegativeSampler(NegativeSampler):
    """``sampler=in_batch``: the other rows' positives are row ``b``'s negatives (GRU4Rec, §3.3).

    The batch gets ``neg_shared = [pos_items, n_sample extras ∝ count^alpha]`` and ``neg_shared_mask``
    ``(B, B + n_sample)``: the diagonal (the row's own positive) and every entry that is one of the row's
    train positives (the same item, or another positive of the same user) are masked out, not redrawn.
    ``num_negatives=None`` keeps all ``B − 1`` other rows; ``k`` keeps ``k`` of them per row, chosen by ``k``
    distinct random shifts ``(b + s) mod B`` shared by the batch.
    """

    settings: ClassVar[Settings] = {**NegativeSampler.settings, "num_negatives": optional(POSITIVE_INT)}

    def __init__(self, num_negatives: int | None = None, n_sample: int = 0, alpha: float = 0.0) -> None:
        super().__init__(num_negatives=num_negatives, n_sample=n_sample, alpha=alpha)

    def batch_negatives(
        self, users: torch.Tensor, pos_items: torch.Tensor, generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        b = users.numel()
        extras = self.propose(self.n_sample, generator)
        shared = torch.cat([pos_items, extras])
        device = users.device
        rows = torch.arange(b, device=device)
        if self.num_negatives is None or self.num_negatives >= b - 1:
            others = rows[:, None] != rows[None, :]
        else:
            shifts = torch.randperm(b - 1, generator=generator, device=generator.device)[: self.num_negatives] + 1
            others = torch.zeros(b, b, dtype=torch.bool, device=device)
            others[rows[:, None], (rows[:, None] + shifts[None, :]) % b] = True
        usable = torch.cat([others, torch.ones(b, extras.numel(), dtype=torch.bool, device=device)], 1)
        usable &= ~self.positive_mask(users, shared)
        return {"neg_shared": shared, "neg_shared_mask": usable}


class HardNegativeSampler(NegativeSampler):
    """``sampler=hard`` (dynamic negative sampling, Zhang et al. SIGIR'13; RecBole ``dynamic``).

    The data path draws ``candidates`` (M) rejected proposals per negative, ``neg_candidates``
    ``(B, num_negatives, M)``; the module scores them with the current embeddings and keeps the arg-max of
    each ``(b, n)`` (:func:`select_hard_negatives`).
    """

    settings: ClassVar[Settings] = {**NegativeSampler.settings, "candidates": POSITIVE_INT}

    def __init__(
        self, num_negatives: int = 1, candidates: int = 16, alpha: float = 0.0, n_sample: int = 0
    ) -> None:
        super().__init__(num_negatives=num_negatives, n_sample=n_sample, alpha=alpha)
        check_settings("sampler", {"candidates": candidates}, type(self))
        self.candidates = int(candidates)

    def batch_negatives(
        self, users: torch.Tensor, pos_items: torch.Tensor, generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        cands = self.draw_rejected(users, self.num_negatives * self.candidates, generator)
        return {
            "neg_candidates": cands.view(-1, self.num_negatives, self.candidates),
            **self.shared_negatives(users, generator),
        }


class SessionNegativeSampler(NegativeSampler):
    """``sampler=gru4rec``: GRU4Rec's negatives (Hidasi & Karatzoglou, CIKM'18, §3.1). The other lanes' targets of a
    session-parallel step are negatives by construction (the model scores every lane against every target);
    on top, ``n_sample`` extra negatives shared by the step are drawn ``∝ supp(i)^alpha`` (``supp`` = training
    events of item i; ``alpha`` 0 = uniform, 1 = popularity) by the training loader (:class:`StepNegatives`).
    Session data only (``recsys.validation`` refuses it for graph data before any work)."""

    data_kind = "session"

    def __init__(self, n_sample: int = 2048, alpha: float = 0.5) -> None:
        super().__init__(num_negatives=1, n_sample=n_sample, alpha=alpha)


class StepNegatives:
    """The ``n_sample`` extra negatives of every session-parallel step of one epoch, with their log-proposal.

    Drawn in blocks of :attr:`BLOCK_STEPS` steps (one ``propose`` per block), block ``k`` from the generator
    ``(seed, epoch, rank, 6, k)``: the negatives of a step do not depend on how the steps are chunked, and
    any block can be drawn on its own (a resumed epoch, a chunk in the middle).
    """

    BLOCK_STEPS = 64
    STREAM = 6

    def __init__(self, sampler: NegativeSampler, seed: int, epoch: int, rank: int = 0) -> None:
        self.sampler, self.seed, self.epoch, self.rank = sampler, seed, epoch, rank
        self.n_sample = sampler.n_sample
        self._log_weights = sampler.proposal_weights().clamp_min(1e-300).log().float()
        self._block: tuple[int, torch.Tensor, torch.Tensor] | None = None

    def _draw(self, block: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._block is None or self._block[0] != block:
            g = sampling_generator(self.seed, self.epoch, self.rank, self.STREAM, block)
            ids = self.sampler.propose(self.BLOCK_STEPS * self.n_sample, g).view(self.BLOCK_STEPS, -1)
            self._block = (block, ids, self._log_weights[ids])
        return self._block[1], self._block[2]

    def steps(self, lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(negatives, log_q)`` of steps ``lo..hi-1``, each ``(hi - lo, n_sample)``."""
        ids, log_q = [], []
        for block in range(lo // self.BLOCK_STEPS, (hi - 1) // self.BLOCK_STEPS + 1):
            a = max(lo, block * self.BLOCK_STEPS) - block * self.BLOCK_STEPS
            b = min(hi, (block + 1) * self.BLOCK_STEPS) - block * self.BLOCK_STEPS
            block_ids, block_log_q = self._draw(block)
            ids.append(block_ids[a:b])
            log_q.append(block_log_q[a:b])
        return torch.cat(ids), torch.cat(log_q)
