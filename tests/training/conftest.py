"""Fixtures shared by the training tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch


@pytest.fixture
def tiny_clip(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    """A small random open_clip model with the real BPE vocabulary (the tokenizer's), saved
    the way local checkpoints are laid out: its folder, and the model as saved."""
    import open_clip

    cfg = {"embed_dim": 16,
           "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16,
                          "head_width": 16},
           "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 1,
                        "layers": 1}}
    folder = tmp_path / "tiny-clip"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({
        "model_cfg": cfg,
        "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}}))
    torch.manual_seed(0)
    model = open_clip.CLIP(**cfg)
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    return folder, model.eval()
