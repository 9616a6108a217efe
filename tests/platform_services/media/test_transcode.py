"""Real clips through upload -> transcode -> ready, on the local store and on S3 (moto);
bad files end failed with a reason and nothing left behind; the same bytes are deduped."""

from __future__ import annotations

import re
from pathlib import Path

import av
import pytest
from fastapi.testclient import TestClient

from core.config import Settings
from platform_services.media.models import VideoMedia
from tests.platform_services.media.conftest import (
    clip,
    cut,
    http,
    outbox,
    run_transcodes,
    upload,
    video_status,
)
from tests.serving.conftest import signup

SEGMENT_S = 3.0


def _done(client: TestClient, *ids: int):
    return lambda: all(video_status(client, v) != "processing" for v in ids)


def _probe_ladder(client: TestClient, body: dict, tmp: Path) -> dict[str, tuple]:
    """Fetch the master playlist by its URL, each variant, and probe a segment of each."""
    master = http(client, "GET", body["video_urls"]["hls"])
    assert master.status_code == 200, master.text
    assert master.headers["content-type"].startswith("application/vnd.apple.mpegurl")
    assert "max-age" in master.headers["cache-control"]
    found = {}
    lines = master.text.splitlines()
    for i, line in enumerate(lines):
        if not line.startswith("#EXT-X-STREAM-INF"):
            continue
        attrs = dict(re.findall(r'([A-Z-]+)=("[^"]*"|[^,]*)', line.split(":", 1)[1]))
        width, height = map(int, attrs["RESOLUTION"].split("x"))
        assert int(attrs["BANDWIDTH"]) > 0
        base = body["video_urls"]["hls"].rsplit("/", 1)[0]
        variant = http(client, "GET", f"{base}/{lines[i + 1]}")
        assert variant.status_code == 200
        durations = [float(d) for d in re.findall(r"#EXTINF:([\d.]+),", variant.text)]
        assert durations and all(2.0 <= d <= 4.0 for d in durations[:-1]), durations
        segments = [x for x in variant.text.splitlines() if x and not x.startswith("#")]
        seg = http(client, "GET", segments[0])
        assert seg.status_code == 200, seg.text[:200]
        path = tmp / f"{height}.ts"
        path.write_bytes(seg.content)
        with av.open(str(path)) as c:
            v = c.streams.video[0]
            audio = c.streams.audio[0].codec_context.name if c.streams.audio else None
            found[f"{height}p"] = (v.codec_context.name, v.width, v.height, audio)
        assert (width, height) == found[f"{height}p"][1:3]
    return found


@pytest.mark.parametrize(("name", "ladder", "audio"), [
    ("10034.mp4", ["360p", "720p"], "aac"),  # HEVC 720p + AAC stereo
    ("bigbuckbunny.mp4", ["360p", "720p"], "aac"),  # H.264 + 6-channel AAC
    ("carphone_distorted.mp4", ["144p"], None),  # 176x144, no audio: never upscaled
])
def test_real_clip_becomes_ready_with_a_valid_ladder(
    api: TestClient, media_settings: Settings, tmp_path: Path, name: str, ladder: list[str],
    audio: str | None,
) -> None:
    source = cut(clip(name), SEGMENT_S + 1.5, tmp_path / name)
    headers = signup(api, "maker")
    vid = upload(api, headers, source.read_bytes(), title="My #first clip", tags=["fun"])
    run_transcodes(media_settings, _done(api, vid))
    body = api.get(f"/api/v1/videos/{vid}", headers=headers).json()
    assert body["status"] == "ready", body
    assert body["moderation"] == "approved" and 3.5 < body["duration"] < 5.0
    found = _probe_ladder(api, body, tmp_path)
    assert sorted(found, key=lambda n: int(n[:-1])) == ladder
    assert all(v[0] == "h264" and v[3] == audio for v in found.values())
    for key in ("poster_url", "thumbnail_url"):
        r = http(api, "GET", body[key])
        assert r.status_code == 200 and r.content[:2] == b"\xff\xd8", key  # a JPEG
    vtt = http(api, "GET", body["sprite_url"])
    assert vtt.status_code == 200 and vtt.text.startswith("WEBVTT")
    tile = re.search(r"^(\S+)#xywh=", vtt.text, re.M).group(1)
    assert http(api, "GET", tile).status_code == 200
    events = [e for e in outbox(api, "video.processed") if e.video_id == vid]
    assert [e.status for e in events] == ["ready"] and events[0].renditions == ladder
    blobs = api.app.state.blobs
    assert not blobs.exists(f"uploads/{vid}/source"), "the source is gone once transcoded"
    assert not list(Path(media_settings.var_dir, "transcode").glob("*/*")), "scratch removed"


