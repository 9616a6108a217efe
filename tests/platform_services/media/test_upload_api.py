"""The upload API through the real app, on the local blob store and on S3 (moto)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlencode, urlsplit

from fastapi.testclient import TestClient

from core.config import Settings
from platform_services.media.models import VideoMedia
from platform_services.storage.models import Follow, Moderation, Video, VideoStatus
from tests.platform_services.media.conftest import http, outbox, upload
from tests.serving.conftest import signup


def _set(client: TestClient, video_id: int, **values) -> None:
    with client.app.state.runtime.sessions.begin() as s:
        video = s.get(Video, video_id)
        for k, v in values.items():
            setattr(video, k, v)


def test_upload_validates_and_needs_a_token(api: TestClient) -> None:
    headers = signup(api, "ana")
    assert api.post("/api/v1/videos/upload", json={"title": "x"}).status_code == 401
    bad = {"title": "", "visibility": "secret", "tags": ["ok", "no spaces"],
           "location": {"latitude": 91, "longitude": 0}, "music_id": "x" * 65, "extra": 1}
    r = api.post("/api/v1/videos/upload", json=bad, headers=headers)
    assert r.status_code == 422
    fields = {f["field"] for f in r.json()["error"]["fields"]}
    assert {"title", "visibility", "tags.1", "location.latitude", "music_id", "extra"} <= fields
    r = api.post("/api/v1/videos/upload", json={"title": "t", "content_type": "text/plain"},
                 headers=headers)
    assert r.status_code == 415 and "content_type" in r.json()["error"]["message"]
    # World video ids start at 0, so 0 is a valid id (absent here: 404); a negative one is not.
    assert api.get("/api/v1/videos/-1", headers=headers).status_code == 422
    assert api.get("/api/v1/videos/0", headers=headers).status_code == 404


def test_upload_complete_emits_video_uploaded_once(api: TestClient) -> None:
    headers = signup(api, "ben")
    r = api.post("/api/v1/videos/upload", headers=headers, json={
        "title": "First", "description": "d", "tags": ["cats", "fun"], "category": "pets",
        "visibility": "public", "location": {"latitude": 1.5, "longitude": 2.5, "city": "X"},
        "music_id": "m-1"})
    ticket = r.json()
    assert r.status_code == 201 and ticket["expires_in"] > 0 and ticket["upload_url"]
    vid = ticket["video_id"]
    r = api.post(f"/api/v1/videos/{vid}/complete", headers=headers)
    assert r.status_code == 409 and "PUT the file" in r.json()["error"]["message"]
    put = http(api, "PUT", ticket["upload_url"], content=b"\x00" * 1000,
               headers={"Content-Type": "video/mp4"})
    assert put.status_code == 200
    assert api.post(f"/api/v1/videos/{vid}/complete", headers=headers).status_code == 202
    assert api.post(f"/api/v1/videos/{vid}/complete", headers=headers).status_code == 409
    events = outbox(api, "video.uploaded")
    assert len(events) == 1 and events[0].video_id == vid and events[0].size_bytes == 1000
    got = api.get(f"/api/v1/videos/{vid}", headers=headers).json()
    assert got["status"] == "processing" and got["tags"] == ["cats", "fun"]
    assert got["video_urls"]["hls"] is None and got["moderation"] == "pending"
    other = signup(api, "cat")
    assert api.get(f"/api/v1/videos/{vid}", headers=other).status_code == 404
    assert api.post(f"/api/v1/videos/{vid}/complete", headers=other).status_code == 404


def test_tampered_or_expired_upload_urls_are_refused(api: TestClient,
                                                     media_settings: Settings) -> None:
    headers = signup(api, "dan")
    ticket = api.post("/api/v1/videos/upload", json={"title": "t"}, headers=headers).json()
    url = urlsplit(ticket["upload_url"])
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    if media_settings.blob_url.startswith("s3://"):
        # moto's server does not check SigV4 signatures (S3 does): check what we ask S3 for.
        assert query["X-Amz-Expires"] == str(media_settings.upload_url_ttl_s)
        assert "content-type" in query["X-Amz-SignedHeaders"]
        return
    for name, value in (("sig", "0" * 64), ("exp", "9999999999"), ("op", "get")):
        if name in query:
            forged = url._replace(query=urlencode({**query, name: value})).geturl()
            r = http(api, "PUT", forged, content=b"x", headers={"Content-Type": "video/mp4"})
            assert r.status_code == 403, (name, r.status_code)
    blobs = api.app.state.blobs
    key = f"uploads/{ticket['video_id']}/source"
    expired = blobs.presign_put(key, -5, "video/mp4")
    r = http(api, "PUT", expired, content=b"x", headers={"Content-Type": "video/mp4"})
    assert r.status_code == 403
    r = http(api, "PUT", ticket["upload_url"], content=b"x", headers={"Content-Type": "text/x"})
    assert r.status_code == 403, "the URL is signed for its content type"
    assert not blobs.exists(key)


def test_over_limit_upload_fails_and_leaves_nothing(api: TestClient,
                                                    media_settings: Settings) -> None:
    headers = signup(api, "eve")
    limit = media_settings.upload_max_bytes
    api.app.state.runtime.settings = media_settings.model_copy(update={"upload_max_bytes": 100})
    ticket = api.post("/api/v1/videos/upload", json={"title": "big"}, headers=headers).json()
    vid, key = ticket["video_id"], f"uploads/{ticket['video_id']}/source"
    r = http(api, "PUT", ticket["upload_url"], content=b"x" * 200,
             headers={"Content-Type": "video/mp4"})
    if r.status_code == 200:  # S3 cannot cap a pre-signed PUT: completion catches it
        r = api.post(f"/api/v1/videos/{vid}/complete", headers=headers)
        assert r.status_code == 413 and "limit is 100" in r.json()["error"]["message"]
        got = api.get(f"/api/v1/videos/{vid}", headers=headers).json()
        assert got["status"] == "failed" and "limit" in got["failure_reason"]
        assert [e.status for e in outbox(api, "video.processed")] == ["failed"]
    else:
        assert limit > 100 and r.status_code == 413
    assert not api.app.state.blobs.exists(key)


def test_visibility_never_leaks(api: TestClient) -> None:
    owner, fan, stranger = signup(api, "own"), signup(api, "fan"), signup(api, "str")
    ids = {v: upload(api, owner, b"x", visibility=v) for v in ("public", "followers", "private")}
    for vid in ids.values():
        _set(api, vid, status=VideoStatus.READY, moderation=Moderation.APPROVED)
    with api.app.state.runtime.sessions.begin() as s:
        s.add(Follow(follower_id=2, followee_id=1))
    seen = {(who, v): api.get(f"/api/v1/videos/{vid}", headers=h).status_code
            for who, h in (("owner", owner), ("fan", fan), ("stranger", stranger))
            for v, vid in ids.items()}
    assert seen == {
        ("owner", "public"): 200, ("owner", "followers"): 200, ("owner", "private"): 200,
        ("fan", "public"): 200, ("fan", "followers"): 200, ("fan", "private"): 404,
        ("stranger", "public"): 200, ("stranger", "followers"): 404, ("stranger", "private"): 404,
    }
    _set(api, ids["public"], moderation=Moderation.BLOCKED)
    assert api.get(f"/api/v1/videos/{ids['public']}", headers=stranger).status_code == 404
    body = api.get(f"/api/v1/videos/{ids['public']}", headers=owner).json()
    assert body["moderation"] == "blocked" and body["user"]["username"] == "own"


def test_owner_deletes_video_and_its_renditions(api: TestClient) -> None:
    owner, other = signup(api, "del"), signup(api, "oth")
    vid = upload(api, owner, b"source bytes")
    blobs = api.app.state.blobs
    for name in ("hls/master.m3u8", "hls/360p/seg_00000.ts", "poster.jpg", "thumbnail.jpg"):
        blobs.put(f"videos/{vid}/{name}", b"r")
    with api.app.state.runtime.sessions.begin() as s:
        s.get(VideoMedia, vid).media_prefix = f"videos/{vid}/"
    assert api.delete(f"/api/v1/videos/{vid}", headers=other).status_code == 404
    r = api.delete(f"/api/v1/videos/{vid}", headers=owner)
    assert r.status_code == 200 and r.json()["success"] is True
    assert [e.video_id for e in outbox(api, "video.deleted")] == [vid]
    assert blobs.list(f"videos/{vid}/") == [] and blobs.list(f"uploads/{vid}/") == []
    assert api.get(f"/api/v1/videos/{vid}", headers=owner).status_code == 404
    assert api.delete(f"/api/v1/videos/{vid}", headers=owner).status_code == 404
