"""Profiles, follows, likes, saves, shares, blocks and reports through the real app, on SQLite
and PostgreSQL; counters checked after the real relay and counters worker ran."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, select, text
from sqlalchemy.pool import NullPool

from core.config import Settings
from core.events import decode
from platform_services.bus.models import OutboxRow
from platform_services.storage.db import make_engine
from platform_services.storage.models import Role, Video, VideoStats, VideoStatus, Visibility
from platform_services.storage.social_models import Report
from tests.serving.social.conftest import (
    Account,
    drain_counters,
    make_account,
    make_video,
    sessions_of,
)

V1 = "/api/v1"


def _profile(api: TestClient, who: Account, user_id: int) -> dict:
    r = api.get(f"{V1}/users/{user_id}", headers=who.headers)
    assert r.status_code == 200, r.text
    return r.json()


def _actions(api: TestClient) -> list[str]:
    with sessions_of(api)() as s:
        rows = s.scalars(select(OutboxRow).order_by(OutboxRow.id))
        return [decode(r.value).action.value for r in rows]


def test_profiles_lookup_and_owner_only_edits(api: TestClient) -> None:
    ann, bob = make_account(api, "Ann"), make_account(api, "bob")
    r = api.get(f"{V1}/users/by-username/ANN", headers=bob.headers)
    assert r.status_code == 200 and r.json()["user_id"] == ann.id
    assert api.get(f"{V1}/users/by-username/nobody", headers=bob.headers).status_code == 404
    assert api.get(f"{V1}/users/{ann.id}").status_code == 401

    bio = "x'); DROP TABLE users; -- 🎬 ünïcode ٥"
    r = api.patch(f"{V1}/users/{ann.id}", headers=ann.headers,
                  json={"display_name": "Ann ✨", "bio": bio,
                        "avatar_url": "https://cdn.example.com/a.png"})
    assert r.status_code == 200, r.text
    assert r.json()["bio"] == bio and r.json()["display_name"] == "Ann ✨"
    assert _profile(api, bob, ann.id)["profile_image_url"] == "https://cdn.example.com/a.png"

    r = api.patch(f"{V1}/users/{ann.id}", headers=bob.headers, json={"bio": "hacked"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert _profile(api, bob, ann.id)["bio"] == bio

    for body, field in [({"display_name": "d" * 10_000}, "display_name"),
                        ({"bio": "b" * 501}, "bio"), ({"avatar_url": "javascript:x"},
                                                      "avatar_url"),
                        ({"display_name": "   "}, "display_name")]:
        r = api.patch(f"{V1}/users/me", headers=ann.headers, json=body)
        assert r.status_code == 422, body
        assert [f["field"] for f in r.json()["error"]["fields"]] == [field]
    for bad in (-1, 2**63, 10**30):
        r = api.get(f"{V1}/users/{bad}", headers=ann.headers)
        assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "user_id"
    # 0 is a valid id (a loaded data set numbers its users from 0); here nobody has it.
    r = api.get(f"{V1}/users/0", headers=ann.headers)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_admin_only_verification(api: TestClient) -> None:
    admin, ann = make_account(api, "root", Role.ADMIN), make_account(api, "ann")
    r = api.put(f"{V1}/users/{ann.id}/verified", json={"verified": True}, headers=ann.headers)
    assert r.status_code == 403
    r = api.put(f"{V1}/users/{ann.id}/verified", json={"verified": True}, headers=admin.headers)
    assert r.status_code == 200 and r.json()["verified"] is True
    r = api.put(f"{V1}/users/{ann.id}/role", json={"role": "moderator"}, headers=admin.headers)
    assert r.status_code == 200 and r.json()["role"] == "moderator"
    r = api.put(f"{V1}/users/{ann.id}/role", json={"role": "god"}, headers=admin.headers)
    assert r.status_code == 422


def test_follow_is_idempotent_and_counted(api: TestClient, api_settings: Settings) -> None:
    ann, bob, cy = (make_account(api, n) for n in ("ann", "bob", "cyd"))
    for _ in range(3):
        r = api.post(f"{V1}/users/{ann.id}/follow", headers=bob.headers)
        assert r.status_code == 200 and r.json()["is_following"] is True
    assert api.post(f"{V1}/users/{ann.id}/follow", headers=cy.headers).json()["changed"]
    r = api.post(f"{V1}/users/{bob.id}/follow", headers=bob.headers)
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "user_id"
    assert api.post(f"{V1}/users/999999/follow", headers=bob.headers).status_code == 404
    assert api.delete(f"{V1}/users/{ann.id}/follow", headers=cy.headers).json()["changed"]
    assert not api.delete(f"{V1}/users/{ann.id}/follow", headers=cy.headers).json()["changed"]
    drain_counters(api_settings, redeliver=True)
    assert _profile(api, bob, ann.id)["stats"]["followers"] == 1
    assert _profile(api, bob, ann.id)["is_following"] is True
    assert _profile(api, ann, bob.id)["stats"]["following"] == 1
    assert _profile(api, ann, cy.id)["stats"]["following"] == 0
    assert _actions(api) == ["follow", "follow", "unfollow"]


def test_likes_are_idempotent_and_never_negative(api: TestClient,
                                                 api_settings: Settings) -> None:
    ann, bob = make_account(api, "ann"), make_account(api, "bob")
    video = make_video(api, ann)
    r = api.delete(f"{V1}/videos/{video}/like", headers=bob.headers)
    assert r.status_code == 200 and r.json() == {
        "success": True, "liked": False, "changed": False, "total_likes": 0}
    r = api.post(f"{V1}/videos/{video}/like", headers=bob.headers)
    assert r.status_code == 200 and r.json()["total_likes"] == 1, "counted 0 + this like"
    r = api.post(f"{V1}/videos/{video}/like", headers=bob.headers)  # before the worker ran
    assert r.json() == {"success": True, "liked": True, "changed": False, "total_likes": 1}
    drain_counters(api_settings, redeliver=True)
    for _ in range(4):  # repeats change nothing (the count is the worker's, now with the like)
        r = api.post(f"{V1}/videos/{video}/like", headers=bob.headers)
        assert r.json()["total_likes"] == 1 and r.json()["changed"] is False
    r = api.post(f"{V1}/videos/{video}/like", headers=ann.headers)
    assert r.json()["total_likes"] == 2, "counted likes plus this one"
    drain_counters(api_settings)
    assert api.delete(f"{V1}/videos/{video}/like", headers=bob.headers).json()["total_likes"] == 1
    for _ in range(6):
        api.delete(f"{V1}/videos/{video}/like", headers=bob.headers)
    drain_counters(api_settings)
    with sessions_of(api)() as s:
        assert s.get(VideoStats, video).likes == 1
    assert _profile(api, bob, ann.id)["stats"]["total_likes"] == 1
    for bad in (999_999, 2**63, 10**30):
        r = api.post(f"{V1}/videos/{bad}/like", headers=bob.headers)
        assert r.status_code in (404, 422), (bad, r.status_code)


def test_a_like_on_postgresql_is_one_statement_outside_a_transaction(
        api: TestClient, api_settings: Settings) -> None:
    """On PostgreSQL a like's change and its event are one statement (a data-modifying CTE),
    atomic on its own, so it runs in autocommit: no BEGIN and COMMIT round trips. The pooled
    connection goes back to transactions for the next request."""
    if not api_settings.database_url.startswith("postgresql"):
        pytest.skip("SQLite cannot write in a CTE: its toggles commit a transaction")
    ann, bob = make_account(api, "ann"), make_account(api, "bob")
    video = make_video(api, ann)
    engine = sessions_of(api).kw["bind"]
    seen: list[tuple[str, bool]] = []

    def record(conn, cursor, statement, *_) -> None:  # noqa: ANN001
        seen.append((statement.split()[0], conn.connection.driver_connection.autocommit))

    event.listen(engine, "before_cursor_execute", record)
    try:
        assert api.post(f"{V1}/videos/{video}/like", headers=bob.headers).status_code == 200
        like = list(seen)
        seen.clear()
        assert api.delete(f"{V1}/videos/{video}/like", headers=bob.headers).json()["changed"]
        unlike = list(seen)
        seen.clear()
        assert api.get(f"{V1}/users/me", headers=bob.headers).status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", record)
    for statements in (like, unlike):
        assert [s for s, _ in statements] == ["SELECT", "SELECT", "WITH"], statements
        assert all(autocommit for _, autocommit in statements)
    assert seen and not any(autocommit for _, autocommit in seen), seen
    assert _actions(api) == ["like", "unlike"]


def test_counters_are_exact_under_concurrency(api: TestClient, api_settings: Settings) -> None:
    creator = make_account(api, "star")
    video = make_video(api, creator)
    fans = [make_account(api, f"fan{i}") for i in range(12)]

    def storm(fan: Account) -> None:
        for _ in range(3):  # double (triple) taps, racing every other fan
            api.post(f"{V1}/videos/{video}/like", headers=fan.headers)
            api.post(f"{V1}/users/{creator.id}/follow", headers=fan.headers)
        if fan.id % 3 == 0:  # some change their mind
            api.delete(f"{V1}/videos/{video}/like", headers=fan.headers)
            api.delete(f"{V1}/users/{creator.id}/follow", headers=fan.headers)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(storm, fans))
    drain_counters(api_settings, redeliver=True)
    stayed = sum(1 for f in fans if f.id % 3 != 0)
    stats = _profile(api, fans[0], creator.id)["stats"]
    assert stats["followers"] == stayed and stats["total_likes"] == stayed
    with sessions_of(api)() as s:
        assert s.get(VideoStats, video).likes == stayed


def test_visibility_rules_for_reactions(api: TestClient) -> None:
    ann, bob, cy = (make_account(api, n) for n in ("ann", "bob", "cyd"))
    private = make_video(api, ann, Visibility.PRIVATE)
    followers_only = make_video(api, ann, Visibility.FOLLOWERS)
    api.post(f"{V1}/users/{ann.id}/follow", headers=bob.headers)
    for path in ("like", "save"):
        assert api.post(f"{V1}/videos/{private}/{path}", headers=bob.headers).status_code == 404
        r = api.post(f"{V1}/videos/{followers_only}/{path}", headers=cy.headers)
        assert r.status_code == 404
        r = api.post(f"{V1}/videos/{followers_only}/{path}", headers=bob.headers)
        assert r.status_code == 200
    assert api.post(f"{V1}/videos/{private}/like", headers=ann.headers).status_code == 200
    # The count of videos is what the viewer may see.
    assert _profile(api, cy, ann.id)["stats"]["videos"] == 0
    assert _profile(api, bob, ann.id)["stats"]["videos"] == 1
    assert _profile(api, ann, ann.id)["stats"]["videos"] == 2


def test_block_hides_both_ways_and_ends_follows(api: TestClient) -> None:
    ann, bob = make_account(api, "ann"), make_account(api, "bob")
    video = make_video(api, ann)
    api.post(f"{V1}/users/{ann.id}/follow", headers=bob.headers)
    r = api.post(f"{V1}/users/{ann.id}/block", headers=bob.headers)
    assert r.status_code == 200 and r.json()["is_blocking"] is True
    assert api.post(f"{V1}/users/{ann.id}/block", headers=bob.headers).json()["changed"] is False
    assert _profile(api, bob, ann.id)["is_following"] is False
    assert api.post(f"{V1}/videos/{video}/like", headers=bob.headers).status_code == 404
    assert api.post(f"{V1}/users/{ann.id}/follow", headers=bob.headers).status_code == 403
    assert api.post(f"{V1}/users/{bob.id}/follow", headers=ann.headers).status_code == 403
    api.delete(f"{V1}/users/{ann.id}/block", headers=bob.headers)
    assert api.post(f"{V1}/videos/{video}/like", headers=bob.headers).status_code == 200
    assert _actions(api) == ["follow", "unfollow", "block", "unblock", "like"]


def test_save_share_and_report(api: TestClient) -> None:
    ann, bob = make_account(api, "ann"), make_account(api, "bob")
    video = make_video(api, ann)
    assert api.post(f"{V1}/videos/{video}/save", headers=bob.headers).json()["changed"]
    assert not api.post(f"{V1}/videos/{video}/save", headers=bob.headers).json()["changed"]
    assert api.delete(f"{V1}/videos/{video}/save", headers=bob.headers).json()["saved"] is False
    r = api.post(f"{V1}/videos/{video}/share", json={"channel": "message"}, headers=bob.headers)
    assert r.status_code == 201
    r = api.post(f"{V1}/videos/{video}/share", json={"channel": "pigeon"}, headers=bob.headers)
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "channel"

    body = {"target_type": "video", "target_id": video, "reason": "spam", "details": "🤖"}
    first = api.post(f"{V1}/reports", json=body, headers=bob.headers)
    assert first.status_code == 201 and first.json()["status"] == "open"
    again = api.post(f"{V1}/reports", json=body, headers=bob.headers)
    assert again.status_code == 200 and again.json()["report_id"] == first.json()["report_id"]
    r = api.post(f"{V1}/reports", json={**body, "target_type": "user", "target_id": ann.id},
                 headers=bob.headers)
    assert r.status_code == 201
    r = api.post(f"{V1}/reports", json={**body, "target_id": 424242}, headers=bob.headers)
    assert r.status_code == 404
    r = api.post(f"{V1}/reports", json={**body, "details": "d" * 5000}, headers=bob.headers)
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "details"
    with sessions_of(api)() as s:
        queue = s.scalars(select(Report).where(Report.status == "open")).all()
        assert [(q.target_type, q.target_id) for q in queue] == [("video", video),
                                                                 ("user", ann.id)]
    assert _actions(api) == ["save", "unsave", "share", "report", "report"]


def test_feeds_hide_blocks_both_ways(api: TestClient) -> None:
    """The feed filter's viewer context carries blocks in both directions."""
    from platform_services.storage.models import User
    from serving.feed.filters import load_viewer

    ann, bob, cyd = (make_account(api, n) for n in ("ann", "bob", "cyd"))
    api.post(f"{V1}/users/{ann.id}/block", headers=bob.headers)
    api.post(f"{V1}/users/{bob.id}/block", headers=cyd.headers)
    with sessions_of(api)() as s:
        assert load_viewer(s, s.get(User, bob.id)).blocked.tolist() == sorted([ann.id, cyd.id])
        assert load_viewer(s, s.get(User, ann.id)).blocked.tolist() == [bob.id]