def _bad_files(tmp: Path) -> dict[str, tuple[bytes, str]]:
    head = cut(clip("10034.mp4"), 6.0, tmp / "head.mp4").read_bytes()
    tail_indexed = clip("bigbuckbunny.mp4").read_bytes()  # its index is at the end
    return {
        "text": (b"just some text, not a video\n" * 50, "not a readable video"),
        "truncated": (head[: len(head) // 2], "truncated"),
        "truncated, no index": (tail_indexed[: len(tail_indexed) // 2], "not a readable video"),
        "too long": (clip("10034.mp4").read_bytes(), "the limit is 7 s"),
    }


def test_bad_files_fail_with_a_reason_and_leave_nothing(
    api: TestClient, media_settings: Settings, tmp_path: Path
) -> None:
    settings = media_settings.model_copy(update={"upload_max_duration_s": 7.0})
    headers = signup(api, "bad")
    files = _bad_files(tmp_path)
    ids = {kind: upload(api, headers, data) for kind, (data, _) in files.items()}
    run_transcodes(settings, _done(api, *ids.values()))
    blobs = api.app.state.blobs
    for kind, vid in ids.items():
        body = api.get(f"/api/v1/videos/{vid}", headers=headers).json()
        assert body["status"] == "failed", (kind, body)
        assert files[kind][1] in body["failure_reason"], (kind, body["failure_reason"])
        assert body["video_urls"]["hls"] is None
        assert blobs.list(f"videos/{vid}/") == [] and blobs.list(f"uploads/{vid}/") == [], kind
    failed = [e for e in outbox(api, "video.processed") if e.status == "failed"]
    assert sorted(e.video_id for e in failed) == sorted(ids.values())


def test_same_bytes_reuse_the_ladder(api: TestClient, media_settings: Settings,
                                     tmp_path: Path) -> None:
    headers = signup(api, "dup")
    data = cut(clip("carphone_distorted.mp4"), 3.0, tmp_path / "c.mp4").read_bytes()
    first = upload(api, headers, data)
    run_transcodes(media_settings, _done(api, first))
    second = upload(api, headers, data, title="again")
    run_transcodes(media_settings, _done(api, second))
    with api.app.state.runtime.sessions() as s:
        a, b = s.get(VideoMedia, first), s.get(VideoMedia, second)
        assert a.checksum == b.checksum and b.media_prefix == a.media_prefix == f"videos/{first}/"
    blobs = api.app.state.blobs
    assert not any("/hls/" in k for k in blobs.list(f"videos/{second}/")), "no second ladder"
    body = api.get(f"/api/v1/videos/{second}", headers=headers).json()
    assert body["status"] == "ready" and _probe_ladder(api, body, tmp_path)
    assert api.delete(f"/api/v1/videos/{first}", headers=headers).status_code == 200
    assert blobs.list(f"videos/{first}/hls/"), "the twin still plays from it"
    assert _probe_ladder(api, api.get(f"/api/v1/videos/{second}", headers=headers).json(),
                         tmp_path)
    assert api.delete(f"/api/v1/videos/{second}", headers=headers).status_code == 200
    assert blobs.list(f"videos/{first}/") == [] and blobs.list(f"videos/{second}/") == []


def test_feed_media_urls_resolve_after_transcode(api: TestClient, media_settings: Settings,
                                                 tmp_path: Path) -> None:
    """Every URL a feed item carries for a transcoded video plays (local store and S3)."""
    from candidate_gen.catalog import Catalog
    from platform_services.media.delivery import PlaylistSigner
    from serving.feed.render import MediaUrls

    headers = signup(api, "feed")
    data = cut(clip("carphone_distorted.mp4"), 2.5, tmp_path / "c.mp4").read_bytes()
    vid = upload(api, headers, data)
    run_transcodes(media_settings, _done(api, vid))
    catalog = Catalog(api.app.state.runtime.sessions)  # what the feed knows of the ladder
    catalog.refresh()
    snap = catalog.snapshot
    urls = MediaUrls(api.app.state.blobs, playlists=PlaylistSigner.from_settings(
        media_settings)).get(vid, int(snap.renditions[vid]), snap.small_rungs.get(vid))
    assert set(urls) == {"hls", "source", "thumbnail"}, "a 176x144 source: one small rung"
    assert _probe_ladder(api, {"video_urls": {"hls": urls["hls"]}}, tmp_path) == {
        "144p": ("h264", 176, 144, None)}
    r = http(api, "GET", urls["source"])
    assert r.status_code == 200 and "#EXTINF" in r.text
    r = http(api, "GET", urls["thumbnail"])
    assert r.status_code == 200 and r.content[:2] == b"\xff\xd8"
    if media_settings.blob_url.startswith("file://"):  # the local route: ranges, CDN caching
        r = http(api, "GET", urls["thumbnail"], headers={"Range": "bytes=0-9"})
        assert r.status_code == 206 and len(r.content) == 10
        assert "max-age" in r.headers["cache-control"]
