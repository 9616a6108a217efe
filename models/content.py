"""Content encoders as plain modules: pooling and projection around pretrained backbones.

Loading the pretrained weights is I/O and lives in :mod:`training.content`; these wrappers only
define what a forward pass returns, so the towers and the tests can use any backbone.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ContentProjection(nn.Module):
    """Projects a frozen content embedding into the tower; items without content get a learned
    vector instead of a projection of zeros (which would look like "content about nothing")."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(in_dim)
        self.proj = nn.Linear(in_dim, out_dim)
        self.missing = nn.Parameter(torch.zeros(out_dim))

    def forward(self, content: Tensor) -> Tensor:
        present = content.abs().sum(-1, keepdim=True) > 0
        return torch.where(present, self.proj(self.norm(content)), self.missing)


class _FeatureBackbone(Protocol):
    def extract_features(self, x: Tensor) -> Tensor: ...


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PooledImageEncoder(nn.Module):
    """A CNN's last feature map, average-pooled to one vector per image (EfficientNet-Lite0:
    1280 x 7 x 7 for a 224 x 224 input -> 1280-d), L2-normalised like the text embeddings.
    ``image_size`` / ``mean`` / ``std`` say how its input images must be prepared."""

    def __init__(self, backbone: nn.Module, image_size: int = 224) -> None:
        super().__init__()
        self.backbone = backbone
        self.image_size, self.mean, self.std = image_size, IMAGENET_MEAN, IMAGENET_STD

    def forward(self, images: Tensor) -> Tensor:
        maps = self.backbone.extract_features(images)  # type: ignore[operator]
        return F.normalize(maps.mean(dim=(-2, -1)), dim=-1)


class ClipImageEncoder(nn.Module):
    """The image half of an open_clip model; its embeddings live in CLIP's joint space."""

    def __init__(self, clip_model: nn.Module) -> None:
        super().__init__()
        self.clip = clip_model
        cfg = getattr(getattr(clip_model, "visual", None), "preprocess_cfg", {}) or {}
        size = cfg.get("size", 224)
        self.image_size = size if isinstance(size, int) else int(size[0])
        self.mean = tuple(cfg.get("mean", IMAGENET_MEAN))
        self.std = tuple(cfg.get("std", IMAGENET_STD))

    def forward(self, images: Tensor) -> Tensor:
        return F.normalize(self.clip.encode_image(images), dim=-1)  # type: ignore[operator]