def test_world_video_zero_is_a_video_like_any_other(api: TestClient) -> None:
    """A loaded world keeps its data set's ids, which start at 0, and the feed serves video 0:
    every route taking a video id takes 0; a negative id is still a 422 naming the field."""
    maker, fan = make_account(api, "maker"), make_account(api, "fan")
    with sessions_of(api).begin() as s:
        s.add(Video(id=0, owner_id=maker.id, title="the world's first", duration_ms=15_000,
                    visibility=Visibility.PUBLIC, status=VideoStatus.READY))
    h = fan.headers
    assert api.post(f"{V1}/videos/0/like", headers=h).json()["liked"] is True
    assert api.post(f"{V1}/videos/0/save", headers=h).status_code == 200
    assert api.post(f"{V1}/videos/0/share", headers=h, json={}).status_code == 201
    assert api.post(f"{V1}/videos/0/comments", headers=h, json={"content": "hi"}).status_code \
        == 201
    assert api.get(f"{V1}/videos/0", headers=h).json()["video_id"] == 0
    events = {"events": [{"action": "watch", "video_id": 0, "watch_ms": 9_000, "position": 0}]}
    assert api.post(f"{V1}/events", headers=h, json=events).status_code == 202
    report = {"target_type": "video", "target_id": 0, "reason": "spam"}
    assert api.post(f"{V1}/reports", headers=h, json=report).status_code == 201
    for method, path in (("POST", "/videos/-1/like"), ("POST", "/videos/-1/save"),
                         ("GET", "/videos/-1"), ("GET", "/videos/-1/comments")):
        r = api.request(method, f"{V1}{path}", headers=h)
        assert r.status_code == 422, (path, r.text)
        assert r.json()["error"]["fields"][0]["field"] == "video_id"
    events["events"][0]["video_id"] = -1
    r = api.post(f"{V1}/events", headers=h, json=events)
    assert [f["field"] for f in r.json()["error"]["fields"]] == ["events.0.video_id"]
    r = api.post(f"{V1}/reports", headers=h, json=report | {"target_id": -1})
    assert [f["field"] for f in r.json()["error"]["fields"]] == ["target_id"]


