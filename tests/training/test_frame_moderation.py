"""The frame moderators on real images: EfficientNet-Lite0's ImageNet head really classifies
(a known photo triggers a group made of its class, the default groups pass it and the real
clips' frames), and the open_clip zero-shot path runs end to end on a checkpoint the test
makes, its thresholds deciding the outcome."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import pytest

from core.config import Settings
from platform_services.media.probe import probe
from platform_services.media.transcode import ladder, transcode
from platform_services.media.worker import moderators
from platform_services.storage.models import Moderation
from tests.platform_services.media.conftest import clip
from training import frame_moderation
from training.content import load_efficientnet

HOPPER = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
MILITARY_UNIFORM = 652  # ImageNet-1k, the canonical top-1 of this photo


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


def test_clip_zero_shot_thresholds_decide(tiny_clip, settings: Settings) -> None:
    folder, _ = tiny_clip
    mod = frame_moderation.default(settings.model_copy(update={
        "content_clip_checkpoint": folder}))
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


class _Detections:
    """NudeNet's ``detect`` answer for every frame, fixed (the thresholds are under test)."""

    def __init__(self, hits: list[dict]) -> None:
        self.hits = hits

    def detect(self, path: str) -> list[dict]:
        return self.hits


def test_nudenet_thresholds_count_only_exposed_regions() -> None:
    frames = [HOPPER]
    covered = [{"class": "FEMALE_BREAST_COVERED", "score": 0.99}, {"class": "FACE_FEMALE",
                                                                      "score": 0.95}]
    assert frame_moderation.NudeNetDetector(_Detections(covered)).review(
        "", "", [], frames).status == Moderation.APPROVED
    exposed = [*covered, {"class": "FEMALE_BREAST_EXPOSED", "score": 0.5}]
    held = frame_moderation.NudeNetDetector(_Detections(exposed)).review("", "", [], frames)
    assert held.status == Moderation.NEEDS_REVIEW and "FEMALE_BREAST_EXPOSED" in held.reason
    assert held.scores == {"nudenet:exposed": 0.5}
    blocked = frame_moderation.NudeNetDetector(_Detections(exposed), review_at=0.4, block_at=0.45)
    assert blocked.review("", "", [], frames).status == Moderation.BLOCKED


@pytest.mark.parametrize("name", ["10034.mp4", "bigbuckbunny.mp4", "carphone_distorted.mp4"])
def test_nudenet_detector_never_blocks_the_real_clips(settings: Settings, tmp_path: Path,
                                                      name: str) -> None:
    """The real detector (its ONNX model from the wheel), chosen by name as a deployment would,
    over the frames the transcoder samples. None of these clips is explicit; the cartoon
    gets a confident false 'exposed' detection (0.79), which may hold it for a person but
    must not block it: the two live-action clips pass outright."""
    text, mod = moderators(settings.model_copy(update={
        "media_frame_moderator": "training.frame_moderation:nudenet"}))
    assert isinstance(mod, frame_moderation.NudeNetDetector)
    p = probe(clip(name))
    out = transcode(clip(name), tmp_path / "out", p, ladder(p, [360])[:1], 3.0, "ultrafast",
                    frames_dir=tmp_path / "frames")
    v = mod.review("", "", [], out.frames)
    assert v.status != Moderation.BLOCKED and 0.0 <= v.scores["nudenet:exposed"] < 0.9, v
    if name != "bigbuckbunny.mp4":
        assert v.status == Moderation.APPROVED, v
