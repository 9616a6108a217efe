"""A content item tower for held-out items: a residual MLP over frozen text embeddings and,
optionally, learned embeddings of the title's hashtags.

One tower encodes both the items a user consumed and the candidates (shared weights): a
candidate is scored by its similarity to each recent history item and the user's score is
the maximum, the way content-kNN aggregates, with the similarity learned from what users
watch next instead of the text encoder's. Starting from the identity (the last layer is zero),
the untrained tower *is* content-kNN's space.

The hashtag embeddings are the platform's own vocabulary: a generic sentence encoder knows
what "two yuan" means in English, not which videos a hashtag's viewers watch next. A held-out
item shares its hashtags with items that have interactions, so what is learned for a hashtag
carries over to it (one that only held-out items have stays untrained and adds nothing).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class ItemTowerConfig:
    content_dim: int
    hidden: int = 1024
    vocab: int = 0  # distinct tokens (hashtags) with an embedding (0: content only)
    token_dim: int = 64


@dataclass(frozen=True)
class TokenBags:
    """Every item's tokens (its title's hashtags), CSR: item i's token ids are
    ``ids[offsets[i]:offsets[i+1]]`` (int64 tensors; ``offsets``: one entry per item plus
    one)."""

    ids: Tensor
    offsets: Tensor

    def rows(self, items: Tensor) -> tuple[Tensor, Tensor]:
        """``items``' tokens as ``nn.EmbeddingBag`` input: (flat ids, each bag's start)."""
        starts, lengths = self.offsets[items], self.offsets[items + 1] - self.offsets[items]
        bag_starts = torch.cumsum(lengths, 0) - lengths
        flat = torch.repeat_interleave(starts - bag_starts, lengths) + torch.arange(
            int(lengths.sum()))
        return self.ids[flat], bag_starts


class ContentItemTower(nn.Module):
    """``forward(content [N, D], tokens) -> unit vectors [N, D]``: ``normalize(c + mlp(c ‖
    mean token embedding))``; ``tokens`` (the rows' bags, :meth:`TokenBags.rows`) only when
    ``cfg.vocab``."""

    def __init__(self, cfg: ItemTowerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.bag = nn.EmbeddingBag(cfg.vocab, cfg.token_dim, mode="mean") if cfg.vocab else None
        if self.bag is not None:
            nn.init.normal_(self.bag.weight, std=0.1)
        width = cfg.content_dim + (cfg.token_dim if cfg.vocab else 0)
        self.mlp = nn.Sequential(nn.Linear(width, cfg.hidden), nn.ReLU(),
                                 nn.Linear(cfg.hidden, cfg.content_dim))
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.zeros_(self.mlp[2].bias)

    def forward(self, content: Tensor, tokens: tuple[Tensor, Tensor] | None = None) -> Tensor:
        content = F.normalize(content, dim=-1)
        x = content
        if self.bag is not None:
            if tokens is None:
                raise ValueError("this tower reads title tokens: pass each row's bag")
            x = torch.cat([content, self.bag(*tokens)], dim=-1)
        return F.normalize(content + self.mlp(x), dim=-1)


def next_item_loss(before: Tensor, after: Tensor, ids: Tensor, temperature: float) -> Tensor:
    """In-batch softmax: each history item's vector ``before`` [B, D] against every pair's
    next item's ``after`` [B, D] (both the tower's output); other rows with the same next item
    (``ids`` [B]) are not negatives."""
    logits = before @ after.T / temperature
    same = ids[None, :] == ids[:, None]
    same.fill_diagonal_(False)
    logits = logits.masked_fill(same, float("-inf"))
    return F.cross_entropy(logits, torch.arange(len(ids)))
