"""The transcode job for one ``video.uploaded``: the heavy part outside any transaction, the
verdict inside one.

:meth:`TranscodeJob.prepare` starts clean (the video's work directory and blob prefix are
emptied, so a redelivery after a crash never mixes old and new files), downloads the source,
hashes it (SHA-256), reuses the ladder of a ready video with the same bytes or else probes,
checks the limits, scans, transcodes, uploads and moderates. :meth:`TranscodeJob.commit` then
writes ``ready`` (with the URLs' keys) or ``failed`` (with the reason) and emits
``video.processed`` in the worker's transaction, together with the event's idempotency row:
the video is ready exactly once or not at all. :meth:`TranscodeJob.finish` deletes the
source and the scratch files after the commit.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import Counter, Histogram
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.clock import utcnow
from core.config import Settings
from core.events import Event, VideoProcessed, VideoUploaded
from platform_services.bus.outbox import emit
from platform_services.media import moderation
from platform_services.media.models import VideoMedia
from platform_services.media.probe import RejectedSource, check_limits, probe
from platform_services.media.transcode import ladder, transcode
from platform_services.media.uploads import fail, video_prefix
from platform_services.storage.blobs import BlobNotFoundError, BlobStore
from platform_services.storage.models import Moderation, Video, VideoStatus

log = logging.getLogger(__name__)
OUTCOMES = Counter("reelrank_transcode_outcomes", "Transcode results", ["status"])
SECONDS = Histogram("reelrank_transcode_seconds", "Wall time of one transcode job",
                    buckets=(1, 2, 5, 10, 20, 60, 120, 300, 600))
ARTWORK = {"poster.jpg": "image/jpeg", "thumbnail.jpg": "image/jpeg",
           "sprite.jpg": "image/jpeg", "sprite.vtt": "text/vtt"}
CONTENT_TYPES = {".m3u8": "application/vnd.apple.mpegurl", ".ts": "video/mp2t", **{
    f".{k.rsplit('.', 1)[1]}": v for k, v in ARTWORK.items()}}


@dataclass
class Outcome:
    """What :meth:`TranscodeJob.prepare` found; ``status`` None: nothing to do (gone)."""

    status: str | None
    reason: str | None = None
    checksum: str | None = None
    probe: dict | None = None
    renditions: list[dict] = field(default_factory=list)
    media_prefix: str | None = None
    verdict: moderation.Verdict | None = None
    source_key: str | None = None
    work_dir: Path | None = None


class TranscodeJob:
    """Turns ``video.uploaded`` into a ready (or failed) video; see the module docstring."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session], blobs: BlobStore,
                 moderators: list[moderation.Moderator] | None = None) -> None:
        self.settings, self.sessions, self.blobs = settings, sessions, blobs
        self.moderators = moderators if moderators is not None else [moderation.TextRules()]
        self.pending: dict[str, Outcome] = {}

    # --- outside the transaction -------------------------------------------------------------

    def prepare(self, event: Event) -> None:
        assert isinstance(event, VideoUploaded)
        started = time.perf_counter()
        self.pending[str(event.event_id)] = self._prepare(event)
        SECONDS.observe(time.perf_counter() - started)

    def _prepare(self, event: VideoUploaded) -> Outcome:
        with self.sessions() as s:
            row = s.execute(select(Video, VideoMedia).join(
                VideoMedia, VideoMedia.video_id == Video.id).where(Video.id == event.video_id)
            ).first()
            if row is None or row[0].status != VideoStatus.PROCESSING:
                return Outcome(None)  # deleted meanwhile, or not an upload of ours
            video, media = row
            title, description, tags = video.title, video.description or "", list(media.tags)
        work = self.settings.path("transcode", str(event.video_id), "x").parent
        shutil.rmtree(work, ignore_errors=True)  # a redelivery starts over, cleanly
        work.mkdir(parents=True)
        own = video_prefix(event.video_id)
        self.blobs.delete_prefix(own)
        out = Outcome("failed", source_key=event.blob_key, work_dir=work)
        src = work / "source"
        try:
            self.blobs.download(event.blob_key, src)
        except BlobNotFoundError:
            out.reason = "the uploaded file is missing"
            return out
        size = src.stat().st_size
        if size > self.settings.upload_max_bytes:
            out.reason = f"file is {size} bytes; the limit is {self.settings.upload_max_bytes}"
            return out
        out.checksum = _sha256(src)
        try:
            if self.settings.clamd_url:
                moderation.clamd_scan(self.settings.clamd_url, src)
            if self._reuse(out, event.video_id):
                return out
            p = probe(src)
            check_limits(p, self.settings)
            result = transcode(src, work / "out", p, ladder(p, self.settings.transcode_heights),
                               self.settings.transcode_segment_s, self.settings.transcode_preset,
                               self.settings.transcode_threads, frames_dir=work / "frames")
        except (RejectedSource, moderation.VirusFound) as exc:
            if isinstance(exc, moderation.VirusFound):
                out.reason = f"the file is infected: {exc}"
            else:
                out.reason = str(exc)
            self.blobs.delete_prefix(own)
            return out
        for f in result.files:
            key = own + f.relative_to(work / "out").as_posix()
            with f.open("rb") as data:
                self.blobs.put(key, data, CONTENT_TYPES.get(f.suffix, "video/mp2t"))
        out.status, out.probe, out.renditions = "ready", p.as_dict(), result.renditions
        out.media_prefix = own
        out.verdict = moderation.combine([
            m.review(title, description, tags, result.frames)
            for m in self.moderators])
        return out

    def _reuse(self, out: Outcome, video_id: int) -> bool:
        """Dedupe: a ready video with the same bytes lends its ladder (and its moderation
        verdict: re-uploading a blocked file stays blocked); artwork is copied."""
        with self.sessions() as s:
            twin = s.execute(
                select(VideoMedia, Video.moderation).join(Video, Video.id == VideoMedia.video_id)
                .where(VideoMedia.checksum == out.checksum, VideoMedia.video_id != video_id,
                       Video.status == VideoStatus.READY, VideoMedia.media_prefix.is_not(None))
                .order_by(VideoMedia.video_id).limit(1)).first()
        if twin is None:
            return False
        media, verdict = twin
        own, theirs = video_prefix(video_id), video_prefix(media.video_id)
        for name, content_type in ARTWORK.items():
            self.blobs.copy(theirs + name, own + name, content_type)
        out.status, out.probe, out.renditions = "ready", media.probe, list(media.renditions)
        out.media_prefix = media.media_prefix
        out.verdict = moderation.Verdict(verdict, f"same file as video {media.video_id}")
        if verdict == Moderation.APPROVED:
            out.verdict = None  # re-checked on this upload's own text in commit
        return True

    # --- inside the worker's transaction -------------------------------------------------------

    def commit(self, session: Session, events: list[Event]) -> None:
        for event in events:
            out = self.pending.get(str(event.event_id))
            if out is None or out.status is None:
                continue
            assert isinstance(event, VideoUploaded)
            self._commit(session, event, out)

    def _commit(self, session: Session, event: VideoUploaded, out: Outcome) -> None:
        row = session.execute(
            select(Video, VideoMedia).join(VideoMedia, VideoMedia.video_id == Video.id)
            .where(Video.id == event.video_id).with_for_update()).first()
        if row is None or row[0].status != VideoStatus.PROCESSING:
            out.status = None  # deleted while transcoding: finish() removes the files
            return
        video, media = row
        media.attempts += 1
        media.checksum, media.probe = out.checksum, out.probe
        if out.status == "failed":
            fail(session, video, media, out.reason or "transcode failed")
            OUTCOMES.labels("failed").inc()
            return
        verdict = out.verdict or moderation.combine([
            m.review(video.title, video.description or "", list(media.tags), [])
            for m in self.moderators])
        probe_ = out.probe or {}
        video.status, video.moderation = VideoStatus.READY, verdict.status
        video.duration_ms = int(round(probe_.get("duration_s", 0) * 1000))
        media.renditions, media.media_prefix = out.renditions, out.media_prefix
        media.ready_at = utcnow()
        media.moderation_reason, media.moderation_scores = verdict.reason, verdict.scores
        own = video_prefix(video.id)
        emit(session, VideoProcessed(
            video_id=video.id, owner_id=video.owner_id, status="ready",
            duration_ms=video.duration_ms, width=probe_.get("display_width"),
            height=probe_.get("display_height"), codec="h264",
            renditions=[r["name"] for r in out.renditions], thumbnail_key=f"{own}thumbnail.jpg",
            checksum=out.checksum, visibility=video.visibility.value))
        OUTCOMES.labels("ready").inc()

    def finish(self, event: Event, committed: bool) -> None:
        """After the transaction: scratch files go; once committed, the source too, and a
        failed or vanished video's outputs. Uncommitted, blobs stay for the retry (which
        starts over anyway)."""
        out = self.pending.pop(str(event.event_id), None)
        if out is None or out.work_dir is None:
            return  # nothing was started for this event
        shutil.rmtree(out.work_dir, ignore_errors=True)
        if not committed:
            return
        assert isinstance(event, VideoUploaded)
        if out.status != "ready":
            self.blobs.delete_prefix(video_prefix(event.video_id))
        if out.source_key is not None:
            self.blobs.delete(out.source_key)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
