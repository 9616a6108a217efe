"""The web player (``/web/``) in a real headless Chromium against a live API: sign up, the
first card with its poster, real HLS playback, a swipe, a like that reaches the database and
the outbox, the view/watch events the page POSTs, search, comments, follow, upload with its
progress bar, the unread badge and the debug overlay."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import func, select

from candidate_gen.sources import SOURCES
from core.events import decode
from platform_services.bus.models import OutboxRow
from platform_services.notification_models import Notification
from platform_services.storage.db import make_engine, session_factory
from platform_services.storage.models import Follow, User, Video
from platform_services.storage.social_models import Comment, Like
from tests.serving.web.conftest import EXPERIMENT, LiveApi, make_clip

pytestmark = pytest.mark.timeout(300)
PASSWORD = "correct horse battery"


@pytest.fixture
def page(browser, live_api: LiveApi) -> Iterator[object]:  # noqa: ANN001
    """A fresh browser context (its own sessionStorage) on ``/web/``; console errors and
    every ``POST /api/v1/events`` (body and status) recorded on the page object."""
    context = browser.new_context(viewport={"width": 420, "height": 760})
    pg = context.new_page()
    pg.errors, pg.event_posts = [], []
    pg.on("pageerror", lambda exc: pg.errors.append(str(exc)))

    def on_response(response) -> None:  # noqa: ANN001
        req = response.request
        if req.method == "POST" and req.url.endswith("/api/v1/events"):
            pg.event_posts.append((response.status, json.loads(req.post_data or "{}")))

    pg.on("response", on_response)
    pg.goto(f"{live_api.url}/web/")
    try:
        yield pg
    finally:
        context.close()


def sessions(live_api: LiveApi):  # noqa: ANN201
    return session_factory(make_engine(live_api.settings.database_url))


def sign_up(pg, name: str) -> None:  # noqa: ANN001
    pg.click("[data-mode=signup]")
    pg.fill("input[name=username]", name)
    pg.fill("input[name=email]", f"{name}@example.com")
    pg.fill("input[name=password]", PASSWORD)
    pg.click("#auth-submit")
    pg.wait_for_selector("#feed-for-you .slide[data-index='0']", timeout=30_000)


def outbox(live_api: LiveApi) -> list:
    with sessions(live_api)() as s:
        return [decode(r.value) for r in s.scalars(select(OutboxRow).order_by(OutboxRow.id))]


def test_sign_up_play_swipe_like_and_events(page, live_api: LiveApi) -> None:  # noqa: ANN001
    name = f"web{uuid.uuid4().hex[:8]}"
    sign_up(page, name)
    first = page.locator(".slide[data-index='0']")
    # The poster is there first (a real image, loaded), then the HLS ladder really plays.
    poster = first.locator("img.poster")
    assert re.search(r"/blobs/videos/\d+/thumbnail\.jpg\?", poster.get_attribute("src"))
    page.wait_for_function("document.querySelector(\".slide[data-index='0'] img.poster\")"
                           ".naturalWidth > 0")
    page.wait_for_selector(".slide[data-index='0'].playing", timeout=20_000)
    played = page.evaluate("document.querySelector(\".slide[data-index='0'] video\").currentTime")
    assert played > 0
    # The next video is preloaded before the swipe: its player has buffered media.
    page.wait_for_function("document.querySelector(\".slide[data-index='1'] video\")"
                           ".readyState >= 2", timeout=20_000)
    page.wait_for_timeout(2200)  # long enough that leaving counts as a watch, not a skip
    page.locator("#feed-for-you").press("ArrowDown")
    page.wait_for_function("document.getElementById('feed-for-you').dataset.current === '1'")
    second = page.locator(".slide[data-index='1']")
    page.wait_for_selector(".slide[data-index='1'].playing", timeout=20_000)

    video_ids = [int(first.get_attribute("data-video-id")),
                 int(second.get_attribute("data-video-id"))]
    second.locator("button.like").click()
    page.wait_for_selector(".slide[data-index='1'] button.like[aria-pressed='true']")
    with sessions(live_api)() as s:
        user = s.scalar(select(User).where(User.username == name))
        assert s.scalar(select(Like).where(Like.user_id == user.id,
                                           Like.video_id == video_ids[1])) is not None
    likes = [e for e in outbox(live_api) if e.topic == "user.interaction"
             and e.user_id == user.id and e.action == "like"]
    assert [e.video_id for e in likes] == [video_ids[1]]

    # The page's telemetry: a view of each video with its list id and position, and the
    # first one's watch time when it left the screen, accepted by the API.
    page.evaluate("window.reelrank.events.flush()")
    page.wait_for_function("Number(document.body.dataset.eventsSent || 0) >= 3")
    assert page.event_posts and all(status == 202 for status, _ in page.event_posts)
    sent = [e for _, body in page.event_posts for e in body["events"]]
    views = [e for e in sent if e["action"] == "view"]
    assert [e["video_id"] for e in views[:2]] == video_ids
    assert all(len(e["request_id"]) == 32 for e in views[:2])
    left = [e for e in sent if e["action"] in ("watch", "skip")]
    assert left[0]["video_id"] == video_ids[0] and left[0]["action"] == "watch"
    assert left[0]["watch_ms"] >= 2000
    stored = [e for e in outbox(live_api) if e.topic == "user.interaction"
              and e.user_id == user.id and e.action in ("view", "watch")]
    assert {(e.action, e.video_id) for e in stored} >= {("view", video_ids[0]),
                                                        ("view", video_ids[1]),
                                                        ("watch", video_ids[0])}
    assert not page.errors, page.errors


def test_search_comment_follow_and_debug_overlay(page, live_api: LiveApi) -> None:  # noqa: ANN001
    name = f"web{uuid.uuid4().hex[:8]}"
    sign_up(page, name)
    # Search: a word of a catalog title returns results in the page.
    with sessions(live_api)() as s:
        title = s.scalar(select(Video.title).where(Video.title != "").order_by(Video.id))
    word = max(re.findall(r"[A-Za-z]{4,}", title), key=len)
    page.click("#open-search")
    page.fill("#search-form input[name=q]", word)
    page.click("#search-form button[type=submit]")
    page.wait_for_selector("#search-videos li.result", timeout=20_000)
    assert word.lower() in page.locator("#search-videos li.result").first.inner_text().lower()
    page.click("#panel-close")

    # Comment on and follow the creator of the first video.
    first = page.locator("#feed-for-you .slide[data-index='0']")
    video_id = int(first.get_attribute("data-video-id"))
    first.locator("button.comments").click()
    page.fill("#comment-form input[name=content]", "first comment from the browser")
    page.click("#comment-form button[type=submit]")
    page.wait_for_selector("#comments li:has-text('first comment from the browser')")
    page.click("#panel-close")
    first.locator("button.like").click()
    page.wait_for_selector("#feed-for-you .slide[data-index='0'] button.like[aria-pressed='true']")
    first.locator("button.follow").click()
    page.wait_for_selector("#feed-for-you .slide[data-index='0'] button.follow.on")
    with sessions(live_api)() as s:
        user = s.scalar(select(User).where(User.username == name))
        owner = s.scalar(select(Video.owner_id).where(Video.id == video_id))
        assert s.scalar(select(Comment.body).where(Comment.author_id == user.id,
                                                   Comment.video_id == video_id)) \
            == "first comment from the browser"
        assert s.scalar(select(Follow).where(Follow.follower_id == user.id,
                                             Follow.followee_id == owner)) is not None
    # The following tab: the fan-out worker back-fills the new followee's recent videos.
    deadline = time.monotonic() + 30
    while True:
        page.click("[data-tab=following]")
        page.wait_for_selector("#feed-following .slide, #feed-following .empty")
        if page.locator(f"#feed-following .slide[data-creator='{owner}']").count():
            break
        assert time.monotonic() < deadline, "the followee's videos never reached the tab"
        page.wait_for_timeout(500)
    # A card shows the viewer's own like when it comes on screen (``user_interaction``).
    liked = page.locator(f"#feed-following .slide[data-video-id='{video_id}']")
    liked.scroll_into_view_if_needed()
    page.wait_for_selector(f"#feed-following .slide[data-video-id='{video_id}'] "
                           "button.like[aria-pressed='true']", timeout=10_000)
    page.click("[data-tab=for-you]")

    # The debug overlay: hidden, then (key "d") a fresh ?debug=true list whose cards show
    # their candidate source, score, model version and experiment arms.
    overlay = "#feed-for-you .slide[data-index='0'] pre.debug"
    assert not page.locator(overlay).is_visible()
    page.locator("#feed-for-you").press("d")
    page.wait_for_selector(f"{overlay}:has-text('score')", timeout=30_000)
    text = page.locator(overlay).inner_text()
    source = re.search(r"source (\w+)", text).group(1)
    assert source in SOURCES, text
    assert re.search(r"score (-|-?\d+\.\d{4})", text) and "model " in text, text
    assert re.search(rf"experiment {EXPERIMENT}=(control|explore)\b", text), text
    assert not page.errors, page.errors


def test_debug_flag_keeps_the_default_shape(page, live_api: LiveApi) -> None:  # noqa: ANN001
    """The for-you page only carries ``debug`` when asked for it."""
    name = f"web{uuid.uuid4().hex[:8]}"
    sign_up(page, name)
    token = page.evaluate("window.reelrank.api.access")
    headers = {"Authorization": f"Bearer {token}"}
    url = f"{live_api.url}/api/v1/feed/for-you"
    plain = httpx.get(url, headers=headers, params={"page_size": 3}).json()
    assert plain["videos"] and all("debug" not in v for v in plain["videos"])
    debug = httpx.get(url, headers=headers, params={"page_size": 3, "debug": "true"}).json()
    for v in debug["videos"]:
        d = v["debug"]
        assert d["source"] == v["source"] and d["position"] == v["position"]
        assert d["model_version"] == v["model_version"]
        assert d["experiment"] == EXPERIMENT and d["variant"] in ("control", "explore")
        assert d["arms"] == [{"experiment": EXPERIMENT, "variant": d["variant"]}]
        assert d["score"] is None or isinstance(d["score"], float)
    nxt = httpx.get(url, headers=headers, params={"cursor": debug["next_cursor"],
                                                  "debug": "true"}).json()
    assert all(v["debug"]["score"] is not None for v in nxt["videos"])  # kept with the list
    r = httpx.get(url, headers=headers, params={"debug": "maybe"})
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "debug"


def test_upload_with_progress_and_unread_badge(page, live_api: LiveApi, tmp_path) -> None:  # noqa: ANN001
    name = f"web{uuid.uuid4().hex[:8]}"
    sign_up(page, name)
    clip = make_clip(tmp_path / "mine.mp4", seconds=2.0)
    page.click("#open-upload")
    page.set_input_files("#upload-form input[type=file]", str(clip))
    page.fill("#upload-form input[name=title]", "my browser upload")
    page.click("#upload-form button[type=submit]")
    page.wait_for_selector("#upload-status:has-text('Uploaded: video')", timeout=30_000)
    assert page.locator("#upload-progress").get_attribute("value") == "100"
    video_id = int(re.search(r"video (\d+)", page.inner_text("#upload-status")).group(1))
    with sessions(live_api)() as s:
        assert s.get(Video, video_id).title == "my browser upload"
    uploaded = [e for e in outbox(live_api) if e.topic == "video.uploaded"]
    assert [e.video_id for e in uploaded][-1] == video_id
    # The transcode worker (beside the API) makes its ladder; the panel follows the status.
    page.wait_for_selector(f"#upload-status:has-text('Video {video_id} is ready')",
                           timeout=60_000)
    with sessions(live_api)() as s:
        assert s.get(Video, video_id).status.value == "ready"
    page.click("#panel-close")

    # Someone follows the uploader: one unread notification.
    other = f"fan{uuid.uuid4().hex[:8]}"
    api = f"{live_api.url}/api/v1"
    httpx.post(f"{api}/auth/register", json={"username": other, "password": PASSWORD,
                                             "email": f"{other}@example.com"})
    token = httpx.post(f"{api}/auth/token",
                       json={"username": other, "password": PASSWORD}).json()["access_token"]
    with sessions(live_api)() as s:
        me = s.scalar(select(User.id).where(User.username == name))
    r = httpx.post(f"{api}/users/{me}/follow", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    # The relay and the notifications worker (running beside the API) make the notification;
    # the badge polls for it (every 30 s; asked here at once until it shows).
    deadline = time.monotonic() + 30
    while page.inner_text("#unread-badge") != "1":
        assert time.monotonic() < deadline, "no unread notification reached the badge"
        page.wait_for_timeout(300)
        page.evaluate("window.reelrank.refreshBadge()")  # evaluate awaits its promise
    assert page.locator("#unread-badge").is_visible()
    page.click("#open-notifications")
    page.wait_for_selector(f"#notifications li:has-text('{other}')")
    page.wait_for_selector("#unread-badge[hidden]", state="attached")  # read on opening
    with sessions(live_api)() as s:
        assert s.scalar(select(func.count()).select_from(Notification).where(
            Notification.user_id == me, Notification.read_at.is_(None))) == 0
    assert not page.errors, page.errors


def test_refresh_token_rotates_and_a_reused_one_signs_out(page, live_api: LiveApi) -> None:  # noqa: ANN001
    """The page refreshes its access token with the rotating refresh token; when a copy of an
    old refresh token is used elsewhere, the login is revoked and the page asks to sign in."""
    sign_up(page, f"web{uuid.uuid4().hex[:8]}")
    old = page.evaluate("sessionStorage.getItem('reelrank.refresh')")
    page.evaluate("window.reelrank.api.expiresAt = 0")  # as if 15 minutes had passed
    page.evaluate("window.reelrank.api.get('/users/me')")
    new = page.evaluate("sessionStorage.getItem('reelrank.refresh')")
    assert new and new != old
    page.reload()  # a reload signs back in with the stored refresh token alone
    page.wait_for_selector("#feed-for-you .slide[data-index='0']", timeout=30_000)
    assert page.evaluate("sessionStorage.getItem('reelrank.refresh')") not in (old, new)
    stolen = httpx.post(f"{live_api.url}/api/v1/auth/refresh", json={"refresh_token": old})
    assert stolen.status_code == 401  # reuse: the whole login is revoked
    page.evaluate("window.reelrank.api.expiresAt = 0")
    page.evaluate("window.reelrank.api.get('/users/me').catch(() => null)")
    page.wait_for_selector("#auth:not([hidden])")
    assert page.evaluate("sessionStorage.getItem('reelrank.refresh')") is None


def test_an_expired_list_continues_with_a_fresh_one(page, live_api: LiveApi) -> None:  # noqa: ANN001
    """A cursor the API refuses (its cached list expired) makes the feed rank a new list and
    carry on below the cards already shown, with no error to the user."""
    sign_up(page, f"web{uuid.uuid4().hex[:8]}")
    before = page.locator("#feed-for-you .slide").count()
    page.evaluate("""async () => { const f = window.reelrank.feeds["for-you"];
        f.cursor = "expired"; f.more = true; await f.nextPage(); }""")
    assert page.locator("#feed-for-you .slide").count() > before
    assert page.inner_text("#toast") == ""
    assert not page.errors, page.errors


def test_a_touch_swipe_moves_to_the_next_video(browser, live_api: LiveApi) -> None:  # noqa: ANN001
    """On a phone (touch, no keyboard): a finger swiped up scrolls the feed one card on and
    the next video plays."""
    context = browser.new_context(viewport={"width": 390, "height": 760}, has_touch=True,
                                  is_mobile=True)
    try:
        pg = context.new_page()
        pg.errors = []
        pg.on("pageerror", lambda exc: pg.errors.append(str(exc)))
        pg.goto(f"{live_api.url}/web/")
        sign_up(pg, f"web{uuid.uuid4().hex[:8]}")
        pg.wait_for_selector(".slide[data-index='0'].playing", timeout=20_000)
        cdp = context.new_cdp_session(pg)

        # A finger on the card moving up 450 px in 15 steps (real touch events: the page's
        # scroll snapping does the rest, as on a phone).
        def touch(kind: str, y: float) -> None:
            points = [] if kind == "touchEnd" else [{"x": 195, "y": y}]
            cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": points})

        touch("touchStart", 600)
        for step in range(1, 16):
            touch("touchMove", 600 - 30 * step)
            pg.wait_for_timeout(16)
        touch("touchEnd", 150)
        pg.wait_for_function(
            "document.getElementById('feed-for-you').dataset.current === '1'", timeout=10_000)
        pg.wait_for_selector(".slide[data-index='1'].playing", timeout=20_000)
        assert not pg.errors, pg.errors
    finally:
        context.close()
