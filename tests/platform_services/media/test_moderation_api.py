"""The moderator API over a real transcode: a held upload is queued, invisible to others and
out of the catalog; only the moderator / admin role may list and decide; approve lets it in,
reject blocks it and emits video.deleted; every bad input is a 4xx naming the field."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select

from candidate_gen.catalog import Catalog
from core.config import Settings
from platform_services.auth import issue_token
from platform_services.storage.models import Role, User
from tests.platform_services.media.conftest import (
    clip,
    cut,
    outbox,
    run_transcodes,
    upload,
    video_status,
)
from tests.serving.conftest import signup

QUEUE = "/api/v1/moderation/queue"


def _token(client: TestClient, settings: Settings, name: str, role: str) -> dict[str, str]:
    signup(client, name)
    with client.app.state.runtime.sessions() as s:  # granted in the database, as an admin would
        user = s.scalars(select(User).where(User.username == name)).one()
        user.role, uid = Role(role), user.id
        s.commit()
    return {"Authorization": f"Bearer {issue_token(settings, uid, role=role)}"}


def test_queue_roles_decisions_and_the_catalog(client: TestClient, settings: Settings,
                                               tmp_path: Path) -> None:
    owner = signup(client, "creator")
    viewer = signup(client, "viewer")
    moderator = _token(client, settings, "mod", "moderator")
    admin = _token(client, settings, "boss", "admin")
    data = cut(clip("carphone_distorted.mp4"), 3.0, tmp_path / "c.mp4").read_bytes()
    held: list[int] = []
    for _ in range(2):  # the second is the same file: it keeps the first one's verdict
        held.append(upload(client, owner, data, title="beach day #nsfw"))
        run_transcodes(settings, lambda: video_status(client, held[-1]) != "processing")
    assert [video_status(client, v) for v in held] == ["ready", "ready"]
    for v in held:
        assert client.get(f"/api/v1/videos/{v}", headers=viewer).status_code == 404
        assert client.get(f"/api/v1/videos/{v}", headers=owner).json()["moderation"] \
            == "needs_review"

    assert client.get(QUEUE).status_code == 401
    r = client.get(QUEUE, headers=viewer)
    assert r.status_code == 403 and "moderator" in r.json()["error"]["message"]
    r = client.post(f"/api/v1/moderation/videos/{held[0]}", headers=owner,
                    json={"action": "approve", "reason": "mine"})
    assert r.status_code == 403, "the owner cannot approve their own held video"

    page = client.get(QUEUE, headers=moderator, params={"limit": 1}).json()
    assert [i["video_id"] for i in page["items"]] == [held[0]] and page["has_more"]
    assert page["items"][0]["reason"] == "text rule: 'nsfw'"
    assert "imagenet:firearm" in page["items"][0]["scores"], "the frame classifier ran too"
    page2 = client.get(QUEUE, headers=admin,
                       params={"limit": 1, "cursor": page["next_cursor"]}).json()
    assert [i["video_id"] for i in page2["items"]] == [held[1]] and not page2["has_more"]
    assert page2["items"][0]["reason"] == f"same file as video {held[0]}"

    for params in ({"status": "approved"}, {"limit": 0}, {"limit": 101}, {"cursor": "x1"}):
        r = client.get(QUEUE, headers=moderator, params=params)
        assert r.status_code == 422, params
        assert r.json()["error"]["fields"][0]["field"] in str(params), r.json()
    for body in ({"action": "delete", "reason": "x"}, {"action": "approve", "reason": ""},
                 {"action": "approve", "reason": "ok", "extra": 1}, {"action": "approve"}):
        r = client.post(f"/api/v1/moderation/videos/{held[0]}", headers=moderator, json=body)
        assert r.status_code == 422, body
    r = client.post("/api/v1/moderation/videos/999999", headers=moderator,
                    json={"action": "approve", "reason": "ok"})
    assert r.status_code == 404

    catalog = Catalog(client.app.state.runtime.sessions)
    catalog.refresh()
    assert not catalog.snapshot.ready[held].any(), "held videos are not eligible anywhere"
    r = client.post(f"/api/v1/moderation/videos/{held[0]}", headers=moderator,
                    json={"action": "approve", "reason": "a beach, nothing else"})
    assert r.status_code == 200 and r.json()["moderation"] == "approved"
    r = client.post(f"/api/v1/moderation/videos/{held[1]}", headers=admin,
                    json={"action": "reject", "reason": "spam"})
    assert r.status_code == 200 and r.json()["moderation"] == "blocked"
    catalog.refresh()
    assert catalog.snapshot.ready[held[0]] and not catalog.snapshot.ready[held[1]]
    assert client.get(f"/api/v1/videos/{held[0]}", headers=viewer).status_code == 200
    assert client.get(f"/api/v1/videos/{held[1]}", headers=viewer).status_code == 404
    deleted = outbox(client, "video.deleted")
    assert [(e.video_id, e.reason) for e in deleted] == [(held[1], "moderation")]
    assert client.get(QUEUE, headers=moderator).json()["items"] == []
    blocked = client.get(QUEUE, headers=moderator, params={"status": "blocked"}).json()
    assert [(i["video_id"], i["reason"]) for i in blocked["items"]] == [
        (held[1], f"moderator {_uid(client, 'boss')}: spam")]


def _uid(client: TestClient, name: str) -> int:
    with client.app.state.runtime.sessions() as s:
        return s.scalar(select(User.id).where(User.username == name))
