"""Simulated users for offline A/B tests: real HTTP clients of the real for-you endpoint.

Each simulated user is a platform user of the synthetic world (the world's ids are the
platform's, :mod:`training.datasets.world`) with that user's token (``issue_token``). A visit
pages through ``GET /api/v1/feed/for-you`` (first page, then ``next_cursor``) and answers each
shown video with the responses of :class:`experiments.simulator_fit.ResponseModel` (fitted to
KuaiRand): a ``watch`` (clicked) or a ``skip`` with its ``watch_ms``, a ``like``, and whether
the visit ends after it. The page's telemetry (watch/skip) goes to ``POST /api/v1/events`` with
the page's ``request_id`` and each item's ``position``, and each like to
``POST /api/v1/videos/{id}/like``, as the app does, so the outbox, the bus, the exposure log
and the interaction log fill exactly as with real users. World user 0 is never simulated: a
token's ``sub`` is at least 1 (:func:`platform_services.auth.parse_user_id`).

What the user "knows" (:class:`Population`): their activity level, click rate and watch
history by topic from the world's log, extended by what they click during the visit; of a
video, its duration and view count as the API returns them (the count as a percentile of the
world's catalog) and its topic from the world's item table (what the viewer sees in it).
Simulated time is compressed (nobody waits out a watch): the visit clock, a model feature,
advances by the drawn watch times, while events carry the wall-clock time of the page.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import numpy as np
import pandas as pd

from experiments.simulator_fit import (
    FEATURES,
    ResponseModel,
    activity_level,
    hazard,
    smoothed_ctr,
    topic_share,
)
from training.datasets.store import Dataset

log = logging.getLogger(__name__)

FEED = "/api/v1/feed/for-you"
EVENTS = "/api/v1/events"
LIKE = "/api/v1/videos/{}/like"
RETRY_STATUSES = (429, 503)  # rate limited / the feed sheds load: wait Retry-After, try again
SKIP_DWELL_S = 1.0  # visit-clock time a skipped video takes at least


@dataclass(frozen=True)
class SimConfig:
    users: int = 100
    seed: int = 0
    page_size: int = 10
    max_pages: int = 20  # a visit ends here at the latest (or when the list runs out)
    concurrency: int = 8
    retries: int = 5  # a 429 or 503 is retried after Retry-After


@dataclass
class UserOutcome:
    user_id: int
    pages: int = 0
    seen: int = 0
    clicks: int = 0
    likes: int = 0
    watch_ms: int = 0
    errors: int = 0
    left: bool = False  # the response model ended the visit (not the page cap or the list)


@dataclass
class SimResult:
    users: list[UserOutcome]
    seconds: float
    statuses: Counter = field(default_factory=Counter)

    def summary(self) -> dict[str, float]:
        frame = pd.DataFrame([u.__dict__ for u in self.users])
        return {"users": len(frame), "seconds": self.seconds,
                "pages_per_user": float(frame["pages"].mean()),
                "videos_per_user": float(frame["seen"].mean()),
                "click_rate": float(frame["clicks"].sum() / max(frame["seen"].sum(), 1)),
                "watch_min_per_user": float(frame["watch_ms"].mean() / 60_000),
                "left_share": float(frame["left"].mean()),
                "users_with_errors": int((frame["errors"] > 0).sum())}


class Population:
    """The world's users and videos as the response model's features see them."""

    def __init__(self, ds: Dataset) -> None:
        inter = ds.interactions
        imp = inter[inter["event"] == "impression"] if "event" in inter else inter
        clicked = imp[imp["clicked"].fillna(False).astype(bool)]
        self.topic = ds.items.set_index("item_id")["category"].fillna("?")
        self.n_topics = int(self.topic.nunique())
        # views (clicks) per video, and its duration: what the API's items carry
        self.item_views = clicked.groupby("item_id").size().reindex(
            ds.items["item_id"], fill_value=0)
        self.duration = pd.to_numeric(ds.items.set_index("item_id")["duration_ms"],
                                      errors="coerce")
        self.views = np.sort(self.item_views.to_numpy(np.float64))
        users = ds.users.set_index("user_id")
        self.activity = pd.Series(activity_level(users["activity"]), index=users.index) \
            if "activity" in users else pd.Series(0.0, index=users.index)
        self.prior_ctr = float(imp["clicked"].fillna(False).astype(bool).mean()) if len(imp) \
            else 0.5
        self.shown = imp.groupby("user_id").size()
        self.clicks = clicked.groupby("user_id").size()
        topics = clicked["item_id"].map(self.topic).fillna("?")
        counts = clicked.assign(topic=topics).groupby(["user_id", "topic"]).size()
        self.history: dict[int, Counter] = {}
        for (user, topic), n in counts.items():
            self.history.setdefault(int(user), Counter())[str(topic)] = int(n)
        self.user_ids = users.index.to_numpy(np.int64)

    def popularity(self, views: np.ndarray) -> np.ndarray:
        """Views as a percentile of the world's catalog (ties count half, as in the fit)."""
        lo = np.searchsorted(self.views, views, "left")
        hi = np.searchsorted(self.views, views, "right")
        return (lo + hi) / 2 / max(len(self.views), 1)

    def visitor(self, user_id: int) -> Visitor:
        return Visitor(user_id, float(self.activity.get(user_id, 0.0)),
                       int(self.shown.get(user_id, 0)), int(self.clicks.get(user_id, 0)),
                       Counter(self.history.get(user_id, {})))


