"""Comments through the real app on SQLite and PostgreSQL: reply trees of any depth, cursor
pages, author-only edits, author-or-moderator deletes, blocks and visibility."""

from __future__ import annotations

from fastapi.testclient import TestClient

from core.config import Settings
from platform_services.comments import parse_path, segment
from platform_services.storage.models import Role, VideoStats, Visibility
from tests.serving.social.conftest import (
    drain_counters,
    make_account,
    make_video,
    post_comment,
    sessions_of,
)

V1 = "/api/v1"



def _flatten(nodes: list[dict]) -> list[tuple[int, str]]:
    out = []
    for n in nodes:
        out.append((n["depth"], n["content"]))
        out += _flatten(n["replies"])
    return out


def test_segments_sort_like_ids() -> None:
    ids = [1, 9, 35, 36, 1295, 1296, 10**6, 2**63 - 1]
    assert sorted(segment(i) for i in ids) == [segment(i) for i in ids]
    assert parse_path("".join(segment(i) for i in ids)) == ids


def test_reply_tree_of_any_depth_in_display_order(api: TestClient) -> None:
    ann, bob = make_account(api, "ann"), make_account(api, "bob")
    video = make_video(api, ann)
    first = post_comment(api, ann, video, "first")
    a = post_comment(api, bob, video, "a", first)
    deep = a
    for i in range(30):  # a 31-deep chain
        deep = post_comment(api, ann if i % 2 else bob, video, f"d{i}", deep)
    post_comment(api, bob, video, "b", first)
    second = post_comment(api, bob, video, "second 🎬 '; DROP TABLE comments;--")

    r = api.get(f"{V1}/videos/{video}/comments", headers=bob.headers)
    assert r.status_code == 200, r.text
    threads = r.json()["comments"]
    assert [t["comment_id"] for t in threads] == [second, first], "newest thread first"
    assert threads[0]["content"] == "second 🎬 '; DROP TABLE comments;--"
    flat = _flatten(threads[1]["replies"])
    assert flat[0] == (1, "a") and flat[1:31] == [(i + 2, f"d{i}") for i in range(30)]
    assert flat[-1] == (1, "b"), "each comment is followed by its replies, then its siblings"
    assert threads[1]["user"]["username"] == "ann"

    # Paging: threads by cursor, and a long thread's replies by its replies_cursor.
    r = api.get(f"{V1}/videos/{video}/comments?page_size=1&replies=5", headers=bob.headers)
    body = r.json()
    assert body["has_more"] and [t["comment_id"] for t in body["comments"]] == [second]
    r = api.get(f"{V1}/videos/{video}/comments?page_size=1&replies=5&cursor="
                f"{body['next_cursor']}", headers=bob.headers)
    page = r.json()
    assert [t["comment_id"] for t in page["comments"]] == [first] and not page["has_more"]
    shown = _flatten(page["comments"][0]["replies"])
    assert len(shown) == 5
    cursor, rest = page["comments"][0]["replies_cursor"], []
    while cursor:
        r = api.get(f"{V1}/comments/{first}/replies?page_size=7&cursor={cursor}",
                    headers=bob.headers)
        assert r.status_code == 200, r.text
        rest += [(c["depth"], c["content"]) for c in r.json()["comments"]]
        rest += _flatten([x for c in r.json()["comments"] for x in c["replies"]])
        cursor = r.json()["next_cursor"]
    assert sorted(shown + rest) == sorted(flat) and len(shown) + len(rest) == len(flat)


