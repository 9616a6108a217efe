"""Event schemas: round trip, partition keys, and clear reasons for bad payloads."""

from __future__ import annotations

import json

import pytest

from core.events import (
    EVENT_TYPES,
    Action,
    EventDecodeError,
    UserInteraction,
    VideoProcessed,
    decode,
    dlq_topic,
    encode,
)


def test_round_trip_keeps_every_field_and_keys_by_entity() -> None:
    e = UserInteraction(user_id=7, action=Action.WATCH, video_id=3, watch_ms=1500)
    back = decode(encode(e))
    assert back == e and back.key == "7" and back.topic == "user.interaction"
    v = VideoProcessed(video_id=9, owner_id=1, status="ready")
    assert decode(encode(v)).key == "9"
    assert dlq_topic(v.topic) == "video.processed.dlq"


def test_every_type_is_registered_at_version_1() -> None:
    assert {t for t, _ in EVENT_TYPES} >= {
        "video.uploaded",
        "video.processed",
        "video.deleted",
        "user.interaction",
        "experiment.exposure",
    }


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "malformed JSON"),
        (b"[1, 2]", "not a JSON object"),
        (json.dumps({"type": "nope", "version": 1}).encode(), "unknown event type"),
        (json.dumps({"type": "user.interaction", "version": 9}).encode(), "unknown version 9"),
        (
            json.dumps({"type": "user.interaction", "version": 1, "user_id": 1, "action": "like"}),
            "video_id is required",
        ),
        (
            json.dumps(
                {
                    "type": "user.interaction",
                    "version": 1,
                    "user_id": "x",
                    "action": "like",
                    "video_id": 1,
                }
            ),
            "user_id",
        ),
        (
            json.dumps(
                {
                    "type": "user.interaction",
                    "version": 1,
                    "user_id": 1,
                    "action": "like",
                    "video_id": 1,
                    "surprise": True,
                }
            ),
            "surprise",
        ),
    ],
)
def test_bad_payloads_raise_with_a_reason(payload: bytes | str, reason: str) -> None:
    with pytest.raises(EventDecodeError, match=reason):
        decode(payload)


def test_follow_needs_an_author() -> None:
    with pytest.raises(ValueError, match="author_id"):
        UserInteraction(user_id=1, action=Action.FOLLOW)
