"""The first-page cache of comment threads (``platform_services.comment_cache``) on SQLite and
PostgreSQL: every write is visible on the next read, blocks and visibility still apply, and
the bytes served equal what pydantic would write for ``CommentPage``."""

from __future__ import annotations

import asyncio
import secrets

import orjson
import pytest
from fastapi.testclient import TestClient

from core.clock import now_ms
from platform_services import comment_cache
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


# --- threads after a cursor (``t{replies}:{root_id}`` fields) --------------------------------


def _page(api: TestClient, who, video: int, query: str) -> list[dict]:  # noqa: ANN001
    r = api.get(f"{V1}/videos/{video}/comments{query}", headers=who.headers)
    assert r.status_code == 200, r.text
    return r.json()["comments"]


def _plant(api: TestClient, video: int, root: int, old: bytes, new: bytes) -> None:
    """Rewrite a cached thread in place (same version and time): what the API serves next
    shows whether it came from the cache."""
    key, field = f"comment_pages:{video}", f"t50:{root}"
    client = api.app.state.comment_pages.client
    stored = api.portal.call(client.hget, key, field)
    assert old in stored
    api.portal.call(client.hset, key, field, stored.replace(old, new))


def test_threads_after_a_cursor_come_from_the_cache_until_any_write(api: TestClient) -> None:
    ann, bob = make_account(api, "ann"), make_account(api, "bob")
    video = make_video(api, ann)
    old = post_comment(api, ann, video, "old")
    newest = post_comment(api, ann, video, "newest")
    after = f"?page_size=1&cursor={newest}"  # the page holding only the thread of ``old``
    made: dict[str, int] = {}

    def reply() -> None:
        made["reply"] = post_comment(api, bob, video, "a reply", old)

    def edit() -> None:
        assert api.patch(f"{V1}/comments/{made['reply']}", json={"content": "edited"},
                         headers=bob.headers).status_code == 200

    def delete() -> None:
        assert api.delete(f"{V1}/comments/{made['reply']}",
                          headers=bob.headers).status_code == 204

    def delete_account() -> None:
        made["second"] = post_comment(api, bob, video, "again", old)
        _page(api, ann, video, after)
        _plant(api, video, old, b'"content":"old"', b'"content":"planted"')
        r = api.request("DELETE", f"{V1}/users/me", headers=bob.headers,
                        json={"password": PASSWORD})
        assert r.status_code == 204, r.text

    def elsewhere() -> None:  # a write to another thread of the video counts too
        post_comment(api, ann, video, "elsewhere", newest)

    writes = [(reply, lambda t: [r["content"] for r in t["replies"]] == ["a reply"]),
              (edit, lambda t: t["replies"][0]["content"] == "edited"),
              (elsewhere, lambda t: t["replies"][0]["content"] == "edited"),
              (delete, lambda t: t["replies"][0]["deleted"]),
              (delete_account, lambda t: t["replies"][1]["user"] is None)]
    for write, shows in writes:
        _page(api, ann, video, after)  # computed (or a hit), then stored
        _plant(api, video, old, b'"content":"old"', b'"content":"planted"')
        assert _page(api, ann, video, after)[0]["content"] == "planted", "from the cache"
        write()
        thread = _page(api, ann, video, after)[0]
        assert thread["content"] == "old", f"{write.__name__}: a stale thread was served"
        assert shows(thread), write.__name__


def test_a_blockers_threads_are_their_own_and_never_shared(api: TestClient) -> None:
    ann, bob, cyd = (make_account(api, n) for n in ("ann", "bob", "cyd"))
    video = make_video(api, ann)
    trolled = post_comment(api, ann, video, "trolled")
    post_comment(api, cyd, video, "troll", trolled)
    calm = post_comment(api, ann, video, "calm")
    top = post_comment(api, ann, video, "top")
    after = f"?cursor={top}"
    assert [len(t["replies"]) for t in _page(api, bob, video, after)] == [0, 1]  # stored
    _plant(api, video, calm, b'"content":"calm"', b'"content":"calm, cached"')
    _plant(api, video, trolled, b'"content":"trolled"', b'"content":"trolled, cached"')
    assert api.post(f"{V1}/users/{cyd.id}/block", headers=bob.headers).status_code in (200, 204)

    threads = _page(api, bob, video, after)
    assert [t["content"] for t in threads] == ["calm, cached", "trolled"], (
        "a thread without blocked authors is shared; the one with the troll is read for bob")
    assert threads[1]["replies"] == [], "the blocked author's reply stays hidden"
    mine = _page(api, bob, video, "")  # a first page: bob's, never the cached one
    assert [t["content"] for t in mine] == ["top", "calm, cached", "trolled"]
    assert [len(t["replies"]) for t in _page(api, ann, video, after)] == [0, 1], (
        "bob's reading of the thread was not stored for everyone")
    assert _page(api, ann, video, after)[1]["content"] == "trolled, cached"


def test_cursor_pages_put_together_are_the_documented_model(api: TestClient) -> None:
    ann, bob = make_account(api, "ann"), make_account(api, "bob")
    video = make_video(api, ann)
    root = post_comment(api, ann, video, "root 🎬 \"quoted\" \\ </script>")
    post_comment(api, bob, video, "reply", post_comment(api, bob, video, "mid", root))
    post_comment(api, bob, video, "short")
    newest = post_comment(api, bob, video, "newest")
    for query in (f"?cursor={newest}", f"?page_size=1&replies=1&cursor={newest}"):
        computed, cached = (api.get(f"{V1}/videos/{video}/comments{query}",
                                    headers=bob.headers).content for _ in range(2))
        assert computed == cached, "threads from the cache join into the same bytes"
        model = CommentPage.model_validate(orjson.loads(cached))
        assert cached == model.model_dump_json().encode(), "orjson writes what pydantic would"


def test_a_thread_is_served_only_under_its_version_and_within_the_ttl(
        redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    video = secrets.randbelow(10**9) + 10**9
    now = [now_ms()]
    monkeypatch.setattr(comment_cache, "now_ms", lambda: now[0])

    async def run() -> None:
        cache = PageCache.from_settings(redis_url, ttl_s=30)
        version, page = await cache.get(video, None)
        assert page is None
        assert await cache.client.hget(f"comment_pages:{video}", "v") == version, (
            "a version is set where there was none: threads expire with it")
        assert 0 < await cache.client.ttl(f"comment_pages:{video}") <= 30
        await cache.put_threads(video, 50, version, {1: b'{"a":1}', 2: b'{"b":2}'})
        assert await cache.threads(video, 50, version, [2, 3, 1]) == {
            1: b'{"a":1}', 2: b'{"b":2}'}
        assert await cache.threads(video, 10, version, [1]) == {}, "another reply count"
        now[0] += 29_000
        assert await cache.threads(video, 50, version, [1]) == {1: b'{"a":1}'}
        now[0] += 2_000
        assert await cache.threads(video, 50, version, [1]) == {}, "older than the ttl"
        await cache.put_threads(video, 50, version, {1: b'{"a":1}'})
        await cache.invalidate([video])
        fresh, _ = await cache.get(video, None)
        assert fresh != version
        assert await cache.threads(video, 50, fresh, [1]) == {}, "stale after a write"
        await cache.client.aclose()

    asyncio.run(run())
