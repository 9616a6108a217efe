"""Followers, following and saved lists through the real app on SQLite and PostgreSQL:
newest first, keyset cursors that neither skip nor repeat while rows are added, blocks and
visibility applied."""

from __future__ import annotations

from fastapi.testclient import TestClient

from platform_services.social_lists import encode_cursor, parse_cursor
from platform_services.storage.models import VideoStatus, Visibility
from tests.serving.social.conftest import Account, make_account, make_video

V1 = "/api/v1"


def _all_pages(api: TestClient, who: Account, path: str, key: str, page_size: int,
               between_pages: object = None) -> list[dict]:
    out, cursor = [], None
    while True:
        params = {"page_size": page_size, **({"cursor": cursor} if cursor else {})}
        r = api.get(f"{V1}/{path}", headers=who.headers, params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        out += body[key]
        assert body["has_more"] == (body["next_cursor"] is not None)
        if not body["has_more"]:
            return out
        cursor = body["next_cursor"]
        if callable(between_pages):
            between_pages()


def test_cursor_round_trip() -> None:
    from datetime import UTC, datetime

    at = datetime(2026, 5, 17, 8, 30, 1, 123456, tzinfo=UTC)
    assert parse_cursor(encode_cursor(at, 42)) == (at, 42)


def test_followers_and_following_pages(api: TestClient) -> None:
    star = make_account(api, "star")
    fans = [make_account(api, f"fan{i}") for i in range(7)]
    for fan in fans:
        assert api.post(f"{V1}/users/{star.id}/follow", headers=fan.headers).status_code == 200
    api.post(f"{V1}/users/{fans[0].id}/follow", headers=star.headers)
    late = make_account(api, "late")

    def someone_follows_meanwhile() -> None:  # a new row must not shift or repeat a page
        api.post(f"{V1}/users/{star.id}/follow", headers=late.headers)

    listed = _all_pages(api, fans[1], f"users/{star.id}/followers", "users", 3,
                        someone_follows_meanwhile)
    assert [u["username"] for u in listed] == [f"fan{i}" for i in reversed(range(7))], \
        "newest first, each once; the follow made while paging is before the cursor"
    assert not any(u["is_following"] for u in listed), "fan1 follows nobody yet"
    first = api.get(f"{V1}/users/{star.id}/followers?page_size=1", headers=fans[1].headers)
    assert first.json()["users"][0]["username"] == "late"

    r = api.get(f"{V1}/users/{star.id}/following", headers=fans[1].headers).json()
    assert [u["username"] for u in r["users"]] == ["fan0"] and not r["has_more"]
    # is_following is the caller's relation to each listed user.
    api.post(f"{V1}/users/{fans[2].id}/follow", headers=fans[1].headers)
    r = api.get(f"{V1}/users/{star.id}/followers?page_size=100", headers=fans[1].headers)
    mine = {u["username"]: u["is_following"] for u in r.json()["users"]}
    assert mine["fan2"] is True and mine["fan3"] is False

    # Blocks either way drop the user from the caller's lists.
    api.post(f"{V1}/users/{fans[1].id}/block", headers=fans[3].headers)
    r = api.get(f"{V1}/users/{star.id}/followers?page_size=100", headers=fans[1].headers)
    assert "fan3" not in {u["username"] for u in r.json()["users"]}
    r = api.get(f"{V1}/users/{star.id}/followers?page_size=100", headers=star.headers)
    assert "fan3" in {u["username"] for u in r.json()["users"]}

    for bad, field in [({"page_size": 0}, "page_size"), ({"page_size": 101}, "page_size"),
                       ({"cursor": "abc"}, "cursor"), ({"cursor": "-1_5"}, "cursor"),
                       ({"cursor": "1_" + "9" * 19}, "cursor")]:
        r = api.get(f"{V1}/users/{star.id}/followers", headers=star.headers, params=bad)
        assert r.status_code == 422, bad
        assert r.json()["error"]["fields"][0]["field"] == field
    assert api.get(f"{V1}/users/999999/followers", headers=star.headers).status_code == 404
    assert api.get(f"{V1}/users/{star.id}/following").status_code == 401


def test_saved_videos_page_and_hide_what_the_saver_may_not_see(api: TestClient) -> None:
    ann, bob = make_account(api, "ann"), make_account(api, "bob")
    api.post(f"{V1}/users/{ann.id}/follow", headers=bob.headers)
    videos = [make_video(api, ann) for _ in range(4)]
    followers_only = make_video(api, ann, Visibility.FOLLOWERS)
    for v in [*videos, followers_only]:
        assert api.post(f"{V1}/videos/{v}/save", headers=bob.headers).status_code == 200
    items = _all_pages(api, bob, "users/me/saved", "videos", 2)
    assert [i["video_id"] for i in items] == [followers_only, *reversed(videos)]
    item = items[0]
    assert item["user"] == {"user_id": ann.id, "username": "ann", "display_name": "ann",
                            "profile_image_url": None, "verified": False}
    # A ready video without a stored ladder (this row never went through the transcoder) has
    # no playback URLs rather than URLs that 404 (the media tests cover videos with media).
    assert item["video_urls"] == {"hls": None} and item["thumbnail_url"] is None
    assert item["duration"] == 15.0 and item["title"] == "a video"
    assert item["stats"] == {"views": 0, "likes": 0, "comments": 0, "shares": 0}
    assert item["saved_at"]

    assert api.get(f"{V1}/users/me/saved", headers=ann.headers).json()["videos"] == []
    api.delete(f"{V1}/videos/{videos[0]}/save", headers=bob.headers)
    api.delete(f"{V1}/users/{ann.id}/follow", headers=bob.headers)
    items = _all_pages(api, bob, "users/me/saved", "videos", 10)
    assert [i["video_id"] for i in items] == list(reversed(videos[1:]))
    api.post(f"{V1}/users/{ann.id}/block", headers=bob.headers)
    assert api.get(f"{V1}/users/me/saved", headers=bob.headers).json()["videos"] == []


def test_a_profiles_videos_page_by_who_may_see_them(api: TestClient) -> None:
    ann, bob, eve = make_account(api, "ann"), make_account(api, "bob"), make_account(api, "eve")
    public = [make_video(api, ann) for _ in range(3)]
    followers_only = make_video(api, ann, Visibility.FOLLOWERS)
    private = make_video(api, ann, Visibility.PRIVATE)
    make_video(api, ann, status=VideoStatus.REMOVED)  # deleted by its owner: in no grid
    api.post(f"{V1}/users/{ann.id}/follow", headers=bob.headers)

    def ids(who: Account, page_size: int = 2) -> list[int]:
        return [i["video_id"] for i in _all_pages(api, who, f"users/{ann.id}/videos", "videos",
                                                  page_size)]

    newest_first = list(reversed([*public, followers_only, private]))
    assert ids(ann) == newest_first, "the owner sees every video of theirs but removed ones"
    assert ids(bob) == [followers_only, *reversed(public)], "a follower: no private ones"
    assert ids(eve, 1) == list(reversed(public)), "anyone else: public ones only"
    item = api.get(f"{V1}/users/{ann.id}/videos", headers=ann.headers).json()["videos"][0]
    assert item["video_id"] == private and item["visibility"] == "private"
    assert item["status"] == "ready" and item["user"]["username"] == "ann"
    assert item["video_urls"] == {"hls": None}

    api.post(f"{V1}/users/{eve.id}/block", headers=ann.headers)
    assert ids(eve) == [], "nothing across a block"
    assert api.get(f"{V1}/users/999999/videos", headers=eve.headers).status_code == 404
    assert api.get(f"{V1}/users/{ann.id}/videos").status_code == 401
    r = api.get(f"{V1}/users/{ann.id}/videos", headers=eve.headers, params={"cursor": "x"})
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "cursor"


def test_cursors_of_rows_with_id_zero() -> None:
    """A loaded data set's user and video ids start at 0: the last row of a page may be 0."""
    from datetime import UTC, datetime

    at = datetime(2026, 5, 17, tzinfo=UTC)
    assert parse_cursor(encode_cursor(at, 0)) == (at, 0)