@dataclass
class Visitor:
    """One simulated user's state during a visit."""

    user_id: int
    activity: float
    shown: int
    clicks: int
    topics: Counter
    visit_s: float = 0.0

    def features(self, pop: Population, items: list[dict]) -> pd.DataFrame:
        return features_of([self], pop, [items])


def features_of(visitors: list[Visitor], pop: Population,
                pages: list[list[dict]]) -> pd.DataFrame:
    """The response model's inputs for each visitor's page, rows in visitor then page order
    (plus each video's ``topic`` and ``duration_ms``)."""
    flat = [it for items in pages for it in items]
    owner = np.repeat(np.arange(len(visitors)), [len(items) for items in pages])
    topics = pd.Series([it["video_id"] for it in flat]).map(
        pop.topic).fillna("?").to_numpy()
    duration = np.array([(it.get("duration") or 0) * 1000 for it in flat], np.float64)
    views = np.array([it["stats"]["views"] for it in flat], np.float64)

    def per_visitor(value: Callable[[Visitor], float]) -> np.ndarray:
        return np.array([value(v) for v in visitors], np.float64)[owner]

    total = per_visitor(lambda v: sum(v.topics.values()))
    same = np.array([visitors[o].topics.get(t, 0) for o, t in zip(owner, topics, strict=True)],
                    np.float64)
    return pd.DataFrame({
        "log_duration_s": np.log1p(duration / 1000),
        "pop_pct": pop.popularity(views),
        "activity": per_visitor(lambda v: v.activity),
        "user_ctr": smoothed_ctr(per_visitor(lambda v: v.clicks),
                                 per_visitor(lambda v: v.shown), pop.prior_ctr),
        "log_history": np.log1p(total),
        "topic_share": topic_share(same, total, pop.n_topics),
        "log_visit_s": np.log1p(per_visitor(lambda v: v.visit_s)),
        "topic": topics, "duration_ms": duration,
    })[[*FEATURES, "topic", "duration_ms"]]


def answer_page(visitor: Visitor, pop: Population, model: ResponseModel, items: list[dict],
                rng: np.random.Generator) -> tuple[pd.DataFrame, bool]:
    """The visitor's responses to one page, up to the video after which they leave (if any);
    updates the visitor's history and visit clock. Returns (rows seen, left)."""
    seen, left = answer_pages([visitor], pop, model, [items], rng)
    return seen.drop(columns=["visitor", "position"]), bool(left[0])


def answer_pages(visitors: list[Visitor], pop: Population, model: ResponseModel,
                 pages: list[list[dict]], rng: np.random.Generator,
                 ) -> tuple[pd.DataFrame, np.ndarray]:
    """:func:`answer_page` for several visitors at once (one page each), drawing from one
    random stream with one model call per response (the offline replay's speed). The rows
    seen carry ``visitor`` (index into ``visitors``) and ``position`` (in the page); also
    whether each visitor left. With one visitor: the draws, in the order, of the HTTP visit."""
    frame = model.respond(features_of(visitors, pop, pages), rng)
    sizes = np.array([len(items) for items in pages])
    starts = np.r_[0, np.cumsum(sizes)[:-1]].astype(int)
    owner = np.repeat(np.arange(len(visitors)), sizes)
    position = np.arange(len(frame)) - starts[owner]
    watch_s = frame["watch_ratio"].to_numpy() * frame["duration_ms"].to_numpy() / 1000
    # The leave decision after each video sees the visit clock after that video.
    dwell = np.cumsum(np.maximum(watch_s, SKIP_DWELL_S))  # over all visitors' rows
    visit = np.array([v.visit_s for v in visitors])  # each visitor's clock, from their own rows
    clock = np.repeat(visit - np.r_[0.0, dwell][starts], sizes) + dwell
    after = frame.assign(log_visit_s=np.log1p(clock))
    leave = rng.random(len(frame)) < hazard(model.predict("leave", after), model.sampling_rate)
    stop, left = sizes.copy(), np.zeros(len(visitors), bool)
    np.minimum.at(stop, owner[leave], position[leave] + 1)
    left[owner[leave]] = True
    keep = position < stop[owner]
    seen = frame[keep].assign(
        watch_ms=np.round(watch_s[keep] * 1000).astype(np.int64), visitor=owner[keep],
        position=position[keep]).reset_index(drop=True)
    clicked = seen["clicked"].to_numpy() > 0
    clicks = np.bincount(seen["visitor"].to_numpy()[clicked], minlength=len(visitors))
    for k, visitor in enumerate(visitors):
        if stop[k]:
            visitor.visit_s = float(clock[starts[k] + stop[k] - 1])
        visitor.shown += int(stop[k])
        visitor.clicks += int(clicks[k])
    for k, topic in zip(seen["visitor"].to_numpy()[clicked], seen["topic"].to_numpy()[clicked],
                        strict=True):
        visitors[k].topics[topic] += 1
    return seen, left


