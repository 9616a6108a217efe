"""Versioned event schemas and their JSON wire format.

Every event is an envelope (``type``, ``version``, ``event_id``, ``occurred_at``, ``key``)
plus its own fields. ``key`` is the partitioning key (a user or video id), so all events of
one user land on one partition in order. :func:`decode` checks the schema on the way in and
raises :class:`EventDecodeError` with a reason for anything malformed, unknown or of an
unknown version: the worker framework dead-letters it instead of crashing.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from core.clock import utcnow


class EventDecodeError(ValueError):
    """A payload that is not a valid event of a known type and version."""


class Event(BaseModel):
    """The envelope every event shares. Subclasses set ``type``, ``version`` and ``key_field``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str
    version: int
    event_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    occurred_at: datetime = Field(default_factory=utcnow)
    key: str = ""

    key_field: ClassVar[str]

    @model_validator(mode="before")
    @classmethod
    def _default_key(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("key") and hasattr(cls, "key_field"):
            value = data.get(cls.key_field)
            if value is not None:
                data = {**data, "key": str(value)}
        return data

    @property
    def topic(self) -> str:
        return self.type


class VideoUploaded(Event):
    """An upload finished; starts the transcode. Nothing emits it yet (the media issue will)."""

    type: Literal["video.uploaded"] = "video.uploaded"
    version: Literal[1] = 1
    key_field: ClassVar[str] = "video_id"
    video_id: int
    owner_id: int
    blob_key: str
    content_type: str = "video/mp4"
    size_bytes: int | None = Field(default=None, ge=0)


class VideoProcessed(Event):
    """The transcoder's verdict on a video; the feature stream job consumes it."""

    type: Literal["video.processed"] = "video.processed"
    version: Literal[1] = 1
    key_field: ClassVar[str] = "video_id"
    video_id: int
    owner_id: int
    status: Literal["ready", "failed", "rejected"]
    duration_ms: int | None = Field(default=None, ge=0)
    width: int | None = None
    height: int | None = None
    codec: str | None = None
    renditions: list[str] = Field(default_factory=list)
    thumbnail_key: str | None = None
    checksum: str | None = None
    visibility: Literal["public", "followers", "private"] = "public"


class VideoDeleted(Event):
    """A video taken down. Nothing emits it yet (the media issue's ``DELETE`` will)."""

    type: Literal["video.deleted"] = "video.deleted"
    version: Literal[1] = 1
    key_field: ClassVar[str] = "video_id"
    video_id: int
    owner_id: int
    reason: str = "owner"


class VideoModerated(Event):
    """A moderator's decision on a ready video (``approved`` puts a held video into feeds and
    search; a rejection also emits ``video.deleted``)."""

    type: Literal["video.moderated"] = "video.moderated"
    version: Literal[1] = 1
    key_field: ClassVar[str] = "video_id"
    video_id: int
    owner_id: int
    moderation: Literal["approved", "blocked"]


class Action(StrEnum):
    VIEW = "view"
    WATCH = "watch"
    LIKE = "like"
    UNLIKE = "unlike"
    COMMENT = "comment"
    SHARE = "share"
    SKIP = "skip"
    FOLLOW = "follow"
    UNFOLLOW = "unfollow"
    REPORT = "report"
    # The social endpoints' own actions (issue 14).
    SAVE = "save"
    UNSAVE = "unsave"
    UNCOMMENT = "uncomment"  # a comment deleted (by its author or a moderator)
    BLOCK = "block"
    UNBLOCK = "unblock"


# Actions on a creator (``author_id``) rather than on a video.
CREATOR_ACTIONS = frozenset({Action.FOLLOW, Action.UNFOLLOW, Action.BLOCK, Action.UNBLOCK})


class UserInteraction(Event):
    """A user's action on a video (or on a creator, for follow/unfollow)."""

    type: Literal["user.interaction"] = "user.interaction"
    version: Literal[1] = 1
    key_field: ClassVar[str] = "user_id"
    user_id: int
    action: Action
    video_id: int | None = None
    author_id: int | None = None
    watch_ms: int | None = Field(default=None, ge=0)
    duration_ms: int | None = Field(default=None, ge=0)
    position: int | None = Field(default=None, ge=0)
    request_id: str | None = None
    comment_id: int | None = None  # the comment a comment/uncomment event is about

    @model_validator(mode="after")
    def _target(self) -> UserInteraction:
        check_target(self.action, self.video_id, self.author_id)
        return self


def check_target(action: Action, video_id: int | None, author_id: int | None) -> None:
    """Follow/unfollow and block/unblock act on a creator, a report on a video or a creator,
    everything else on a video."""
    if action in CREATOR_ACTIONS:
        if author_id is None:
            raise ValueError(f"author_id is required for {action.value}")
    elif action == Action.REPORT:
        if video_id is None and author_id is None:
            raise ValueError("video_id or author_id is required for report")
    elif video_id is None:
        raise ValueError(f"video_id is required for {action.value}")


class ExperimentExposure(Event):
    """One page shown to a user: which items, where, from which source, model and variant.

    The feed emits it (one per page, and per experiment the user is in); the ``exposures``
    worker logs the experiments' ones. ``latency_ms``: the feed's time for the page;
    ``degraded``: the components it had to do without (the guardrails read both)."""

    type: Literal["experiment.exposure"] = "experiment.exposure"
    version: Literal[1] = 1
    key_field: ClassVar[str] = "user_id"
    user_id: int
    request_id: str
    experiment: str | None = None
    variant: str | None = None
    model_version: str | None = None
    video_ids: list[int]
    sources: list[str] = Field(default_factory=list)
    first_position: int = Field(default=0, ge=0)
    latency_ms: float | None = Field(default=None, ge=0)
    degraded: list[str] = Field(default_factory=list)


EVENT_TYPES: dict[tuple[str, int], type[Event]] = {
    (cls.model_fields["type"].default, cls.model_fields["version"].default): cls
    for cls in (
        VideoUploaded,
        VideoProcessed,
        VideoDeleted,
        UserInteraction,
        ExperimentExposure,
        VideoModerated,
    )
}


def dlq_topic(topic: str) -> str:
    return f"{topic}.dlq"


def encode(event: Event) -> bytes:
    """Serialize after re-checking the schema, so a bad event never leaves the process."""
    if (event.type, event.version) not in EVENT_TYPES:
        raise EventDecodeError(f"unknown event {event.type} v{event.version}")
    return event.model_dump_json().encode()


def decode(raw: bytes | str) -> Event:
    """Parse and validate; raise :class:`EventDecodeError` naming what is wrong."""
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EventDecodeError(f"malformed JSON: {exc}") from None
    if not isinstance(data, dict):
        raise EventDecodeError("payload is not a JSON object")
    kind, version = data.get("type"), data.get("version")
    cls = EVENT_TYPES.get((kind, version))  # type: ignore[arg-type]
    if cls is None:
        known = sorted({v for t, v in EVENT_TYPES if t == kind})
        if known:
            raise EventDecodeError(f"unknown version {version!r} of {kind} (known: {known})")
        raise EventDecodeError(f"unknown event type {kind!r}")
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or kind
        raise EventDecodeError(f"invalid {kind}: {where}: {first['msg']}") from None
