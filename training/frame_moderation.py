"""Image moderation of a video's sampled frames, built on the image encoders already shipped.

Two offline moderators behind :class:`platform_services.media.moderation.Moderator`; the
transcode worker builds the one ``media_frame_moderator`` names (:func:`default`):

* :class:`ClipZeroShot`, when an open_clip checkpoint is configured
  (``content_clip_checkpoint``): each frame's CLIP embedding against unsafe and safe text
  prompts (zero-shot). The unsafe share of the softmax over all prompts, worst frame, decides:
  ``>= block_at`` blocked, ``>= review_at`` needs_review. The prompts and thresholds are
  defaults, not tuned on labelled data (none is available offline here); a deployment should
  set them on its own validation set.
* :class:`ImageNetRule`, the default when only EfficientNet-Lite0 is available: its own
  ImageNet-1k head on each frame, and the summed probability of a few sensitive *ImageNet*
  classes (firearms; swimwear and underwear as a proxy for exposed skin). It is **not** a
  nudity or violence detector: ImageNet has no such classes, so it catches only what looks
  like those objects, misses explicit content without them, and flags beach videos. It
  therefore never blocks, it only holds a video for a person (``needs_review``).

* :class:`NudeNetDetector` (:func:`nudenet`): the NSFW detector in the ``nudenet`` wheel
  (exposed-region detections, its ONNX model inside the wheel), opted into with
  ``media_frame_moderator = "training.frame_moderation:nudenet"`` and the ``nsfw`` extra
  (AGPL, so never a default dependency).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from core.config import Settings
from platform_services.media.moderation import Moderator, Verdict
from platform_services.storage.models import Moderation
from training.content import _load_image, load_efficientnet, load_open_clip

# ImageNet-1k class indices (torchvision's order) per concern.
IMAGENET_GROUPS: dict[str, tuple[int, ...]] = {
    "firearm": (413, 763, 764),  # assault rifle, revolver, rifle
    "swimwear/underwear": (445, 459, 638, 639, 842),  # bikini, brassiere, maillot x2, trunks
}
UNSAFE_PROMPTS = ("an explicit sexual photo", "a photo of a naked person",
                  "a photo of graphic violence with blood", "a photo of a gun pointed at someone")
SAFE_PROMPTS = ("a photo of people talking", "a photo of food", "a photo of a landscape",
                "a photo of an animal", "a photo of a street", "a cartoon",
                "a photo of a person dancing", "a screenshot of text")


def _frames(encoder: nn.Module, frames: Sequence[Path]) -> torch.Tensor | None:
    present = [str(f) for f in frames if Path(f).is_file()]
    if not present:
        return None
    return torch.stack([_load_image(p, encoder) for p in present])


@dataclass
class ImageNetRule:
    """EfficientNet-Lite0's ImageNet head: a sensitive group's probability on the worst frame
    at or above ``review_at`` holds the video for review (see the module docstring)."""

    net: nn.Module  # a PooledImageEncoder around the EfficientNet (its classifier head kept)
    groups: dict[str, tuple[int, ...]] = field(default_factory=lambda: dict(IMAGENET_GROUPS))
    review_at: float = 0.5

    @torch.no_grad()
    def review(self, title: str, description: str, tags: list[str],
               frames: list[Path]) -> Verdict:
        x = _frames(self.net, frames)
        if x is None:
            return Verdict(Moderation.APPROVED)
        probs = self.net.backbone(x).softmax(-1)  # type: ignore[operator]
        scores = {f"imagenet:{g}": float(probs[:, list(ids)].sum(-1).max())
                  for g, ids in self.groups.items()}
        group, worst = max(scores.items(), key=lambda kv: kv[1])
        if worst >= self.review_at:
            return Verdict(Moderation.NEEDS_REVIEW,
                           f"frame classifier: {group.removeprefix('imagenet:')} "
                           f"(p={worst:.2f})", scores)
        return Verdict(Moderation.APPROVED, None, scores)


@dataclass
class ClipZeroShot:
    """open_clip zero-shot: the unsafe prompts' share of the softmax on the worst frame."""

    clip: nn.Module  # a ClipImageEncoder (its ``clip`` holds the text tower too)
    tokenizer: object
    unsafe: tuple[str, ...] = UNSAFE_PROMPTS
    safe: tuple[str, ...] = SAFE_PROMPTS
    review_at: float = 0.5
    block_at: float = 0.9
    _text: torch.Tensor | None = None

    @torch.no_grad()
    def review(self, title: str, description: str, tags: list[str],
               frames: list[Path]) -> Verdict:
        x = _frames(self.clip, frames)
        if x is None:
            return Verdict(Moderation.APPROVED)
        if self._text is None:
            tokens = self.tokenizer([*self.unsafe, *self.safe])  # type: ignore[operator]
            self._text = F.normalize(self.clip.clip.encode_text(tokens), dim=-1)  # type: ignore
        images = self.clip(x)  # L2-normalised
        probs = (100.0 * images @ self._text.T).softmax(-1)
        unsafe = probs[:, : len(self.unsafe)].sum(-1)
        worst = float(unsafe.max())
        frame = int(unsafe.argmax())
        prompt = self.unsafe[int(probs[frame, : len(self.unsafe)].argmax())]
        return verdict_of(worst, repr(prompt), self.review_at, self.block_at,
                          {"clip:unsafe": worst})