def page_events(items: list[dict], seen: pd.DataFrame, request_id: str) -> list[dict]:
    """The telemetry the app posts to ``/events`` for the videos of a page the user went
    through: a ``watch`` or a ``skip`` each (likes have their own endpoint: :func:`liked`)."""
    return [
        {"video_id": it["video_id"], "position": it["position"], "request_id": request_id,
         "action": "watch" if row.clicked > 0 else "skip", "watch_ms": int(row.watch_ms)}
        for it, row in zip(items, seen.itertuples(index=False), strict=False)
    ]


def liked(items: list[dict], seen: pd.DataFrame) -> list[int]:
    """The ids of the page's videos the user liked, in page order."""
    return [it["video_id"] for it, row in zip(items, seen.itertuples(index=False),
                                                  strict=False) if row.liked > 0]


async def _call(client: httpx.AsyncClient, method: str, url: str, cfg: SimConfig,
                **kwargs: object) -> httpx.Response:
    """The request, retried after ``Retry-After`` while rate limited (429) or while the feed
    sheds load (503)."""
    for attempt in range(cfg.retries + 1):
        r = await client.request(method, url, **kwargs)
        if r.status_code not in RETRY_STATUSES or attempt == cfg.retries:
            return r
        await asyncio.sleep(float(r.headers.get("Retry-After", "1")) * (1 + attempt) / 2)
    return r


async def visit(client: httpx.AsyncClient, token: str, visitor: Visitor, pop: Population,
                model: ResponseModel, cfg: SimConfig, rng: np.random.Generator,
                statuses: Counter) -> UserOutcome:
    """One user's visit: page after page until they leave, the list ends or the page cap."""
    out = UserOutcome(visitor.user_id)
    headers = {"Authorization": f"Bearer {token}"}
    cursor: str | None = None
    for _ in range(cfg.max_pages):
        params: dict[str, object] = {"page_size": cfg.page_size}
        if cursor:
            params["cursor"] = cursor
        r = await _call(client, "GET", FEED, cfg, params=params, headers=headers)
        statuses[f"feed {r.status_code}"] += 1
        if r.status_code != 200:
            out.errors += 1
            break
        page = r.json()
        items = page["videos"]
        if not items:
            break
        seen, left = answer_page(visitor, pop, model, items, rng)
        out.pages += 1
        out.seen += len(seen)
        out.clicks += int((seen["clicked"] > 0).sum())
        out.likes += int((seen["liked"] > 0).sum())
        out.watch_ms += int(seen["watch_ms"].sum())
        events = page_events(items, seen, items[0]["request_id"])
        r = await _call(client, "POST", EVENTS, cfg, json={"events": events}, headers=headers)
        statuses[f"events {r.status_code}"] += 1
        if r.status_code != 202:
            out.errors += 1
            break
        for video_id in liked(items, seen):
            r = await _call(client, "POST", LIKE.format(video_id), cfg, headers=headers)
            statuses[f"like {r.status_code}"] += 1
            if r.status_code != 200:
                out.errors += 1
        cursor = page["next_cursor"]
        if left or cursor is None:
            out.left = left
            break
    return out


async def simulate(base_url: str, tokens: dict[int, str], pop: Population,
                   model: ResponseModel, cfg: SimConfig) -> SimResult:
    """Every user of ``tokens`` visits once, ``cfg.concurrency`` at a time; each user's
    random stream is seeded by (seed, user), so a rerun draws the same responses to the same
    pages."""
    started, statuses = time.perf_counter(), Counter()
    gate = asyncio.Semaphore(cfg.concurrency)
    limits = httpx.Limits(max_connections=cfg.concurrency * 2)
    async with httpx.AsyncClient(base_url=base_url, timeout=60.0, limits=limits) as client:

        async def one(user_id: int) -> UserOutcome:
            async with gate:
                rng = np.random.default_rng([cfg.seed, user_id])
                try:
                    return await visit(client, tokens[user_id], pop.visitor(user_id), pop,
                                       model, cfg, rng, statuses)
                except httpx.HTTPError as exc:
                    statuses[f"transport {type(exc).__name__}"] += 1
                    return UserOutcome(user_id, errors=1)

        outcomes = await asyncio.gather(*(one(u) for u in tokens))
    return SimResult(list(outcomes), time.perf_counter() - started, statuses)


def pick_users(pop: Population, n: int, seed: int) -> np.ndarray:
    """``n`` world users drawn without replacement (all of them when there are fewer); ids
    below 1 cannot hold a token, so they are left out."""
    rng = np.random.default_rng(seed)
    ids = pop.user_ids[pop.user_ids >= 1]
    return np.sort(rng.choice(ids, min(n, len(ids)), replace=False))
