"""The embedded default dataset: seeded implicit feedback with popularity skew and latent structure.

Generative model (all vectorised):

* item popularity bias ``b_i = -zipf_exponent * log(rank_i)`` over a random item ranking (Zipf law);
* user activity ``n_u = floor(min_interactions * U^(-1/activity_exponent))`` clipped to
  ``max_interactions`` (a Pareto tail: few heavy users, many light ones);
* community-structured latent factors: each user and item belongs to one of ``num_communities`` centres
  and gets ``x = centre + noise`` in ``R^latent_dim``;
* each user picks ``n_u`` distinct items with probability ∝ ``exp(signal * <x_u, x_i> + b_i)``
  (Gumbel-top-k sampling without replacement);
* each user's items are split at random into train / valid / test with the given ratios.

So popularity alone explains part of the data and collaborative signal (shared communities) the rest:
MostPop is a real floor, and a graph model that learns co-occurrence beats it.
"""

from __future__ import annotations

import numpy as np
import torch

from recsys.data.interactions import GraphSplits
from recsys.errors import ConfigError


def generate_synthetic_graph(
    num_users: int = 3000,
    num_items: int = 2000,
    latent_dim: int = 16,
    num_communities: int = 20,
    community_noise: float = 0.5,
    signal: float = 4.0,
    zipf_exponent: float = 0.8,
    min_interactions: int = 10,
    max_interactions: int = 200,
    activity_exponent: float = 1.5,
    split: tuple[float, float, float] = (0.7, 0.1, 0.2),
    seed: int = 0,
) -> GraphSplits:
    """Draw a synthetic implicit-feedback dataset (see module docstring for the model)."""
    if not 0 < min_interactions <= max_interactions <= num_items:
        raise ConfigError(
            f"data.source: need 0 < min_interactions ({min_interactions}) <= max_interactions "
            f"({max_interactions}) <= num_items ({num_items})"
        )
    if len(split) != 3 or abs(sum(split) - 1.0) > 1e-6 or min(split) < 0:
        raise ConfigError(f"data.source.split must be three non-negative ratios summing to 1, got {list(split)}")
    g = torch.Generator().manual_seed(seed)

    centres = torch.randn(num_communities, latent_dim, generator=g)
    user_comm = torch.randint(num_communities, (num_users,), generator=g)
    item_comm = torch.randint(num_communities, (num_items,), generator=g)
    x_u = centres[user_comm] + community_noise * torch.randn(num_users, latent_dim, generator=g)
    x_i = centres[item_comm] + community_noise * torch.randn(num_items, latent_dim, generator=g)
    x_u = x_u / x_u.norm(dim=1, keepdim=True)
    x_i = x_i / x_i.norm(dim=1, keepdim=True)

    rank = torch.randperm(num_items, generator=g).double() + 1.0
    bias = -zipf_exponent * torch.log(rank)

    u01 = torch.rand(num_users, generator=g, dtype=torch.float64).clamp_min(1e-12)
    n_u = (min_interactions * u01.pow(-1.0 / activity_exponent)).floor().clamp(max=max_interactions).long()

    logits = signal * (x_u @ x_i.T).double() + bias
    gumbel = -torch.log(-torch.log(torch.rand(num_users, num_items, generator=g, dtype=torch.float64)
                                   .clamp(1e-12, 1 - 1e-12)))
    width = int(n_u.max())
    chosen = torch.topk(logits + gumbel, width, dim=1).indices  # (U, width), best first
    valid = torch.arange(width) < n_u[:, None]

    # random order inside each user's chosen set, then cut into train / valid / test
    order_keys = torch.rand(num_users, width, generator=g).masked_fill(~valid, 2.0)
    order = torch.argsort(order_keys, dim=1)
    chosen = torch.gather(chosen, 1, order)
    n_test = torch.round(n_u * split[2]).long()
    n_valid = torch.round(n_u * split[1]).long()
    n_train = n_u - n_test - n_valid
    pos = torch.arange(width)[None, :]
    users = torch.arange(num_users)[:, None].expand(-1, width)

    def take(lo: torch.Tensor, hi: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        m = (pos >= lo[:, None]) & (pos < hi[:, None])
        return users[m].numpy(), chosen[m].numpy()

    return GraphSplits(
        num_users=num_users,
        num_items=num_items,
        train=take(torch.zeros_like(n_train), n_train),
        valid=take(n_train, n_train + n_valid),
        test=take(n_train + n_valid, n_u),
        meta={"source": "synthetic_graph", "seed": str(seed)},
    )
