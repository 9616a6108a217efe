"""``/search/videos`` and ``/search/users`` over HTTP, the index kept by the ``search``
worker's handler from real events, and every kind of bad input answered 4xx naming the field."""

from __future__ import annotations

import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from candidate_gen import search_indexer
from core.clock import utcnow
from core.config import Settings
from core.events import VideoDeleted, VideoModerated, VideoProcessed
from platform_services.auth import issue_token
from platform_services.bus.worker import Worker
from platform_services.media.models import VideoMedia
from platform_services.storage.db import migrate
from platform_services.storage.models import Moderation, User, Video, VideoStatus
from serving.app import create_app

VIDEOS = "/api/v1/search/videos"
LADDERED = "funny cat jumps off the sofa"


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    migrate(settings.database_url)
    with TestClient(create_app(settings, feed_services=False)) as c:
        yield c


def setup_world(client: TestClient) -> tuple[int, dict[str, int]]:
    rt = client.app.state.runtime
    titles = ["funny cat jumps off the sofa", "hilarious kitten compilation",
              "kitten naps in the sun", "mountain bike downhill run", "cat held for review"]
    with rt.sessions.begin() as s:
        viewer = User(username="viewer", email="v@x.io", password_hash="x")
        maker = User(username="maker", email="m@x.io", password_hash="x",
                     display_name="Clip Maker")
        s.add_all([viewer, maker])
        s.flush()
        ids = {}
        for t in titles:
            v = Video(owner_id=maker.id, title=t, status=VideoStatus.READY, duration_ms=9_000,
                      moderation=Moderation.NEEDS_REVIEW if "review" in t
                      else Moderation.APPROVED)
            s.add(v)
            s.flush()
            ids[t] = v.id
        # The one video with a stored ladder (what the transcoder leaves); the others were
        # never transcoded, so they have nothing to play.
        laddered = ids[LADDERED]
        s.add(VideoMedia(video_id=laddered, content_type="video/mp4",
                         source_key=f"uploads/{laddered}/source", upload_expires_at=utcnow(),
                         media_prefix=f"videos/{laddered}/", renditions=[{"name": "360p"}]))
    blobs = client.app.state.blobs
    blobs.put(f"videos/{laddered}/hls/master.m3u8", b"#EXTM3U\n360p/index.m3u8\n",
              "application/x-mpegURL")
    blobs.put(f"videos/{laddered}/thumbnail.jpg", b"\xff\xd8 thumb", "image/jpeg")
    events = [VideoProcessed(video_id=v, owner_id=maker.id, status="ready")
              for v in ids.values()]
    worker = Worker(search_indexer.GROUP, search_indexer.TOPICS, search_indexer.handle,
                    rt.bus, rt.sessions)
    worker._apply(events)
    return viewer.id, ids


def wait_semantic(client: TestClient, headers: dict) -> None:
    client.get(VIDEOS, headers=headers, params={"q": "warm up"})
    engine = client.app.state.search_engine
    # Not the loading thread's end: it goes on keeping the index fresh until shutdown.
    assert engine.ready.wait(120)
    assert engine.search.encode is not None


