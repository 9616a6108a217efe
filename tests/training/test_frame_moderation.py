"""The frame moderators on real images: EfficientNet-Lite0's ImageNet head really classifies
(a known photo triggers a group made of its class, the default groups pass it and the real
clips' frames), and the open_clip zero-shot path runs end to end on a checkpoint the test
makes, its thresholds deciding the outcome."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import pytest
import torch

from core.config import Settings
from platform_services.media.probe import probe
from platform_services.media.transcode import ladder, transcode
from platform_services.storage.models import Moderation
from tests.platform_services.media.conftest import clip
from training import frame_moderation
from training.content import load_efficientnet

HOPPER = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
MILITARY_UNIFORM = 652  # ImageNet-1k, the canonical top-1 of this photo


@pytest.fixture
def tiny_clip(tmp_path: Path) -> Path:
    """A small random open_clip model with the real BPE vocabulary (the tokenizer's), saved
    the way local checkpoints are laid out."""
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
    torch.save(open_clip.CLIP(**cfg).state_dict(), folder / "open_clip_pytorch_model.bin")
    return folder


@pytest.fixture(scope="module")
def rule() -> frame_moderation.ImageNetRule:
    return frame_moderation.ImageNetRule(load_efficientnet())


def test_imagenet_rule_holds_a_frame_of_a_sensitive_class(rule) -> None:
    held = frame_moderation.ImageNetRule(rule.net, {"uniform": (MILITARY_UNIFORM,)}, 0.2)
    v = held.review("", "", [], [HOPPER])
    assert v.status == Moderation.NEEDS_REVIEW and "uniform" in v.reason
    assert v.scores["imagenet:uniform"] > 0.2
    ok = rule.review("", "", [], [HOPPER])
    assert ok.status == Moderation.APPROVED and ok.reason is None
    assert set(ok.scores) == {f"imagenet:{g}" for g in frame_moderation.IMAGENET_GROUPS}
    assert rule.review("", "", [], []).status == Moderation.APPROVED  # nothing to look at


@pytest.mark.parametrize("name", ["10034.mp4", "bigbuckbunny.mp4", "carphone_distorted.mp4"])
def test_real_clips_sampled_frames_are_approved(rule, name: str, tmp_path: Path) -> None:
    p = probe(clip(name))
    out = transcode(clip(name), tmp_path / "out", p, ladder(p, [360])[:1], 3.0, "ultrafast",
                    frames_dir=tmp_path / "frames")
    assert len(out.frames) == 6 and all(f.is_file() for f in out.frames)
    assert not any(f.name.startswith("frame_") for f in out.files), "frames are not published"
    v = rule.review("", "", [], out.frames)
    assert v.status == Moderation.APPROVED, v


def test_clip_zero_shot_thresholds_decide(tiny_clip: Path, settings: Settings) -> None:
    mod = frame_moderation.default(settings.model_copy(update={
        "content_clip_checkpoint": tiny_clip}))
    assert isinstance(mod, frame_moderation.ClipZeroShot)
    v = mod.review("", "", [], [HOPPER])
    p = v.scores["clip:unsafe"]
    assert 0.0 < p < 1.0
    mod.review_at, mod.block_at = p + 0.01, p + 0.02
    assert mod.review("", "", [], [HOPPER]).status == Moderation.APPROVED
    mod.review_at = p - 0.01
    held = mod.review("", "", [], [HOPPER])
    assert held.status == Moderation.NEEDS_REVIEW and held.reason.startswith("frame classifier")
    mod.block_at = p - 0.005
    assert mod.review("", "", [], [HOPPER]).status == Moderation.BLOCKED
    assert isinstance(frame_moderation.default(settings), frame_moderation.ImageNetRule)