def test_a_database_restart_costs_a_like_nothing(api: TestClient, api_settings: Settings) -> None:
    """The pool does not ping each connection out (a round trip a request): when PostgreSQL
    drops every connection, as a restart does, a like still succeeds (its unit runs once more
    on a fresh connection) and any other route answers at most one 503, never a 500."""
    if not api_settings.database_url.startswith("postgresql"):
        pytest.skip("SQLite has no server to drop a connection")
    ann, bob = make_account(api, "ann"), make_account(api, "bob")
    video = make_video(api, ann)
    assert api.post(f"{V1}/videos/{video}/like", headers=bob.headers).status_code == 200

    def drop_every_connection() -> None:
        engine = make_engine(api_settings.database_url, poolclass=NullPool)
        with engine.connect() as c:
            dropped = c.scalar(text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"))
        engine.dispose()
        assert dropped >= 1, "the API's pooled connection was dropped"

    drop_every_connection()
    r = api.delete(f"{V1}/videos/{video}/like", headers=bob.headers)
    assert r.status_code == 200 and r.json()["liked"] is False and r.json()["changed"] is True
    drop_every_connection()
    statuses = [api.get(f"{V1}/users/me", headers=bob.headers).status_code for _ in range(3)]
    assert statuses in ([200] * 3, [503, 200, 200]), statuses