def test_search_videos_and_users(client: TestClient, settings: Settings) -> None:
    viewer, ids = setup_world(client)
    h = {"Authorization": f"Bearer {issue_token(settings, viewer)}"}
    wait_semantic(client, h)
    r = client.get(VIDEOS, headers=h, params={"q": "funny kitten"})
    assert r.status_code == 200, r.text
    body = r.json()
    found = [v["title"] for v in body["videos"]]
    assert {"funny cat jumps off the sofa", "hilarious kitten compilation",
            "kitten naps in the sun"} <= set(found)
    assert "cat held for review" not in found and "mountain bike downhill run" not in found
    assert body["total_results"] == len(found) and "X-Reelrank-Degraded" not in r.headers
    assert body["total_results_exact"] is True
    # The shared video card: playback URLs that play for the video with a ladder, none for
    # the others (never a URL to nothing), the creator as every other route shows them.
    by_title = {v["title"]: v for v in body["videos"]}
    item = by_title[LADDERED]
    assert item["user"]["username"] == "maker" and item["user"]["display_name"] == "Clip Maker"
    assert set(item["video_urls"]) == {"hls", "360p"}
    master = urlsplit(item["video_urls"]["hls"])
    r = client.get(master.path)
    assert r.status_code == 200 and r.text.startswith("#EXTM3U")
    thumb = urlsplit(item["thumbnail_url"])
    assert client.get(f"{thumb.path}?{thumb.query}").content == b"\xff\xd8 thumb"
    for title in ("hilarious kitten compilation", "kitten naps in the sun"):
        assert by_title[title]["video_urls"] == {"hls": None}
        assert by_title[title]["thumbnail_url"] is None
    assert item["duration"] == 9.0 and set(item["stats"]) == {"views", "likes", "comments",
                                                              "shares"}
    # Pages of one: the same list, no repeats, the cursor ends it.
    paged, cursor = [], None
    while True:
        r = client.get(VIDEOS, headers=h, params={"q": "funny kitten", "page_size": 1}
                       | ({"cursor": cursor} if cursor else {}))
        paged += [v["title"] for v in r.json()["videos"]]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
    assert paged == found

    # Events keep the index: a moderator's approval adds, a deletion removes.
    rt = client.app.state.runtime
    with rt.sessions.begin() as s:
        s.get(Video, ids["cat held for review"]).moderation = Moderation.APPROVED
        s.get(Video, ids["kitten naps in the sun"]).status = VideoStatus.REMOVED
    owner = 2
    Worker(search_indexer.GROUP, search_indexer.TOPICS, search_indexer.handle, rt.bus,
           rt.sessions)._apply([
               VideoModerated(video_id=ids["cat held for review"], owner_id=owner,
                              moderation="approved"),
               VideoDeleted(video_id=ids["kitten naps in the sun"], owner_id=owner)])
    time.sleep(settings.search_refresh_s)
    found = [v["title"] for v in client.get(VIDEOS, headers=h, params={"q": "cat"})
             .json()["videos"]]
    assert "cat held for review" in found and "kitten naps in the sun" not in found

    r = client.get("/api/v1/search/users", headers=h, params={"q": "cli"})
    assert r.status_code == 200 and [u["username"] for u in r.json()["users"]] == ["maker"]


def test_bad_input_is_4xx_naming_the_field(client: TestClient, settings: Settings) -> None:
    viewer, _ = setup_world(client)
    h = {"Authorization": f"Bearer {issue_token(settings, viewer)}"}
    assert client.get(VIDEOS, params={"q": "cat"}).status_code == 401
    cases = {
        "q": [{}, {"q": ""}, {"q": "x" * 10_000}, {"q": "  "}, {"q": "?!"}],
        "sort": [{"q": "cat", "sort": "best"}],
        "duration": [{"q": "cat", "duration": "epic"}],
        "page_size": [{"q": "cat", "page_size": 0}, {"q": "cat", "page_size": 500}],
        "category": [{"q": "cat", "category": "a b;--"}],
        "cursor": [{"q": "cat", "cursor": "x" * 600}],
    }
    for field, params_list in cases.items():
        for params in params_list:
            for path in (VIDEOS, "/api/v1/search/users"):
                if path != VIDEOS and field in ("sort", "duration", "category"):
                    continue
                r = client.get(path, headers=h, params=params)
                assert r.status_code == 422, (path, params, r.text)
                assert r.json()["error"]["fields"][0]["field"] == field, (path, params)
    first = client.get(VIDEOS, headers=h, params={"q": "kitten cat", "page_size": 1}).json()
    assert first["next_cursor"]
    for bad in ("abc", "a.b", first["next_cursor"][:-2] + "zz"):
        r = client.get(VIDEOS, headers=h, params={"q": "kitten cat", "cursor": bad})
        assert r.status_code == 400 and "cursor" in r.json()["error"]["message"]
    r = client.get(VIDEOS, headers=h, params={"q": "other", "cursor": first["next_cursor"]})
    assert r.status_code == 400 and "another query" in r.json()["error"]["message"]
    other = {"Authorization": f"Bearer {issue_token(settings, 2)}"}
    r = client.get(VIDEOS, headers=other, params={"q": "kitten cat",
                                                  "cursor": first["next_cursor"]})
    assert r.status_code == 400
