"""Layers shared by the towers: id embeddings that never raise on an unknown id, pooling, MLPs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

_GOLDEN = 0x9E3779B1  # Fibonacci hashing spreads consecutive ids over the buckets


def hash_bucket(ids: Tensor, buckets: int) -> Tensor:
    """A stable bucket in ``[0, buckets)`` for any int64 id (overflow wraps, which is fine)."""
    return torch.remainder(ids * _GOLDEN, buckets)


class IdEmbedding(nn.Module):
    """Rows for known ids, hashed shared rows for all other ids, and a zero row for padding.

    Ids seen in training get their own row; anything else (a video uploaded after training, an
    author with a huge id) falls into one of ``oov_buckets`` learned rows, so lookups never raise
    an IndexError. Negative ids are padding and embed to zeros. ``id_dropout`` sends known ids to
    their OOV bucket during training, which is what teaches the OOV rows (and the content
    features beside them) to stand in for an id the model has never seen. With no OOV buckets
    an unknown (or dropped) id embeds to zeros like padding, and only the features beside it
    speak for it.
    """

    def __init__(self, known_ids: Sequence[int] | Tensor, dim: int, oov_buckets: int,
                 init_std: float = 0.05) -> None:
        super().__init__()
        if oov_buckets < 0:
            raise ValueError("oov_buckets must be 0 or more")
        known = torch.as_tensor(known_ids, dtype=torch.int64).unique()  # sorted
        self.register_buffer("known", known, persistent=True)
        self.oov_buckets = oov_buckets
        self.table = nn.Embedding(1 + oov_buckets + len(known), dim, padding_idx=0)
        nn.init.normal_(self.table.weight, std=init_std)
        with torch.no_grad():
            self.table.weight[0].zero_()

    def index(self, ids: Tensor, id_dropout: float = 0.0) -> Tensor:
        """Row numbers for ``ids``: 0 padding, then OOV buckets, then known ids."""
        oov = (1 + hash_bucket(ids, self.oov_buckets) if self.oov_buckets
               else torch.zeros_like(ids))
        if len(self.known):
            pos = torch.searchsorted(self.known, ids).clamp(max=len(self.known) - 1)
            hit = self.known[pos] == ids
            if id_dropout > 0 and self.training:
                hit &= torch.rand(ids.shape, device=ids.device) >= id_dropout
            rows = torch.where(hit, 1 + self.oov_buckets + pos, oov)
        else:
            rows = oov
        return torch.where(ids < 0, torch.zeros_like(rows), rows)

    def forward(self, ids: Tensor, id_dropout: float = 0.0) -> Tensor:
        return self.table(self.index(ids, id_dropout))


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``x[..., L, d]`` over the positions where ``mask[..., L]``; zeros when none."""
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(-2) / m.sum(-2).clamp(min=1.0)


def mlp(sizes: Sequence[int], dropout: float = 0.0) -> nn.Sequential:
    """Linear layers with ReLU (and dropout) between them, none after the last."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
            if dropout:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)
