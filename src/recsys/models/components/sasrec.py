"""SASRec network (Kang & McAuley, ICDM'18, "Self-Attentive Sequential Recommendation", §III).

Plain ``nn.Module``; ``forward(seq) -> (B, w, d)``, scoring separate:

* input (§III-A): item embedding ``E[s_t] · √d`` plus a learned absolute positional embedding ``P``, dropout,
  padded rows zeroed. Sequences are **left-padded** (``PAD = −1``) and positions count from the right end: in a
  batch of width ``w ≤ max_len`` column ``c`` takes ``P[max_len − w + c]``, so the latest item always sits at
  position ``max_len − 1`` (as the official code's left-padded windows) and dropping leading all-padding
  columns changes no output;
* ``num_blocks`` causal self-attention blocks (§III-B, stacked as §III-C), each a ``torch.nn.TransformerEncoderLayer`` (multi-head
  attention with its output projection, a two-layer point-wise ReLU feed-forward network of width ``d``,
  dropout, residual connections). ``norm_first=True`` (default) is the paper's ``g(x) = x + Dropout(g(LN(x)))``
  (pre-LN); ``False`` gives post-LN. Position ``i`` attends to positions ``j ≤ i`` that hold an item (a padded
  position attends to itself only, so no softmax row is empty); padding never reaches a real position;
* a final LayerNorm (the official code's last ``normalize``), then ``scores = F_t · Eᵀ``: the inner product with
  the same item table (§III-D, shared embeddings).

Every weight matrix (the tables included) is Glorot-normal initialised, as the PyTorch port of the official code.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import nn

from recsys.settings import DROP_RATE, NON_NEGATIVE_INT, POSITIVE_INT, Relation, Settings, check_settings

PAD = -1


def attention_mask(valid: torch.Tensor, num_heads: int) -> torch.Tensor:
    """``(B · num_heads, w, w)`` bool, True = masked: query ``i`` may attend to key ``j`` iff ``j ≤ i`` and ``j``
    holds an item, or ``j = i`` (a padded query sees itself: no empty softmax row)."""
    w = valid.shape[1]
    causal = torch.ones(w, w, dtype=torch.bool, device=valid.device).tril()
    eye = torch.eye(w, dtype=torch.bool, device=valid.device)
    allowed = causal & (valid[:, None, :] | eye)
    return (~allowed).repeat_interleave(num_heads, dim=0)


class SASRecNet(nn.Module):
    """The SASRec network (module docstring).

    Args:
        num_items: number of items N (ids ``0..N-1``; ``PAD`` marks padding).
        embedding_dim: d.
        num_blocks, num_heads: self-attention blocks and heads per block (``num_heads`` divides d).
        max_len: the longest input sequence n (positional table size).
        dropout: on the input embedding, the attention weights and inside every block.
        norm_first: pre-LN (the paper's equation) or post-LN blocks.
    """

    #: the ``model.*`` settings of the network (:mod:`recsys.settings`)
    settings: ClassVar[Settings] = {"embedding_dim": POSITIVE_INT, "num_blocks": NON_NEGATIVE_INT,
                                    "num_heads": POSITIVE_INT, "max_len": POSITIVE_INT, "dropout": DROP_RATE}
    relations: ClassVar[tuple[Relation, ...]] = (
        Relation("num_heads", ("embedding_dim",), lambda v: v["embedding_dim"] % v["num_heads"] == 0,
                 "an integer > 0 that divides {embedding_dim}"),
    )

    def __init__(self, num_items: int, embedding_dim: int = 50, num_blocks: int = 2, num_heads: int = 1,
                 max_len: int = 50, dropout: float = 0.2, norm_first: bool = True) -> None:
        check_settings("model", {"embedding_dim": embedding_dim, "num_blocks": num_blocks, "num_heads": num_heads,
                                 "max_len": max_len, "dropout": dropout}, type(self))
        super().__init__()
        self.num_items, self.max_len, self.num_heads = num_items, max_len, num_heads
        self.scale = math.sqrt(embedding_dim)
        self.item_embedding = nn.Embedding(num_items, embedding_dim)
        self.position_embedding = nn.Embedding(max_len, embedding_dim)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(embedding_dim, num_heads, dim_feedforward=embedding_dim, dropout=dropout,
                                       activation="relu", batch_first=True, norm_first=norm_first)
            for _ in range(num_blocks))
        self.final_norm = nn.LayerNorm(embedding_dim)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_normal_(p)

    @property
    def item_table(self) -> torch.Tensor:
        """``E`` ``(N, d)``: the input embedding and the output scoring table."""
        return self.item_embedding.weight

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """``seq`` ``(B, w)`` item ids, left-padded with ``PAD``, ``w ≤ max_len`` → outputs ``F`` ``(B, w, d)``
        (rows of padded positions are meaningless)."""
        w = seq.shape[1]
        if w > self.max_len:
            raise ValueError(f"sequence width {w} exceeds max_len={self.max_len}")
        valid = seq != PAD
        positions = torch.arange(self.max_len - w, self.max_len, device=seq.device)
        x = self.item_embedding(seq.clamp(min=0)) * self.scale + self.position_embedding(positions)
        x = self.dropout(x) * valid[..., None]
        if self.blocks:
            mask = attention_mask(valid, self.num_heads)
            for block in self.blocks:
                x = block(x, src_mask=mask)
        return self.final_norm(x)

    def score_all(self, outputs: torch.Tensor) -> torch.Tensor:
        """Scores of all N items, ``(…, N)``: ``F · Eᵀ``."""
        return outputs @ self.item_table.T

    def score_items(self, outputs: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """``outputs`` ``(M, d)``, ``items`` ``(M, k)`` → ``(M, k)`` scores ``F_m · E[items[m, j]]``."""
        return torch.einsum("md,mkd->mk", outputs, self.item_embedding(items))


def trim_left_padding(seq: torch.Tensor) -> torch.Tensor:
    """``seq`` without its leading columns that hold only ``PAD``: the same outputs at the kept columns
    (positions count from the right end), less work."""
    first = int((seq != PAD).any(0).int().argmax())  # 0 when no column holds an item
    return seq[:, first:]