# NudeNet's classes for exposed intimate regions (its covered/face classes are not signals).
NUDENET_EXPOSED = frozenset({
    "FEMALE_GENITALIA_EXPOSED", "MALE_GENITALIA_EXPOSED", "FEMALE_BREAST_EXPOSED",
    "ANUS_EXPOSED", "BUTTOCKS_EXPOSED"})


@dataclass
class NudeNetDetector:
    """NudeNet's detector (its ONNX model ships inside the ``nudenet`` wheel: AGPL, so the
    optional extra ``nsfw``): the most confident exposed-region detection on any frame
    ``>= block_at`` blocks, ``>= review_at`` holds for a person."""

    detector: object  # nudenet.NudeDetector
    review_at: float = 0.5
    # High on purpose: a Big Buck Bunny frame (a cartoon) scores FEMALE_BREAST_EXPOSED 0.79,
    # so below this a detection only holds the video for a person.
    block_at: float = 0.9

    def review(self, title: str, description: str, tags: list[str],
               frames: list[Path]) -> Verdict:
        worst, label = 0.0, None
        for frame in frames:
            if not frame.is_file():
                continue
            for hit in self.detector.detect(str(frame)):  # type: ignore[attr-defined]
                if hit["class"] in NUDENET_EXPOSED and hit["score"] > worst:
                    worst, label = float(hit["score"]), hit["class"]
        return verdict_of(worst, label, self.review_at, self.block_at, {"nudenet:exposed": worst})


def verdict_of(worst: float, label: str | None, review_at: float, block_at: float,
               scores: dict[str, float]) -> Verdict:
    """The verdict for the worst frame's score against the two thresholds."""
    why = f"frame classifier: {label} (p={worst:.2f})"
    if worst >= block_at:
        return Verdict(Moderation.BLOCKED, why, scores)
    if worst >= review_at:
        return Verdict(Moderation.NEEDS_REVIEW, why, scores)
    return Verdict(Moderation.APPROVED, None, scores)


def nudenet(settings: Settings) -> Moderator:
    """:class:`NudeNetDetector`: set ``media_frame_moderator`` to
    ``training.frame_moderation:nudenet`` after ``pip install 'reelrank[nsfw]'`` (AGPL, so
    a deployment opts in)."""
    from nudenet import NudeDetector

    return NudeNetDetector(NudeDetector())


def default(settings: Settings) -> Moderator:
    """:class:`ClipZeroShot` when an open_clip checkpoint is configured, else
    :class:`ImageNetRule` on EfficientNet-Lite0 from its wheel (nothing downloaded)."""
    if settings.content_clip_checkpoint is not None:
        import open_clip

        encoder = load_open_clip(settings.content_clip_checkpoint, settings.content_clip_model)
        ckpt = settings.content_clip_checkpoint
        name = f"local-dir:{ckpt}" if ckpt.is_dir() else str(settings.content_clip_model)
        return ClipZeroShot(encoder, open_clip.get_tokenizer(name))
    return ImageNetRule(load_efficientnet())
