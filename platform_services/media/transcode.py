"""The HLS ladder, poster, thumbnail and scrubbing sprite from one decode of the source.

Each frame is decoded once and scaled for every rung (360p/720p/1080p, never above the
source; a source under 360p gets one rung at its own size). H.264 (x264) with a keyframe
exactly every ``segment_s`` seconds, so FFmpeg's HLS muxer cuts equal segments and every
segment starts with a keyframe; AAC stereo audio (any channel layout is downmixed). The master
playlist's BANDWIDTH is the measured peak segment bitrate of each rung, not a guess.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from platform_services.media.probe import Probe, RejectedSource

AUDIO_RATE = 48_000
AUDIO_BITRATE = 128_000
# Peak video bitrate per rung height (x264 CRF, capped by VBV so bandwidths stay predictable).
MAXRATE = {360: 900_000, 720: 3_000_000, 1080: 6_000_000}
POSTER_AT_S = 1.0
SPRITE_TILE_W, SPRITE_COLUMNS, SPRITE_MAX_TILES = 160, 10, 100
THUMBNAIL_H = 360
MODERATION_FRAMES = 6  # evenly spaced frames the image moderators look at
MODERATION_FRAME_PX = 448  # longest side: above every classifier's input size
# Decoding stops short of the declared duration by more than this: the file is truncated.
TRUNCATED_SHARE = 0.9


@dataclass(frozen=True)
class Rung:
    name: str  # "720p"
    width: int
    height: int
    maxrate: int


@dataclass
class Ladder:
    renditions: list[dict]  # name, width, height, bandwidth, average_bandwidth, segments, ...
    files: list[Path]  # everything written under the output directory
    decoded_s: float
    frames: list[Path] = field(default_factory=list)  # sampled for moderation, not published


def _even(x: float) -> int:
    return max(2, int(round(x / 2)) * 2)


def ladder(p: Probe, heights: list[int]) -> list[Rung]:
    """Rungs at or below the source's displayed height; the source's size when below all."""
    aspect = p.display_width / p.display_height
    rungs = [Rung(f"{h}p", _even(h * aspect), h, MAXRATE.get(h, int(h * h * 4.5)))
             for h in sorted(heights) if h <= p.display_height]
    if not rungs:
        h = _even(p.display_height)
        rungs = [Rung(f"{h}p", _even(h * aspect), h, max(150_000, int(h * h * 5)))]
    return rungs


class _Output:
    """One rung: an HLS muxer with an x264 video and an AAC audio stream."""

    def __init__(self, rung: Rung, out_dir: Path, p: Probe, with_audio: bool, segment_s: float,
                 preset: str, threads: int) -> None:
        self.rung, self.dir = rung, out_dir / "hls" / rung.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.container = av.open(str(self.dir / "index.m3u8"), "w", format="hls", options={
            "hls_time": f"{segment_s:g}", "hls_playlist_type": "vod", "hls_list_size": "0",
            "hls_segment_filename": str(self.dir / "seg_%05d.ts"),
            "hls_flags": "independent_segments"})
        rate = p.frame_rate
        gop = max(1, round(segment_s * float(rate)))
        v = self.container.add_stream("libx264", rate=rate)
        v.width, v.height, v.pix_fmt = rung.width, rung.height, "yuv420p"
        v.time_base = self.time_base = 1 / rate  # the muxer later rewrites the stream's
        v.codec_context.gop_size = gop
        v.codec_context.options = {
            "preset": preset, "crf": "23", "profile": "high", "maxrate": str(rung.maxrate),
            "bufsize": str(rung.maxrate * 2), "threads": str(threads),
            "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0"}
        self.video = v
        self.audio = None
        if with_audio:
            a = self.container.add_stream("aac", rate=AUDIO_RATE)
            a.layout, a.bit_rate = "stereo", AUDIO_BITRATE
            self.audio = a
        self.frames = 0

    def encode_video(self, frame: av.VideoFrame) -> None:
        out = frame.reformat(self.rung.width, self.rung.height, "yuv420p")
        out.pts, out.time_base = self.frames, self.time_base
        self.frames += 1
        self.container.mux(self.video.encode(out))

    def encode_audio(self, frame: av.AudioFrame) -> None:
        if self.audio is not None:
            self.container.mux(self.audio.encode(frame))

    def close(self) -> None:
        self.container.mux(self.video.encode(None))
        if self.audio is not None:
            self.container.mux(self.audio.encode(None))
        self.container.close()


def transcode(src: Path, out_dir: Path, p: Probe, rungs: list[Rung], segment_s: float,
              preset: str = "veryfast", threads: int = 0, frames_dir: Path | None = None,
              n_frames: int = MODERATION_FRAMES) -> Ladder:
    """Write the ladder, ``master.m3u8``, ``poster.jpg``, ``thumbnail.jpg``, ``sprite.jpg``
    and ``sprite.vtt`` under ``out_dir`` (and ``n_frames`` evenly spaced frames for
    moderation under ``frames_dir``). :class:`RejectedSource` if decoding fails or stops
    early (a truncated upload); other errors propagate."""
    sprite_every = max(1.0, p.duration_s / SPRITE_MAX_TILES)
    art = _Artwork(p, sprite_every, n_frames if frames_dir is not None else 0)
    outputs: list[_Output] = []
    decoded_s = 0.0
    try:
        with av.open(str(src)) as inp:
            vin = inp.streams.video[0]
            vin.thread_type = "AUTO"
            ain = inp.streams.audio[0] if inp.streams.audio else None
            outputs = [_Output(r, out_dir, p, ain is not None, segment_s, preset, threads)
                       for r in rungs]
            resampler = av.AudioResampler(format="fltp", layout="stereo", rate=AUDIO_RATE)
            fifo = av.AudioFifo()
            samples = 0
            streams = [s for s in (vin, ain) if s is not None]
            for packet in inp.demux(*streams):
                for frame in packet.decode():
                    if isinstance(frame, av.VideoFrame):
                        frame = _upright(frame, p.rotation)
                        t = float(frame.time or 0.0)
                        decoded_s = max(decoded_s, t + 1 / p.fps)
                        art.offer(frame, t)
                        for o in outputs:
                            o.encode_video(frame)
                    else:
                        for rs in resampler.resample(frame):
                            fifo.write(rs)
                        samples = _drain(fifo, outputs, samples, final=False)
            if ain is not None:
                for rs in resampler.resample(None):
                    fifo.write(rs)
                _drain(fifo, outputs, samples, final=True)
            for o in outputs:
                o.close()
    except av.FFmpegError as exc:
        raise RejectedSource(f"the video could not be decoded: {exc}") from None
    if decoded_s < TRUNCATED_SHARE * p.duration_s:
        raise RejectedSource(f"the file is truncated: {decoded_s:.1f} s of "
                             f"{p.duration_s:.1f} s could be decoded")
    renditions = [_measure(o.rung, out_dir / "hls" / o.rung.name, ain is not None, p)
                  for o in outputs]
    (out_dir / "hls" / "master.m3u8").write_text(master_playlist(renditions))
    art.write(out_dir)
    files = sorted(f for f in out_dir.rglob("*") if f.is_file())
    frames = art.write_frames(frames_dir) if frames_dir is not None else []
    return Ladder(renditions, files, decoded_s, frames)


def _drain(fifo: av.AudioFifo, outputs: list[_Output], samples: int, final: bool) -> int:
    """Feed the AAC encoders whole 1024-sample frames (the tail too at the end)."""
    while fifo.samples >= 1024 or (final and fifo.samples):
        frame = fifo.read(min(1024, fifo.samples))
        frame.pts, frame.time_base = samples, Fraction(1, AUDIO_RATE)
        samples += frame.samples
        for o in outputs:
            o.encode_audio(frame)
    return samples


def _upright(frame: av.VideoFrame, rotation: int) -> av.VideoFrame:
    if not rotation:
        return frame
    img = np.rot90(frame.to_ndarray(format="rgb24"), k=-rotation // 90)
    out = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
    out.pts, out.time_base = frame.pts, frame.time_base
    return out


_EXTINF = re.compile(r"^#EXTINF:([\d.]+),")


def _measure(rung: Rung, d: Path, audio: bool, p: Probe) -> dict:
    """Segment durations and sizes from the muxer's playlist: peak and mean bitrate."""
    durations, sizes = [], []
    lines = (d / "index.m3u8").read_text().splitlines()
    for i, line in enumerate(lines):
        m = _EXTINF.match(line)
        if m:
            durations.append(float(m.group(1)))
            sizes.append((d / lines[i + 1]).stat().st_size)
    rates = [8 * s / max(t, 0.1) for s, t in zip(sizes, durations, strict=True)]
    return {
        "name": rung.name, "width": rung.width, "height": rung.height,
        "bandwidth": int(math.ceil(max(rates))),
        "average_bandwidth": int(8 * sum(sizes) / max(sum(durations), 0.1)),
        "segments": len(sizes), "segment_durations": durations, "frame_rate": round(p.fps, 3),
        "codecs": "avc1.640028,mp4a.40.2" if audio else "avc1.640028",
    }


