"""The first-page cache of comment threads (``platform_services.comment_cache``) on SQLite and
PostgreSQL: every write is visible on the next read, blocks and visibility still apply, and
the bytes served equal what pydantic would write for ``CommentPage``."""

from __future__ import annotations

import asyncio

import orjson
from fastapi.testclient import TestClient

from platform_services.comment_cache import PageCache
from platform_services.storage.models import Visibility
from serving.routes.comments import CommentPage
from tests.serving.social.conftest import PASSWORD, make_account, make_video, post_comment

V1 = "/api/v1"



def _first_page(api: TestClient, who, video: int) -> list[dict]:  # noqa: ANN001
    r = api.get(f"{V1}/videos/{video}/comments", headers=who.headers)
    assert r.status_code == 200, r.text
    return r.json()["comments"]


def _cached_shapes(api: TestClient, video: int) -> dict[bytes, bytes]:
    cache = api.app.state.comment_pages
    return api.portal.call(cache.client.hgetall, f"comment_pages:{video}")


def test_every_write_shows_on_the_next_read(api: TestClient) -> None:
    ann, bob = make_account(api, "ann"), make_account(api, "bob")
    video = make_video(api, ann)
    first = post_comment(api, ann, video, "first")
    assert [t["content"] for t in _first_page(api, bob, video)] == ["first"]
    assert b"20:50" in _cached_shapes(api, video), "the first page was stored"
    assert [t["content"] for t in _first_page(api, ann, video)] == ["first"]  # a hit

    reply = post_comment(api, bob, video, "reply", first)
    threads = _first_page(api, ann, video)
    assert [r["content"] for r in threads[0]["replies"]] == ["reply"], "a new reply shows"
    second = post_comment(api, bob, video, "second")
    assert [t["comment_id"] for t in _first_page(api, ann, video)] == [second, first]

    assert api.patch(f"{V1}/comments/{reply}", json={"content": "edited"},
                     headers=bob.headers).status_code == 200
    assert _first_page(api, ann, video)[1]["replies"][0]["content"] == "edited"
    assert api.delete(f"{V1}/comments/{second}", headers=bob.headers).status_code == 204
    assert _first_page(api, ann, video)[0]["deleted"], "a delete shows at once"

    r = api.request("DELETE", f"{V1}/users/me", headers=bob.headers,
                    json={"password": PASSWORD})
    assert r.status_code == 204, r.text
    reply_now = _first_page(api, ann, video)[1]["replies"][0]
    assert reply_now["deleted"] and reply_now["user"] is None, "a deleted account's too"


def test_blocks_and_visibility_still_apply(api: TestClient) -> None:
    ann, bob, cyd = (make_account(api, n) for n in ("ann", "bob", "cyd"))
    video = make_video(api, ann)
    post_comment(api, cyd, video, "troll")
    post_comment(api, ann, video, "kind")
    assert len(_first_page(api, ann, video)) == 2  # now cached
    api.post(f"{V1}/users/{cyd.id}/block", headers=bob.headers)
    assert [t["content"] for t in _first_page(api, bob, video)] == ["kind"]
    assert len(_first_page(api, ann, video)) == 2, "the blocker's page is not the shared one"

    private = make_video(api, ann, Visibility.PRIVATE)
    post_comment(api, ann, private, "note to self")
    assert len(_first_page(api, ann, private)) == 1  # cached by its owner
    assert api.get(f"{V1}/videos/{private}/comments", headers=bob.headers).status_code == 404


def test_served_bytes_are_the_documented_model(api: TestClient) -> None:
    ann, bob = make_account(api, "ann"), make_account(api, "bob")
    video = make_video(api, ann)
    root = post_comment(api, ann, video, "root 🎬 \"quoted\" \\ </script>")
    post_comment(api, bob, video, "reply", post_comment(api, bob, video, "mid", root))
    api.delete(f"{V1}/comments/{root}", headers=ann.headers)
    for query in ("", "?page_size=1&replies=1"):
        raw = api.get(f"{V1}/videos/{video}/comments{query}", headers=bob.headers).content
        model = CommentPage.model_validate(orjson.loads(raw))
        assert raw == model.model_dump_json().encode(), "orjson writes what pydantic would"


def test_the_cache_fails_open_without_redis(tmp_path) -> None:  # noqa: ANN001
    async def run() -> object:
        cache = PageCache.from_settings(f"unix://{tmp_path}/no.sock", ttl_s=30)
        await cache.put(1, "20:50", b"0", b"{}")  # logged, not raised
        await cache.invalidate([1])
        return await cache.get(1, "20:50")

    assert asyncio.run(run()) is None, "no Redis: the page is read from the database"
