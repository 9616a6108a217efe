"""Security probes, systematic over the OpenAPI spec so that a new route is probed too.

- Auth bypass: every operation that declares a bearer token, called with no token, garbage,
  an expired token, a wrong signature, ``alg: none``, a tampered ``sub`` (payload swapped under
  the original signature), a token without ``exp``, and a deleted account's token: 401 each.
- IDOR: every state-changing operation with a path id, called by a stranger on someone else's
  user / video / comment: 403 or 404, and nothing changed, unless the route is listed in
  ``ACTS_ON_OTHERS`` (acting on others' things is its point: like, follow, report...), so a new
  owner-only route without a check fails here. (``tests/serving/social/test_security_rules.py``
  tries the routes that document a 403 with their 403; this covers the 404-hiding ones too.)
- Leakage: a followers-only, a private and a still-processing video stay out of the for-you,
  following and trending feeds, search, and the video page for those who may not see them,
  also when they were public when fanned out / indexed / counted in trending and changed after.
  (Counts, threads, replies and saved lists: ``test_security_rules.py``.)
- Rate limits: once a user's quota is spent, every operation with a token answers 429 with
  ``Retry-After``; the per-IP limit holds on routes without a token; the for-you limit.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
from fastapi.testclient import TestClient

from core.clock import utcnow
from core.config import Settings, get_settings
from platform_services import trending
from platform_services.auth import issue_token
from platform_services.search.documents import reindex
from platform_services.storage.cache import redis_client
from platform_services.storage.db import migrate
from platform_services.storage.models import Video, VideoStatus, Visibility
from platform_services.storage.social_models import Comment
from serving.app import create_app
from tests.reliability.conftest import embedded_settings
from tests.serving.social.conftest import PASSWORD, Account, make_account, make_video

V1 = "/api/v1"
# State-changing routes whose point is to act on someone else's thing (the caller's own like,
# follow, block, comment, report, share or watch event is what they create).
ACTS_ON_OTHERS = {
    ("post", "/api/v1/users/{user_id}/follow"), ("delete", "/api/v1/users/{user_id}/follow"),
    ("post", "/api/v1/users/{user_id}/block"), ("delete", "/api/v1/users/{user_id}/block"),
    ("post", "/api/v1/videos/{video_id}/like"), ("delete", "/api/v1/videos/{video_id}/like"),
    ("post", "/api/v1/videos/{video_id}/save"), ("delete", "/api/v1/videos/{video_id}/save"),
    ("post", "/api/v1/videos/{video_id}/share"), ("post", "/api/v1/videos/{video_id}/comments"),
}
# Plausible bodies, so that a refusal is the ownership check, not body validation.
BODIES = {
    ("patch", "/api/v1/users/{user_id}"): {"bio": "pwned"},
    ("delete", "/api/v1/users/{user_id}"): {"password": PASSWORD},
    ("put", "/api/v1/users/{user_id}/verified"): {"verified": True},
    ("put", "/api/v1/users/{user_id}/role"): {"role": "admin"},
    ("patch", "/api/v1/comments/{comment_id}"): {"content": "pwned"},
    ("post", "/api/v1/moderation/videos/{video_id}"): {"action": "reject", "reason": "pwned"},
    ("post", "/api/v1/videos/{video_id}/share"): {},
    ("post", "/api/v1/videos/{video_id}/comments"): {"content": "hi"},
}
MUTATING = ("post", "put", "patch", "delete")
CATALOG_WAIT_S = 1.0  # five refreshes of the feed's catalog (``catalog_refresh_s`` 0.2)


@pytest.fixture(scope="module")
def api(module_root: Path) -> Iterator[TestClient]:
    """One API for the module, with its feed (no trained model: the fallback path a fresh
    deployment serves) and following feeds pulled at read time (a creator with a follower
    counts as big); each test makes its own accounts."""
    with embedded_settings(module_root, following_push_max_followers="1",
                           rate_limit_login="100000/minute",
                           rate_limit_signup="100000/minute") as st:
        migrate(st.database_url)
        local = st.model_copy(update={"ranker_backend": "local", "catalog_refresh_s": 0.2})
        with TestClient(create_app(local)) as c:
            yield c


def _secured(api: TestClient) -> list[tuple[str, str, dict]]:
    """(method, path template, operation) of every operation that declares a bearer token."""
    spec = api.get("/openapi.json").json()["paths"]
    return [(m, p, op) for p, ops in spec.items() for m, op in ops.items() if op.get("security")]


def _fill(path: str, ids: dict[str, object]) -> str:
    return re.sub(r"\{(\w+)(:path)?\}", lambda m: str(ids.get(m.group(1), 1)), path)


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _bad_tokens(settings: Settings, victim: int, attacker_token: str, deleted: str) -> dict:
    secret = settings.jwt_secret.get_secret_value()
    now = int(time.time())
    header, _, sig = attacker_token.split(".")
    return {
        "none": None,
        "garbage": "not.a.jwt",
        "expired": jwt.encode({"sub": str(victim), "exp": now - 1}, secret, "HS256"),
        "wrong signature": jwt.encode({"sub": str(victim), "exp": now + 60},
                                      "another-secret-of-at-least-32-bytes!!", "HS256"),
        "alg none": jwt.encode({"sub": str(victim), "exp": now + 60}, None, algorithm="none"),
        "sub tampered": f"{header}.{_b64({'sub': str(victim), 'exp': now + 600})}.{sig}",
        "no exp": jwt.encode({"sub": str(victim)}, secret, "HS256"),
        "deleted account": deleted,
    }


def test_every_secured_route_refuses_every_bad_token(api: TestClient) -> None:
    settings = api.app.state.runtime.settings
    ann, eve, gone = (make_account(api, n) for n in ("ann", "eve", "gone"))
    deleted = gone.headers["Authorization"].split()[1]
    r = api.request("DELETE", f"{V1}/users/me", headers=gone.headers, json={"password": PASSWORD})
    assert r.status_code == 204
    tokens = _bad_tokens(settings, ann.id, eve.headers["Authorization"].split()[1], deleted)
    secured = _secured(api)
    assert len(secured) > 40
    leaks = []
    for method, path, _ in secured:
        url = _fill(path, {"user_id": ann.id, "name": "any"})
        for kind, token in tokens.items():
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            r = api.request(method.upper(), url, headers=headers, json={})
            if r.status_code != 401 or r.json()["error"]["code"] != "unauthorized" \
                    or "bearer" not in r.headers.get("www-authenticate", "").lower():
                leaks.append((kind, method, path, r.status_code))
    assert not leaks, '\n'.join(map(str, leaks))
    assert api.get(f"{V1}/users/me", headers=ann.headers).json()["bio"] == ""


def test_no_stranger_changes_what_is_not_theirs(api: TestClient) -> None:
    ann, eve = make_account(api, "owner"), make_account(api, "intruder")
    video = make_video(api, ann)
    r = api.post(f"{V1}/videos/{video}/comments", headers=ann.headers, json={"content": "mine"})
    comment = r.json()["comment_id"]
    ids = {"user_id": ann.id, "video_id": video, "comment_id": comment, "name": "any"}
    checked, unlisted = [], []
    for method, path, _ in _secured(api):
        if method not in MUTATING or "{" not in path or (method, path) in ACTS_ON_OTHERS:
            continue
        body = BODIES.get((method, path), {})
        r = api.request(method.upper(), _fill(path, ids), headers=eve.headers, json=body)
        checked.append((method, path))
        if r.status_code not in (403, 404):
            unlisted.append((method, path, r.status_code, r.text[:200]))
    assert not unlisted, "owner-only routes a stranger got through: " + repr(unlisted)
    assert ("delete", "/api/v1/videos/{video_id}") in checked  # the 404-hiding ones included
    assert ("post", "/api/v1/videos/{video_id}/complete") in checked
    # Nothing changed.
    with api.app.state.runtime.sessions() as s:
        v = s.get(Video, video)
        assert v is not None and v.status == VideoStatus.READY
        c = s.get(Comment, comment)
        assert c.body == "mine" and c.deleted_at is None
    me = api.get(f"{V1}/users/me", headers=ann.headers).json()
    assert me["bio"] == "" and me["role"] == "user" and not me["verified"]


# --- leakage across the feeds and search -----------------------------------------------------


def _seen(api: TestClient, who: Account, videos: set[int]) -> dict[str, set[int]]:
    def ids(path: str, **params: object) -> set[int]:
        r = api.get(f"{V1}/{path}", headers=who.headers, params=params)
        assert r.status_code == 200, (path, r.text)
        return {v["video_id"] for v in r.json()["videos"]}

    with api.app.state.runtime.sessions() as s:
        owners = {s.get(Video, v).owner_id for v in videos}
    return {"profile": set().union(*(ids(f"users/{o}/videos", page_size=50) for o in owners)),
            "for-you": ids("feed/for-you", page_size=50),
            "following": ids("feed/following", page_size=50),
            "trending": ids("feed/trending", page_size=50),
            "search": ids("search/videos", q=who.username.split("_")[-1]),
            "page": {v for v in videos
                     if api.get(f"{V1}/videos/{v}", headers=who.headers).status_code == 200}}


def _hide_after_indexing(api: TestClient, name: str) -> dict:
    """``name``'s four videos, all public when indexed for search and counted in trending,
    then one made followers-only, one private, one processing again; a follower and a
    stranger."""
    ann, fan, stranger = (make_account(api, n) for n in (name, f"fan_{name}",
                                                          f"stranger_{name}"))
    assert api.post(f"{V1}/users/{ann.id}/follow", headers=fan.headers).status_code == 200
    public, followers, private, processing = (make_video(api, ann) for _ in range(4))
    all_four = {public, followers, private, processing}
    rt = api.app.state.runtime
    with rt.sessions.begin() as s:
        for v in (public, followers, private, processing):
            s.get(Video, v).title = f"{name} leak test video {v}"
    # All four were public when indexed and counted in trending ...
    reindex(rt.sessions, None)
    r = redis_client(rt.settings.redis_url)
    now_ms = int(utcnow().timestamp() * 1000)
    trending.add_counts(r, [trending.Hit(now_ms, v, None, None, 50.0)
                            for v in (public, followers, private, processing)])
    time.sleep(CATALOG_WAIT_S)  # the feed's catalog has them all
    # ... then changed: the read paths must check, not trust what was computed before (the
    # feed's catalog follows the database within ``catalog_refresh_s``).
    with rt.sessions.begin() as s:
        s.get(Video, followers).visibility = Visibility.FOLLOWERS
        s.get(Video, private).visibility = Visibility.PRIVATE
        s.get(Video, processing).status = VideoStatus.PROCESSING
    time.sleep(CATALOG_WAIT_S)
    return {stranger.username: (stranger, {followers, private, processing}),
            fan.username: (fan, {private, processing}), "public": public,
            "followers": followers, "fan": fan, "all": all_four}


def test_hidden_videos_do_not_leak_through_feeds_or_pages(api: TestClient) -> None:
    world = _hide_after_indexing(api, "lea")
    for who, hidden in (world["stranger_lea"], world["fan_lea"]):
        seen = _seen(api, who, world["all"])
        seen.pop("search")  # below
        leaked = {where: ids & hidden for where, ids in seen.items() if ids & hidden}
        assert not leaked, (who.username, leaked)
        assert world["public"] in seen["trending"] and world["public"] in seen["page"]
        assert world["public"] in seen["profile"]
    fan = _seen(api, world["fan"], world["all"])
    assert world["followers"] in fan["following"], "a follower sees followers-only videos"
    assert world["followers"] in fan["profile"]


def test_hidden_videos_do_not_leak_through_search(api: TestClient) -> None:
    world = _hide_after_indexing(api, "sam")
    who, hidden = world["stranger_sam"]
    found = _seen(api, who, world["all"])["search"]
    assert world["public"] in found and not found & hidden, found


# --- rate limits -----------------------------------------------------------------------------


@pytest.fixture
def limited(settings: Settings, clean_env: pytest.MonkeyPatch) -> Iterator[TestClient]:
    for name, value in {"rate_limit_user": "30/minute", "rate_limit_ip": "100/minute",
                        "rate_limit_for_you": "3/minute"}.items():
        clean_env.setenv(f"REELRANK_{name.upper()}", value)
    get_settings.cache_clear()
    st = get_settings()
    migrate(st.database_url)
    with TestClient(create_app(st, feed_services=False)) as c:
        yield c


def _is_429(r: object) -> bool:
    return r.status_code == 429 and int(r.headers.get("Retry-After", "0")) >= 1 \
        and r.json()["error"]["code"] == "rate_limited"


def test_rate_limits_hold_on_every_route(limited: TestClient) -> None:
    api = limited
    settings = api.app.state.runtime.settings
    ann = make_account(api, "ann")
    for_you = [api.get(f"{V1}/feed/for-you", headers=ann.headers) for _ in range(4)]
    assert [r.status_code for r in for_you[:3]] == [503] * 3, "no feed here: 503 until limited"

    assert _is_429(for_you[3]), "the for-you limit is checked before the feed"
    spender = {"Authorization": f"Bearer {issue_token(settings, ann.id)}"}
    while api.get(f"{V1}/users/me", headers=spender).status_code != 429:
        pass
    not_limited = []
    for method, path, _ in _secured(api):
        r = api.request(method.upper(), _fill(path, {"user_id": ann.id, "name": "any"}),
                        headers=spender, json={})
        if not _is_429(r):
            not_limited.append((method, path, r.status_code))
    assert not not_limited, not_limited
    # Without a token, the per-IP limit (100/minute, some of it spent above) still holds.
    answers = [api.get("/healthz").status_code for _ in range(100)]
    assert answers[-1] == 429 and _is_429(api.get("/healthz"))
    # So does what is served outside the API's routes: the player's files, metrics, the docs.
    for path in ("/web/", "/web/js/app.js", "/metrics", "/docs", "/redoc", "/openapi.json"):
        assert _is_429(api.get(path)), path
