"""A content item tower for held-out items: a residual MLP over frozen text embeddings.

One tower encodes both the items a user consumed and the candidates (shared weights): a
candidate is scored by its similarity to each recent history item and the user's score is
the maximum, the way content-kNN aggregates, with the similarity learned from what users
watch next instead of the text encoder's. Starting from the identity (the last layer is zero),
the untrained tower *is* content-kNN's space.
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


class ContentItemTower(nn.Module):
    """``forward(content [N, D]) -> unit vectors [N, D]``: ``normalize(c + mlp(c))``."""

    def __init__(self, cfg: ItemTowerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.mlp = nn.Sequential(nn.Linear(cfg.content_dim, cfg.hidden), nn.ReLU(),
                                 nn.Linear(cfg.hidden, cfg.content_dim))
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.zeros_(self.mlp[2].bias)

    def forward(self, content: Tensor) -> Tensor:
        content = F.normalize(content, dim=-1)
        return F.normalize(content + self.mlp(content), dim=-1)


def next_item_loss(tower: ContentItemTower, before: Tensor, after: Tensor, ids: Tensor,
                   temperature: float) -> Tensor:
    """In-batch softmax: each history item's content ``before`` [B, D] against every pair's
    next item ``after`` [B, D]; other rows with the same next item (``ids`` [B]) are not
    negatives."""
    logits = tower(before) @ tower(after).T / temperature
    same = ids[None, :] == ids[:, None]
    same.fill_diagonal_(False)
    logits = logits.masked_fill(same, float("-inf"))
    return F.cross_entropy(logits, torch.arange(len(ids)))