def master_playlist(renditions: list[dict]) -> str:
    """The adaptive entry point: one ``EXT-X-STREAM-INF`` per rung, lowest first."""
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for r in renditions:
        lines.append(
            f"#EXT-X-STREAM-INF:BANDWIDTH={r['bandwidth']},"
            f"AVERAGE-BANDWIDTH={r['average_bandwidth']},RESOLUTION={r['width']}x{r['height']},"
            f"FRAME-RATE={r['frame_rate']:.3f},CODECS=\"{r['codecs']}\"")
        lines.append(f"{r['name']}/index.m3u8")
    return "\n".join(lines) + "\n"


class _Artwork:
    """Poster (the frame at ~1 s), a thumbnail of it, and a sprite sheet of tiles every
    ``every_s`` seconds with a WebVTT track mapping times to tiles."""

    def __init__(self, p: Probe, every_s: float, n_frames: int = 0) -> None:
        self.frame_at = [p.duration_s * (i + 0.5) / n_frames for i in range(n_frames)]
        self.frames: list[Image.Image] = []
        self.poster_at = min(POSTER_AT_S, p.duration_s / 2)
        self.every_s = every_s
        self.tile_h = _even(SPRITE_TILE_W * p.display_height / p.display_width)
        self.poster: Image.Image | None = None
        self.tiles: list[tuple[float, Image.Image]] = []
        self.duration = p.duration_s

    def offer(self, frame: av.VideoFrame, t: float) -> None:
        if len(self.frames) < len(self.frame_at) and t >= self.frame_at[len(self.frames)]:
            img = frame.to_image()
            img.thumbnail((MODERATION_FRAME_PX, MODERATION_FRAME_PX))
            self.frames.append(img)
        if self.poster is None and t >= self.poster_at:
            self.poster = frame.to_image()
        if t >= len(self.tiles) * self.every_s and len(self.tiles) < SPRITE_MAX_TILES:
            tile = frame.reformat(SPRITE_TILE_W, self.tile_h, "rgb24").to_image()
            self.tiles.append((t, tile))

    def write(self, out: Path) -> None:
        if self.poster is None and self.tiles:
            self.poster = self.tiles[-1][1]
        if self.poster is None:
            raise RejectedSource("the video has no frames")
        self.poster.save(out / "poster.jpg", quality=85)
        thumb = self.poster.copy()
        thumb.thumbnail((THUMBNAIL_H * 4, THUMBNAIL_H))
        thumb.save(out / "thumbnail.jpg", quality=80)
        cols = min(SPRITE_COLUMNS, len(self.tiles))
        rows = math.ceil(len(self.tiles) / cols)
        sheet = Image.new("RGB", (cols * SPRITE_TILE_W, rows * self.tile_h))
        cues = ["WEBVTT", ""]
        for i, (t, tile) in enumerate(self.tiles):
            x, y = (i % cols) * SPRITE_TILE_W, (i // cols) * self.tile_h
            sheet.paste(tile, (x, y))
            end = self.tiles[i + 1][0] if i + 1 < len(self.tiles) else self.duration
            cues += [f"{_vtt_time(t)} --> {_vtt_time(end)}",
                     f"sprite.jpg#xywh={x},{y},{SPRITE_TILE_W},{self.tile_h}", ""]
        sheet.save(out / "sprite.jpg", quality=75)
        (out / "sprite.vtt").write_text("\n".join(cues))

    def write_frames(self, d: Path) -> list[Path]:
        """The moderation frames (the poster when the video is shorter than their spacing)."""
        assert self.poster is not None, "write() first"
        return _write_frames(self.frames or [self.poster], d)


def _write_frames(frames: list[Image.Image], d: Path) -> list[Path]:
    d.mkdir(parents=True, exist_ok=True)
    paths = [d / f"frame_{i:02d}.jpg" for i in range(len(frames))]
    for img, path in zip(frames, paths, strict=True):
        img.save(path, quality=90)
    return paths


def _vtt_time(t: float) -> str:
    ms = int(round(t * 1000))
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"
