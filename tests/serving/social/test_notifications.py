"""Notifications end to end on SQLite and PostgreSQL: the social API's writes, the outbox
relay, the ``notifications`` worker on the bus, then ``GET /notifications`` and mark-read."""

from __future__ import annotations

import asyncio
import re
import time

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from core.config import Settings
from core.events import VideoProcessed
from platform_services import notifications
from platform_services.bus.models import OutboxRow, ProcessedEvent
from platform_services.bus.outbox import OutboxRelay, emit
from platform_services.bus.worker import Worker
from platform_services.notification_models import Notification
from platform_services.runtime import Runtime
from tests.serving.social.conftest import FAST, make_account, make_video, sessions_of

NOTES = "/api/v1/notifications"


def drain(settings: Settings, chunk: int = 1000) -> None:
    """Relay the outbox, then run the notifications worker until it has seen every event."""

    async def go() -> None:
        rt = Runtime.from_settings(settings)
        try:
            relay = OutboxRelay(rt.sessions, rt.bus)
            while await relay.run_once():
                pass
            with rt.sessions() as s:
                expected = s.scalar(select(func.count()).select_from(OutboxRow).where(
                    OutboxRow.topic.in_(notifications.TOPICS)))
            worker = Worker(notifications.GROUP, notifications.TOPICS,
                            lambda s, ev: notifications.apply(s, ev, chunk), rt.bus,
                            rt.sessions, FAST)
            stop = asyncio.Event()
            task = asyncio.create_task(worker.run(stop))
            deadline = time.monotonic() + 60
            try:
                while True:
                    with rt.sessions() as s:
                        done = s.scalar(select(func.count()).select_from(ProcessedEvent).where(
                            ProcessedEvent.consumer == notifications.GROUP))
                    if done >= expected:
                        break
                    assert not task.done() and time.monotonic() < deadline
                    await asyncio.sleep(0.05)
            finally:
                stop.set()
                await asyncio.wait_for(task, 30)
        finally:
            await rt.close()

    asyncio.run(go())


def notes_of(api: TestClient, headers: dict, **params: object) -> dict:
    r = api.get(NOTES, headers=headers, params=params)
    assert r.status_code == 200, r.text
    return r.json()


def test_aggregated_notifications(api: TestClient, api_settings: Settings) -> None:
    owner = make_account(api, "owner")
    fans = [make_account(api, f"fan{i}") for i in range(1, 43)]
    video = make_video(api, owner)
    for fan in fans:
        assert api.post(f"/api/v1/videos/{video}/like", headers=fan.headers).status_code == 200
    api.post(f"/api/v1/videos/{video}/like", headers=owner.headers)  # one's own: nothing
    for fan in fans[:3]:
        assert api.post(f"/api/v1/users/{owner.id}/follow", headers=fan.headers).status_code \
            == 200
    r = api.post(f"/api/v1/videos/{video}/comments", headers=fans[0].headers,
                 json={"content": "first"})
    assert r.status_code == 201, r.text
    api.post(f"/api/v1/videos/{video}/comments", headers=fans[1].headers,
             json={"content": "reply", "parent_comment_id": r.json()["comment_id"]})
    drain(api_settings)

    body = notes_of(api, owner.headers)
    by_kind = {n["kind"]: n for n in body["notifications"]}
    assert set(by_kind) == {"like", "follow", "comment"} and body["unread_count"] == 3
    assert re.fullmatch(r"fan\d+ and 41 others liked your video", by_kind["like"]["message"])
    assert by_kind["like"]["actor_count"] == 42 and len(by_kind["like"]["actors"]) == 3
    assert re.fullmatch(r"fan[123] and 2 others started following you",
                        by_kind["follow"]["message"])
    assert by_kind["comment"]["actor_count"] == 2
    with sessions_of(api)() as s:  # 42 likes: one row, not 42
        assert s.scalar(select(func.count()).select_from(Notification).where(
            Notification.user_id == owner.id)) == 3
    reply = notes_of(api, fans[0].headers)["notifications"]
    assert [n["message"] for n in reply] == ["fan2 replied to your comment"]

    # A new upload of a followed creator reaches the 3 followers (written 2 rows a statement).
    second = make_video(api, owner)
    with sessions_of(api).begin() as s:
        emit(s, VideoProcessed(video_id=second, owner_id=owner.id, status="ready"))
    drain(api_settings, chunk=2)
    for fan in fans[:3]:
        got = notes_of(api, fan.headers)["notifications"]
        assert any(n["kind"] == "upload" and n["message"] == "owner posted a new video"
                   and n["video_id"] == second for n in got), got
    assert not any(n["kind"] == "upload" for n in notes_of(api, fans[5].headers)
                   ["notifications"]), "not a follower"

    # Pages of one, newest first; mark one read, then all; a like after reading starts anew.
    pages, cursor = [], None
    while True:
        b = notes_of(api, owner.headers, page_size=1, **({"cursor": cursor} if cursor else {}))
        pages += b["notifications"]
        cursor = b["next_cursor"]
        if not cursor:
            break
    assert [n["id"] for n in pages] == [n["id"] for n in body["notifications"]]
    like_id = by_kind["like"]["id"]
    other = fans[0]
    r = api.post(f"{NOTES}/read", headers=other.headers, json={"ids": [like_id]})
    assert r.json()["updated"] == 0, "someone else's notification is left alone"
    r = api.post(f"{NOTES}/read", headers=owner.headers, json={"ids": [like_id]})
    assert r.status_code == 200 and r.json() == {"updated": 1, "unread_count": 2}
    assert {n["kind"] for n in notes_of(api, owner.headers, unread_only=True)
            ["notifications"]} == {"comment", "follow"}
    api.delete(f"/api/v1/videos/{video}/like", headers=fans[4].headers)
    api.post(f"/api/v1/videos/{video}/like", headers=fans[4].headers)
    drain(api_settings)
    likes = [n for n in notes_of(api, owner.headers)["notifications"] if n["kind"] == "like"]
    assert [(n["read"], n["actor_count"]) for n in likes] == [(False, 1), (True, 42)]
    r = api.post(f"{NOTES}/read", headers=owner.headers, json={"all": True})
    assert r.json()["unread_count"] == 0


def test_bad_input_is_4xx(api: TestClient) -> None:
    me = make_account(api, "myself")
    assert api.get(NOTES).status_code == 401
    for params, field in (({"page_size": 0}, "page_size"), ({"page_size": 99}, "page_size"),
                          ({"cursor": "x" * 600}, "cursor"), ({"unread_only": "maybe"},
                                                              "unread_only")):
        r = api.get(NOTES, headers=me.headers, params=params)
        assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == field
    for cursor in ("abc", "a.b"):
        r = api.get(NOTES, headers=me.headers, params={"cursor": cursor})
        assert r.status_code == 400 and "cursor" in r.json()["error"]["message"]
    for body, field in (({}, ""), ({"ids": [0]}, "ids.0"), ({"ids": [1] * 101}, "ids"),
                        ({"ids": [1], "all": True}, ""), ({"ids": "x"}, "ids")):
        r = api.post(f"{NOTES}/read", headers=me.headers, json=body)
        assert r.status_code == 422, body
        assert r.json()["error"]["fields"][0]["field"] == field, (body, r.json())
