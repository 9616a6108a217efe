"""The issue's security rules and its "found by probing" findings, each through the real app
on SQLite and on PostgreSQL: account deletion, owner-only routes, visibility of private and
followers-only videos, SQL metacharacters and unicode as data, and ``/events`` validation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from core.config import Settings
from platform_services.bus.models import OutboxRow
from platform_services.storage.models import User, Video, VideoStats, VideoStatus, Visibility
from platform_services.storage.social_models import Comment, RefreshToken, UserStats
from tests.serving.social.conftest import (
    PASSWORD,
    Account,
    drain_counters,
    make_account,
    make_video,
    post_comment,
    sessions_of,
)

V1 = "/api/v1"



def _stats(api: TestClient, user_id: int) -> tuple[int, int, int]:
    with sessions_of(api)() as s:
        st = s.get(UserStats, user_id)
        return (st.followers, st.following, st.total_likes) if st else (0, 0, 0)


def _delete_me(api: TestClient, who: Account, password: str = PASSWORD) -> int:
    return api.request("DELETE", f"{V1}/users/me", headers=who.headers,
                       json={"password": password}).status_code


def test_account_deletion_ends_tokens_and_hides_content(api: TestClient,
                                                        api_settings: Settings) -> None:
    ann, bob, cyd = (make_account(api, n) for n in ("ann", "bob", "cyd"))
    ann_video, bob_video = make_video(api, ann), make_video(api, bob)
    own_comment = post_comment(api, ann, ann_video, "on my own video")
    on_bob = post_comment(api, ann, bob_video, "ann was here")
    bob_reply = post_comment(api, bob, bob_video, "bob answers", on_bob)
    for path in (f"videos/{bob_video}/like", f"videos/{bob_video}/save",
                 f"users/{bob.id}/follow", f"users/{cyd.id}/block"):
        assert api.post(f"{V1}/{path}", headers=ann.headers).status_code == 200, path
    assert api.post(f"{V1}/videos/{ann_video}/like", headers=bob.headers).status_code == 200
    assert api.post(f"{V1}/users/{ann.id}/follow", headers=bob.headers).status_code == 200
    drain_counters(api_settings)
    assert _stats(api, bob.id) == (1, 1, 1)  # ann follows bob, bob follows ann, ann liked

    assert _delete_me(api, ann, "not my password") == 403
    assert api.get(f"{V1}/users/me", headers=ann.headers).status_code == 200, "still there"
    assert _delete_me(api, ann) == 204

    # Every way in is closed: access token, refresh token, password.
    r = api.get(f"{V1}/users/me", headers=ann.headers)
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    assert api.post(f"{V1}/videos/{bob_video}/like", headers=ann.headers).status_code == 401
    r = api.post(f"{V1}/auth/refresh", json={"refresh_token": ann.refresh_token})
    assert r.status_code == 401
    r = api.post(f"{V1}/auth/token", json={"username": "ann", "password": PASSWORD})
    assert r.status_code == 401
    # The account is gone for everyone else, and so is what it made.
    assert api.get(f"{V1}/users/{ann.id}", headers=bob.headers).status_code == 404
    assert api.get(f"{V1}/users/by-username/ann", headers=bob.headers).status_code == 404
    assert api.post(f"{V1}/users/{ann.id}/follow", headers=bob.headers).status_code == 404
    assert api.get(f"{V1}/users/{ann.id}/followers", headers=bob.headers).status_code == 404
    for path in ("like", "save"):
        r = api.post(f"{V1}/videos/{ann_video}/{path}", headers=bob.headers)
        assert r.status_code == 404, path
    assert api.get(f"{V1}/videos/{ann_video}/comments", headers=bob.headers).status_code == 404
    threads = api.get(f"{V1}/videos/{bob_video}/comments", headers=bob.headers).json()
    [thread] = threads["comments"]
    assert thread["deleted"] and thread["content"] == "" and thread["user"] is None
    assert [c["comment_id"] for c in thread["replies"]] == [bob_reply], "replies keep place"
    assert api.get(f"{V1}/users/{bob.id}/followers", headers=bob.headers).json()["users"] == []
    assert api.get(f"{V1}/users/{bob.id}/following", headers=bob.headers).json()["users"] == []

    # The counts ann moved come back down once the counters worker has run.
    drain_counters(api_settings, redeliver=True)
    assert _stats(api, bob.id) == (0, 0, 0)
    with sessions_of(api)() as s:
        assert s.get(VideoStats, bob_video).likes == 0
        assert s.get(VideoStats, bob_video).comments == 1, "bob's reply only"
        row = s.get(User, ann.id)
        assert row.deleted_at is not None and row.email.endswith(".invalid")
        assert row.bio == "" and row.display_name is None
        assert s.get(Video, ann_video).status == VideoStatus.REMOVED  # the catalog drops it
        assert all(t.revoked_at for t in s.scalars(
            select(RefreshToken).where(RefreshToken.user_id == ann.id)))
        assert s.get(Comment, own_comment).deleted_at is not None
    # The name and the email are free again.
    again = make_account(api, "ann")
    assert again.id != ann.id
    assert api.get(f"{V1}/users/by-username/ann", headers=bob.headers).json()["user_id"] \
        == again.id


def test_every_owner_only_route_refuses_others(api: TestClient) -> None:
    """Each route that documents a 403, called by someone it does not belong to."""
    ann, bob = make_account(api, "ann"), make_account(api, "bob")
    eve = make_account(api, "eve")  # a plain user poking at others' things
    video = make_video(api, ann)
    comment = post_comment(api, ann, video, "mine")
    api.post(f"{V1}/users/{eve.id}/block", headers=bob.headers)
    attempts = {
        ("patch", "/api/v1/users/{user_id}"): (f"users/{ann.id}", {"bio": "pwned"}),
        ("delete", "/api/v1/users/{user_id}"): (f"users/{ann.id}", {"password": PASSWORD}),
        ("delete", "/api/v1/users/me"): ("users/me", {"password": "not eve's password"}),
        ("patch", "/api/v1/comments/{comment_id}"): (f"comments/{comment}",
                                                      {"content": "pwned"}),
        ("delete", "/api/v1/comments/{comment_id}"): (f"comments/{comment}", None),
        ("put", "/api/v1/users/{user_id}/verified"): (f"users/{eve.id}/verified",
                                                      {"verified": True}),
        ("put", "/api/v1/users/{user_id}/role"): (f"users/{eve.id}/role", {"role": "admin"}),
        ("post", "/api/v1/users/{user_id}/follow"): (f"users/{bob.id}/follow", None),
        # Moderation is for moderators; a playlist needs the signature the video's URL carries.
        ("get", "/api/v1/moderation/queue"): ("moderation/queue", None),
        ("post", "/api/v1/moderation/videos/{video_id}"): (
            f"moderation/videos/{video}", {"action": "reject", "reason": "pwned"}),
        ("get", "/api/v1/media/{video_id}/{exp}/{sig}/{path}"): (
            f"media/{video}/{2**40}/{'0' * 32}/master.m3u8", None),
        # A feed's scores and experiment arm are for staff outside dev (``feed_debug_role``).
        ("get", "/api/v1/feed/for-you"): ("feed/for-you?debug=true", None),
        # Experiments are managed by admins only.
        ("post", "/api/v1/experiments"): ("experiments", {"name": "pwned"}),
        ("get", "/api/v1/experiments"): ("experiments", None),
        ("get", "/api/v1/experiments/{name}"): ("experiments/any", None),
        ("post", "/api/v1/experiments/{name}/start"): ("experiments/any/start", None),
        ("post", "/api/v1/experiments/{name}/stop"): ("experiments/any/stop", None),
        # Local blobs: a URL without the store's signature (absolute paths: not under /api/v1).
        ("put", "/blobs/{key}"): (f"/blobs/videos/{video}/source.mp4", None),
        ("get", "/blobs/{key}"): (f"/blobs/videos/{video}/source.mp4", None),
    }
    spec = api.get("/openapi.json").json()["paths"]
    documented = {(m, p) for p, ops in spec.items() for m, op in ops.items()
                  if "403" in op["responses"]}
    assert documented == set(attempts), "every route that can answer 403 is tried here"
    for (method, _), (path, body) in attempts.items():
        url = path if path.startswith("/") else f"{V1}/{path}"
        r = api.request(method.upper(), url, headers=eve.headers, json=body)
        assert r.status_code == 403, (method, path, r.text)
        assert r.json()["error"]["code"] == "forbidden"
    # Nothing changed.
    me = api.get(f"{V1}/users/{ann.id}", headers=ann.headers).json()
    assert me["bio"] == "" and me["user_id"] == ann.id
    threads = api.get(f"{V1}/videos/{video}/comments", headers=ann.headers).json()["comments"]
    assert threads[0]["content"] == "mine" and not threads[0]["deleted"]
    eve_now = api.get(f"{V1}/users/me", headers=eve.headers).json()
    assert eve_now["role"] == "user" and not eve_now["verified"]


def test_hidden_videos_are_invisible_in_every_list_count_and_thread(
        api: TestClient, api_settings: Settings) -> None:
    ann, fan, stranger = (make_account(api, n) for n in ("ann", "fan", "stranger"))
    api.post(f"{V1}/users/{ann.id}/follow", headers=fan.headers)
    public = make_video(api, ann)
    followers_only = make_video(api, ann, Visibility.FOLLOWERS)
    private = make_video(api, ann, Visibility.PRIVATE)
    processing = make_video(api, ann, status=VideoStatus.PROCESSING)
    c_fol = post_comment(api, fan, followers_only, "for followers")
    c_priv = post_comment(api, ann, private, "note to self")
    for v in (public, followers_only):
        assert api.post(f"{V1}/videos/{v}/save", headers=fan.headers).status_code == 200

    def sees(who: Account) -> dict[str, object]:
        saved = api.get(f"{V1}/users/me/saved", headers=who.headers).json()["videos"]
        return {
            "count": api.get(f"{V1}/users/{ann.id}", headers=who.headers)
            .json()["stats"]["videos"],
            "threads": {v for v in (public, followers_only, private, processing)
                        if api.get(f"{V1}/videos/{v}/comments",
                                   headers=who.headers).status_code == 200},
            "replies": {c for c in (c_fol, c_priv)
                        if api.get(f"{V1}/comments/{c}/replies",
                                   headers=who.headers).status_code == 200},
            "saved": {i["video_id"] for i in saved},
        }

    assert sees(stranger) == {"count": 1, "threads": {public}, "replies": set(), "saved": set()}
    assert sees(fan) == {"count": 2, "threads": {public, followers_only}, "replies": {c_fol},
                         "saved": {public, followers_only}}
    assert sees(ann)["threads"] == {public, followers_only, private, processing}
    for hidden in (followers_only, private, processing):  # nor can a stranger act on them
        for path in ("like", "save", "share"):
            r = api.post(f"{V1}/videos/{hidden}/{path}", headers=stranger.headers, json={})
            assert r.status_code == 404, (hidden, path)
        r = api.post(f"{V1}/videos/{hidden}/comments", headers=stranger.headers,
                     json={"content": "hi"})
        assert r.status_code == 404
        r = api.post(f"{V1}/events", headers=stranger.headers,
                     json={"events": [{"action": "view", "video_id": hidden}]})
        assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] \
            == "events.0.video_id"
    r = api.post(f"{V1}/reports", headers=stranger.headers, json={
        "target_type": "comment", "target_id": c_fol, "reason": "spam"})
    assert r.status_code == 404
    # Unfollowing hides the followers-only video from the saved list, thread and count.
    api.delete(f"{V1}/users/{ann.id}/follow", headers=fan.headers)
    assert sees(fan) == {"count": 1, "threads": {public}, "replies": set(), "saved": {public}}
    # The like count of a hidden video is not readable through a reaction either.
    r = api.delete(f"{V1}/videos/{followers_only}/like", headers=fan.headers)
    assert r.status_code == 404


def test_sql_metacharacters_and_unicode_are_data(api: TestClient) -> None:
    nasty = ["'; DROP TABLE users; --", "\" OR 1=1 --", "%_\\%", "Robert'); --",
             "🎬 ünïcode ٥ 漢字 \u202e", "a' UNION SELECT 1--"]
    ann = make_account(api, "ann_x")
    bob = make_account(api, "bob")
    video = make_video(api, ann)
    for text in nasty:
        r = api.patch(f"{V1}/users/me", headers=ann.headers,
                      json={"display_name": text[:64], "bio": text})
        assert r.status_code == 200 and r.json()["bio"] == text
        cid = post_comment(api, bob, video, text)
        r = api.patch(f"{V1}/comments/{cid}", headers=bob.headers, json={"content": text * 2})
        assert r.status_code == 200 and r.json()["content"] == text * 2
        r = api.post(f"{V1}/reports", headers=bob.headers, json={
            "target_type": "comment", "target_id": cid, "reason": "other", "details": text})
        assert r.status_code == 201
    contents = [c["content"] for c in api.get(f"{V1}/videos/{video}/comments?page_size=50",
                                              headers=ann.headers).json()["comments"]]
    assert contents == [t * 2 for t in reversed(nasty)]
    # Identifiers: lookups compare exactly (no LIKE wildcards), odd ones are 422, never 500.
    assert api.get(f"{V1}/users/by-username/ANN_X", headers=bob.headers).status_code == 200
    assert api.get(f"{V1}/users/by-username/annax", headers=bob.headers).status_code == 404
    for bad in ("ann'--", "%25", "ann%20x", "🎬"):
        r = api.get(f"{V1}/users/by-username/{bad}", headers=bob.headers)
        assert r.status_code in (404, 422), (bad, r.status_code)
        assert "error" in r.json()
    for cursor in ("1'; DROP TABLE follows;--", "1_1 OR 1=1", "99999999999999999999_1"):
        r = api.get(f"{V1}/users/{ann.id}/followers", headers=bob.headers,
                    params={"cursor": cursor})
        assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "cursor"
    with sessions_of(api)() as s:  # every table still there, and counted
        assert s.scalar(select(func.count()).select_from(User)) == 2
        assert s.scalar(select(func.count()).select_from(Comment)) == len(nasty)


def test_events_keep_client_telemetry_only(api: TestClient) -> None:
    """The probing findings on ``/events``: stateful actions refused, ids bounded, watch time
    and timestamps checked against the catalog and the workers' window."""
    ann = make_account(api, "ann")
    video = make_video(api, ann, duration_ms=10_000)
    ok = {"events": [{"action": "watch", "video_id": video, "watch_ms": 9_000},
                     {"action": "skip", "video_id": video}]}
    assert api.post(f"{V1}/events", headers=ann.headers, json=ok).status_code == 202
    year_one = "0001-01-01T00:00:00Z"
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    for event, field in [
        ({"action": "like", "video_id": video}, "action"),
        ({"action": "unlike", "video_id": video}, "action"),
        ({"action": "follow", "video_id": video}, "action"),
        ({"action": "view", "video_id": 999_999}, "video_id"),
        ({"action": "view", "video_id": 2**63}, "video_id"),
        ({"action": "view", "video_id": 10**30}, "video_id"),
        ({"action": "watch", "video_id": video, "watch_ms": 24 * 3600 * 1000}, "watch_ms"),
        ({"action": "watch", "video_id": video, "watch_ms": 51_000}, "watch_ms"),
        ({"action": "view", "video_id": video, "occurred_at": year_one}, "occurred_at"),
        ({"action": "view", "video_id": video, "occurred_at": tomorrow}, "occurred_at"),
    ]:
        r = api.post(f"{V1}/events", headers=ann.headers, json={"events": [event]})
        assert r.status_code == 422, (event, r.text)
        assert [f["field"] for f in r.json()["error"]["fields"]] == [f"events.0.{field}"]
    with sessions_of(api)() as s:
        assert s.scalar(select(func.count()).select_from(OutboxRow)) == 2


def test_staff_get_past_the_debug_rule(api: TestClient) -> None:
    """The other side of the for-you ``debug`` 403: a moderator's token (the role the rule
    reads) goes on to the feed, which this app does not run (503), not a refusal."""
    from platform_services.auth import issue_token

    who = make_account(api, "mod")
    settings = api.app.state.runtime.settings
    staff = {"Authorization": f"Bearer {issue_token(settings, who.id, role='moderator')}"}
    url = f"{V1}/feed/for-you?debug=true"
    assert api.get(url, headers=who.headers).status_code == 403
    assert api.get(url, headers=staff).status_code == 503
