"""What a source file is, read with PyAV (FFmpeg's demuxers and decoders, bundled in the wheel).

Opening the container and decoding its first video frame tells a real video from anything
else (a text file named ``.mp4``, a truncated file whose index is missing) before any
transcoding starts; :func:`check_limits` then applies the settings' container, codec and
duration limits.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import av

from core.config import Settings


class RejectedSource(ValueError):
    """The source is not a video we accept; the message is the reason the owner sees."""


@dataclass(frozen=True)
class Probe:
    container: str  # FFmpeg demuxer name(s), e.g. "mov,mp4,m4a,3gp,3g2,mj2"
    duration_s: float
    width: int  # coded size
    height: int
    display_width: int  # after rotation: what the viewer sees
    display_height: int
    fps: float
    rotation: int  # degrees clockwise to display upright: 0, 90, 180, 270
    video_codec: str
    audio_codec: str | None
    audio_channels: int | None

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def frame_rate(self) -> Fraction:
        return Fraction(self.fps).limit_denominator(1001)


def probe(path: Path) -> Probe:
    """Probe ``path``; :class:`RejectedSource` if it is not a decodable video."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise RejectedSource("not a video: the file has no video stream")
            v = container.streams.video[0]
            a = container.streams.audio[0] if container.streams.audio else None
            first = next(container.decode(v), None)
            if first is None:
                raise RejectedSource("not a video: no decodable video frame")
            duration = _duration(container, v)
            rotation = int(getattr(first, "rotation", 0) or 0) % 360
            rate = v.average_rate or v.guessed_rate or Fraction(30)
            w, h = first.width, first.height
            dw, dh = (h, w) if rotation in (90, 270) else (w, h)
            return Probe(
                container=container.format.name, duration_s=duration, width=w, height=h,
                display_width=dw, display_height=dh, fps=float(rate), rotation=rotation,
                video_codec=v.codec_context.name,
                audio_codec=a.codec_context.name if a is not None else None,
                audio_channels=a.codec_context.channels if a is not None else None,
            )
    except RejectedSource:
        raise
    except (av.FFmpegError, UnicodeDecodeError, OSError) as exc:
        raise RejectedSource(f"not a readable video: {exc}") from None


def _duration(container: av.container.InputContainer, v: av.VideoStream) -> float:
    if v.duration is not None and v.time_base is not None:
        return float(v.duration * v.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    raise RejectedSource("not a video: its duration is unknown")


def check_limits(p: Probe, settings: Settings) -> None:
    """Raise :class:`RejectedSource` naming the first limit the source breaks."""
    if not set(p.container.split(",")) & set(settings.upload_containers):
        raise RejectedSource(f"container {p.container!r} is not allowed "
                             f"(allowed: {', '.join(settings.upload_containers)})")
    if p.video_codec not in settings.upload_video_codecs:
        raise RejectedSource(f"video codec {p.video_codec!r} is not allowed "
                             f"(allowed: {', '.join(settings.upload_video_codecs)})")
    if p.duration_s > settings.upload_max_duration_s:
        raise RejectedSource(f"video is {p.duration_s:.1f} s long; the limit is "
                             f"{settings.upload_max_duration_s:g} s")
    if p.duration_s <= 0 or p.width < 16 or p.height < 16:
        raise RejectedSource(f"video is too small to play ({p.width}x{p.height}, "
                             f"{p.duration_s:.2f} s)")
