"""The demo's real clips, uploaded the way the app uploads them.

For each file of ``demo_clips`` in ``demo_clips_dir`` (``../shared/data/videos``), a creator the
demo user follows calls the public API: ``POST /api/v1/videos/upload``, ``PUT`` of the bytes
to the pre-signed URL, ``POST /videos/{id}/complete``; the transcode worker then makes the HLS
ladder, artwork and moderation verdict and publishes it (``ready``), the fan-out worker pushes
it into the followers' feeds and the embed worker into the ANN index. The demo waits for each
clip, shows the time it took, fetches its master playlist through the signed media URL (what a
player does) and says whether it reached the demo user's following feed.
"""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import urljoin

import httpx
import typer

from core.config import Settings

READY_LIMIT_S = 240.0  # per clip: a 720p clip transcodes at ~1x real time on one core
FEED_LIMIT_S = 30.0


def _creator_followed_by(settings: Settings, user_id: int) -> int:
    """A creator ``user_id`` follows, so the clips reach the demo user's following feed."""
    from sqlalchemy import select

    from platform_services.storage.db import make_engine
    from platform_services.storage.models import Follow

    engine = make_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            followee = conn.execute(select(Follow.followee_id).where(
                Follow.follower_id == user_id).order_by(Follow.followee_id).limit(1)).scalar()
    finally:
        engine.dispose()
    return int(followee) if followee is not None else user_id


def upload_one(client: httpx.Client, headers: dict[str, str], path: Path) -> int:
    """Upload ticket, PUT, complete: the new video's id (``processing`` now)."""
    r = client.post("/api/v1/videos/upload", headers=headers, json={
        "title": f"{path.stem}: a real clip", "description": f"{path.name}, uploaded by the demo",
        "tags": ["demo", "real"], "content_type": "video/mp4"})
    r.raise_for_status()
    ticket = r.json()
    put = client.put(urljoin(str(client.base_url), ticket["upload_url"]),
                     content=path.read_bytes(), headers={"Content-Type": ticket["content_type"]})
    put.raise_for_status()
    client.post(f"/api/v1/videos/{ticket['video_id']}/complete",
                headers=headers).raise_for_status()
    return int(ticket["video_id"])


def wait_ready(client: httpx.Client, headers: dict[str, str], video_id: int,
               limit_s: float = READY_LIMIT_S) -> dict:
    """The video once it is no longer ``processing`` (or as it is after ``limit_s``)."""
    deadline = time.monotonic() + limit_s
    while True:
        video = client.get(f"/api/v1/videos/{video_id}", headers=headers).json()
        if video.get("status") != "processing" or time.monotonic() > deadline:
            return video
        time.sleep(1.0)


def in_following(client: httpx.Client, headers: dict[str, str], video_id: int) -> bool:
    """Whether the video reaches the viewer's following feed within ``FEED_LIMIT_S``."""
    deadline = time.monotonic() + FEED_LIMIT_S
    while time.monotonic() < deadline:
        r = client.get("/api/v1/feed/following", headers=headers, params={"page_size": 50})
        if r.status_code == 200 and any(v["video_id"] == video_id for v in r.json()["videos"]):
            return True
        time.sleep(1.0)
    return False


def upload_clips(settings: Settings, base: str, viewer_id: int) -> list[dict]:
    """Every configured clip through the pipeline, one after another, with progress; one
    row per clip (what happened), also printed."""
    from platform_services.auth import issue_token

    clips = [settings.demo_clips_dir / n for n in settings.demo_clips]
    clips = [c for c in clips if c.is_file()]
    if not clips:
        typer.echo(f"  (no clips in {settings.demo_clips_dir}: nothing uploaded)")
        return []
    creator = _creator_followed_by(settings, viewer_id)
    as_creator = {"Authorization": f"Bearer {issue_token(settings, creator, ttl_s=3600)}"}
    as_viewer = {"Authorization": f"Bearer {issue_token(settings, viewer_id, ttl_s=3600)}"}
    rows, started = [], time.monotonic()
    with httpx.Client(base_url=base, timeout=60.0) as client:
        for i, clip in enumerate(clips, 1):
            t0 = time.monotonic()
            typer.echo(f"  clip {i}/{len(clips)}: uploading {clip.name} "
                       f"({clip.stat().st_size / 1e6:.1f} MB) as user {creator} ...")
            try:
                vid = upload_one(client, as_creator, clip)
                video = wait_ready(client, as_creator, vid)
                hls = video.get("video_urls", {}).get("hls")
                playlist = client.get(urljoin(base, hls)) if hls else None
                plays = bool(playlist is not None and playlist.status_code == 200
                             and playlist.text.startswith("#EXTM3U"))
                followed = video.get("status") == "ready" and in_following(
                    client, as_viewer, vid)
            except httpx.HTTPError as exc:
                typer.secho(f"  clip {i}/{len(clips)}: {clip.name} failed: {exc}", fg="red")
                rows.append({"clip": clip.name, "error": str(exc)})
                continue
            row = {"clip": clip.name, "video_id": vid, "status": video.get("status"),
                   "moderation": video.get("moderation"), "hls_plays": plays,
                   "in_following_feed": followed, "seconds": time.monotonic() - t0}
            rows.append(row)
            typer.echo(f"  clip {i}/{len(clips)}: video {vid} {row['status']} "
                       f"(moderation {row['moderation']}) in {row['seconds']:.0f} s; HLS "
                       f"playlist {'plays' if plays else 'MISSING'}; in user {viewer_id}'s "
                       f"following feed: {'yes' if followed else 'no'}"
                       + (f"\n    {urljoin(base, hls)}" if hls else ""))
    typer.echo(f"  real clips done in {time.monotonic() - started:.0f} s\n")
    return rows
