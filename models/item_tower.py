"""A content item tower for held-out items: a residual MLP over frozen text embeddings and,
optionally, learned embeddings of the item's tags (MicroLens: its title's hashtags).

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
    vocab: int = 0  # distinct tags with an embedding (0: content only); id ``vocab`` pads
    token_dim: int = 64


class ContentItemTower(nn.Module):
    """``forward(content [N, D], tags [N, L]) -> unit vectors [N, D]``: ``normalize(c + mlp(c
    ‖ mean tag embedding))``; ``tags`` (each row's tag ids, padded with ``cfg.vocab``, which
    the mean leaves out) only when ``cfg.vocab``."""

    def __init__(self, cfg: ItemTowerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.bag = nn.EmbeddingBag(cfg.vocab + 1, cfg.token_dim, mode="mean",
                                   padding_idx=cfg.vocab) if cfg.vocab else None
        if self.bag is not None:
            nn.init.normal_(self.bag.weight, std=0.1)
        width = cfg.content_dim + (cfg.token_dim if cfg.vocab else 0)
        self.mlp = nn.Sequential(nn.Linear(width, cfg.hidden), nn.ReLU(),
                                 nn.Linear(cfg.hidden, cfg.content_dim))
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.zeros_(self.mlp[2].bias)

    def forward(self, content: Tensor, tags: Tensor | None = None) -> Tensor:
        content = F.normalize(content, dim=-1)
        x = content
        if self.bag is not None:
            if tags is None:
                raise ValueError("this tower reads tags: pass each row's tag ids")
            x = torch.cat([content, self.bag(tags)], dim=-1)
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