def test_bad_input_names_the_field(api: TestClient) -> None:
    ann = make_account(api, "ann")
    video, other = make_video(api, ann), make_video(api, ann)
    on_other = post_comment(api, ann, other, "elsewhere")
    cases = [({"content": "x" * 1_000_000}, "content"), ({"content": "   "}, "content"),
             ({"content": "hi", "parent_comment_id": on_other}, "parent_comment_id"),
             ({"content": "hi", "parent_comment_id": 2**63}, "parent_comment_id"),
             ({"content": "hi", "parent_comment_id": 999_999}, "parent_comment_id")]
    for body, field in cases:
        r = api.post(f"{V1}/videos/{video}/comments", json=body, headers=ann.headers)
        assert r.status_code == 422, (body, r.text)
        assert [f["field"] for f in r.json()["error"]["fields"]] == [field]
    for cursor in ("1e400", "-1", "abc", "9" * 30):
        r = api.get(f"{V1}/videos/{video}/comments?cursor={cursor}", headers=ann.headers)
        assert r.status_code == 422, cursor
    r = api.get(f"{V1}/comments/1/replies?cursor=ZZ%00", headers=ann.headers)
    assert r.status_code == 422


def test_edit_by_author_delete_by_author_or_moderator(api: TestClient,
                                                     api_settings: Settings) -> None:
    ann, bob = make_account(api, "ann"), make_account(api, "bob")
    mod = make_account(api, "mod", Role.MODERATOR)
    video = make_video(api, ann)
    c = post_comment(api, bob, video, "typo")
    reply = post_comment(api, ann, video, "reply", c)
    r = api.patch(f"{V1}/comments/{c}", json={"content": "fixed"}, headers=ann.headers)
    assert r.status_code == 403
    r = api.patch(f"{V1}/comments/{c}", json={"content": "fixed"}, headers=mod.headers)
    assert r.status_code == 403, "moderators delete, they do not rewrite"
    r = api.patch(f"{V1}/comments/{c}", json={"content": "fixed"}, headers=bob.headers)
    assert r.status_code == 200 and r.json()["content"] == "fixed" and r.json()["edited_at"]
    assert api.delete(f"{V1}/comments/{c}", headers=ann.headers).status_code == 403
    assert api.delete(f"{V1}/comments/{reply}", headers=ann.headers).status_code == 204
    assert api.delete(f"{V1}/comments/{c}", headers=mod.headers).status_code == 204
    assert api.delete(f"{V1}/comments/{c}", headers=bob.headers).status_code == 404
    threads = api.get(f"{V1}/videos/{video}/comments", headers=bob.headers).json()["comments"]
    assert threads[0]["deleted"] and threads[0]["content"] == "" and threads[0]["user"] is None
    drain_counters(api_settings)
    with sessions_of(api)() as s:
        assert s.get(VideoStats, video).comments == 0


def test_blocked_authors_and_private_videos_are_invisible(api: TestClient) -> None:
    ann, bob, cyd = (make_account(api, n) for n in ("ann", "bob", "cyd"))
    video = make_video(api, ann)
    troll = post_comment(api, cyd, video, "troll")
    post_comment(api, bob, video, "under the troll", troll)
    kind = post_comment(api, bob, video, "kind")
    post_comment(api, cyd, video, "troll reply", kind)
    post_comment(api, ann, video, "ann's reply", kind)
    api.post(f"{V1}/users/{cyd.id}/block", headers=bob.headers)
    threads = api.get(f"{V1}/videos/{video}/comments", headers=bob.headers).json()["comments"]
    assert [t["content"] for t in threads] == ["kind"]
    assert _flatten(threads[0]["replies"]) == [(1, "ann's reply")]
    assert api.get(f"{V1}/comments/{troll}/replies", headers=bob.headers).status_code == 404
    threads = api.get(f"{V1}/videos/{video}/comments", headers=ann.headers).json()["comments"]
    assert len(threads) == 2, "only the blocker stops seeing them"

    private = make_video(api, ann, Visibility.PRIVATE)
    post_comment(api, ann, private, "note to self")
    assert api.get(f"{V1}/videos/{private}/comments", headers=bob.headers).status_code == 404
    r = api.post(f"{V1}/videos/{private}/comments", json={"content": "hi"}, headers=bob.headers)
    assert r.status_code == 404
