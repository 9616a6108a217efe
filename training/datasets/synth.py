"""The synthetic world: a seeded short-video app whose logs have the canonical schema.

Tests and the out-of-the-box demo need data with real structure and no download, so this
generator simulates one. Users have a taste over topics, an activity level, a region and a
device; creators (a subset of the users) have a home topic and a quality; videos have a topic,
a title built from that topic's words and hashtags (so a text encoder finds real signal), a
duration and an upload time. Each day every user sees impressions from a mix of policies
(personalised by taste, popular, and uniformly random, flagged ``is_rand``); click, watch time,
long view, like, comment, share, follow and hate are drawn from the user-video affinity, the
creator's quality, the video's popularity so far and whether the user follows the creator.

The ground truth is kept in ``latent_*`` columns (user taste, video quality) for simulators
and sanity checks; models must not use it as features.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd

from core.clock import DAY_MS, HOUR_MS, utcnow
from core.dataset_schema import IMPRESSION

# Per topic: the words its titles are made of | its hashtags besides the topic's name.
_TOPIC_TABLE = """
cooking | recipe garlic noodles crispy spicy dumplings kitchen sauce chef | foodie recipe
gaming | boss level speedrun loot clutch ranked controller quest respawn | gamer esports
pets | puppy kitten paws fluffy leash treats meow bark hamster cuddle | dogsoftiktok catlover
travel | beach mountain hostel passport sunset island airport hike village | wanderlust vacation
fitness | workout squat protein gym reps cardio abs deadlift stretch plank | gymtok workout
music | guitar cover melody piano chorus drums vocals remix concert lyrics | singer cover
comedy | prank sketch awkward laugh roommate parody fail joke blooper sarcasm | funny lol
beauty | makeup skincare lipstick foundation glow eyeliner serum contour nails | makeup skincare
football | goal striker penalty derby dribble keeper freekick stadium tackle | soccer goals
cars | engine drift turbo supercar horsepower exhaust garage tuning racing | carsoftiktok supercar
tech | smartphone laptop unboxing gadget battery chip review setup keyboard | gadgets unboxing
dance | choreo moves groove tutorial hiphop ballet spin freestyle rhythm duet | dancechallenge
fashion | outfit thrift sneakers denim style haul vintage jacket runway | ootd streetwear
movies | trailer scene director plot twist sequel cinema actor ending villain | film moviereview
anime | episode manga cosplay opening hero arc studio figure character sensei | manga otaku
diy | woodwork glue paint restore craft build tools upcycle drill shelf sanding | crafts homeproject
science | experiment physics chemistry reaction telescope planet molecule lab magnet | stem space
parenting | toddler baby bedtime mom dad school nursery tantrum lunchbox siblings | momlife family
nature | forest river wildlife bird waterfall garden flowers storm ocean trees | wildlife outdoors
finance | budget savings stocks invest crypto salary rent taxes debt dividend | money investing
"""
TOPICS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    name.strip(): (tuple(words.split()), (name.strip(), *tags.split()))
    for name, words, tags in (line.split("|") for line in _TOPIC_TABLE.strip().splitlines())
}
FILLER = ("my", "the", "best", "new", "this", "so", "you", "must", "see", "today", "quick", "how")
GENERIC_TAGS = ("fyp", "viral", "daily")
REGIONS = ("north", "south", "east", "west", "central")
DEVICES = ("android", "ios", "web")
ACTIVITY = ("low_active", "middle_active", "high_active", "full_active")
# Logit coefficients of the outcomes of a click: (intercept, affinity, quality, long view).
OUTCOMES = {
    "liked": (-5.3, 1.8, 0.7, 1.0),
    "commented": (-6.6, 1.0, 0.6, 0.8),
    "shared": (-6.8, 1.2, 0.8, 0.8),
    "followed": (-7.8, 1.5, 1.0, 1.0),
}


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass(frozen=True)
class SynthConfig:
    """The size and shape of the world; the same config and seed give the same data."""

    n_users: int = 2_000
    n_videos: int = 3_000
    n_creators: int | None = None  # default: one per 20 videos, at most n_users
    n_topics: int = 20
    days: int = 7
    start: date = date(2024, 3, 4)
    seed: int = 0
    impressions_per_user: float = 50.0  # over the whole period, scaled by activity
    random_share: float = 0.1  # exposures from the uniform random policy (is_rand)
    popular_share: float = 0.25  # exposures from the popularity policy
    catalogue_share: float = 0.5  # videos uploaded before ``start``
    session_length: int = 12  # impressions per session

    def __post_init__(self) -> None:
        for name in ("n_users", "n_videos", "n_topics", "days", "session_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"synth: {name} must be at least 1")
        if self.n_topics > len(TOPICS):
            raise ValueError(f"synth: n_topics must be at most {len(TOPICS)}")
        if not 1 <= self.creators <= self.n_users:
            raise ValueError("synth: n_creators must be between 1 and n_users")
        if self.random_share + self.popular_share > 1:
            raise ValueError("synth: random_share + popular_share must be at most 1")

    @property
    def creators(self) -> int:
        if self.n_creators is not None:
            return self.n_creators
        return max(1, min(self.n_users, self.n_videos // 20))

    @property
    def start_ms(self) -> int:
        return int(datetime(*self.start.timetuple()[:3], tzinfo=UTC).timestamp() * 1000)


@dataclass
class _World:
    taste: np.ndarray  # (users, topics), rows sum to 1
    activity: np.ndarray  # mean 1
    bias: np.ndarray  # per-user click propensity
    register_ms: np.ndarray
    creator_user: np.ndarray  # creator index -> user id
    creator_quality: np.ndarray
    video_creator: np.ndarray
    video_topic: np.ndarray
    video_quality: np.ndarray
    appeal: np.ndarray  # exposure weight of the popularity policy before any click
    duration_ms: np.ndarray
    upload_ms: np.ndarray


def _world(cfg: SynthConfig, rng: np.random.Generator) -> _World:
    u, v, c, t = cfg.n_users, cfg.n_videos, cfg.creators, cfg.n_topics
    taste = rng.dirichlet(np.full(t, 0.3), size=u)
    activity = rng.lognormal(0.0, 0.75, u)
    creator_user = np.sort(rng.choice(u, c, replace=False))
    home = (rng.random((c, 1)) > taste[creator_user].cumsum(1)).sum(1).clip(max=t - 1)
    creator_quality = rng.normal(0.0, 1.0, c)
    output = rng.lognormal(0.0, 1.0, c)
    video_creator = rng.choice(c, v, p=output / output.sum())
    off_topic = rng.random(v) < 0.2
    video_topic = np.where(off_topic, rng.integers(0, t, v), home[video_creator])
    video_quality = 0.7 * creator_quality[video_creator] + rng.normal(0.0, 0.6, v)
    old = rng.random(v) < cfg.catalogue_share
    old[0] = True  # so that the first day has something to show
    span = np.where(old, -rng.random(v) * 30 * DAY_MS, rng.random(v) * cfg.days * DAY_MS)
    return _World(
        taste=taste,
        activity=activity / activity.mean(),
        bias=rng.normal(0.0, 0.5, u),
        register_ms=cfg.start_ms - (rng.random(u) * 1500 + 1).astype(np.int64) * DAY_MS,
        creator_user=creator_user,
        creator_quality=creator_quality,
        video_creator=video_creator,
        video_topic=video_topic,
        video_quality=video_quality,
        appeal=np.exp(0.8 * video_quality + rng.normal(0.0, 0.5, v)),
        duration_ms=(np.exp(rng.normal(np.log(22.0), 0.75, v)).clip(5, 180) * 1000).astype(
            np.int64
        ),
        upload_ms=cfg.start_ms + span.astype(np.int64),
    )


class _Sampler:
    """Draws videos from the eligible pool: by popularity, or by topic then popularity."""

    def __init__(self, videos: np.ndarray, topic: np.ndarray, weight: np.ndarray, n_topics: int):
        order = np.argsort(topic[videos], kind="stable")
        self.videos = videos[order]
        self.cum = np.cumsum(weight[videos][order])
        bounds = np.searchsorted(topic[videos][order], np.arange(n_topics + 1))
        ends = np.concatenate([[0.0], self.cum])
        self.lo, self.hi = ends[bounds[:-1]], ends[bounds[1:]]
        self.empty = bounds[:-1] == bounds[1:]

    def popular(self, r: np.ndarray) -> np.ndarray:
        return self._pick(r * self.cum[-1])

    def in_topic(self, topics: np.ndarray, r: np.ndarray) -> np.ndarray:
        return self._pick(self.lo[topics] + r * (self.hi[topics] - self.lo[topics]))

    def _pick(self, x: np.ndarray) -> np.ndarray:
        return self.videos[np.searchsorted(self.cum, x, side="right").clip(max=len(self.cum) - 1)]


def _draw_topics(taste: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return (rng.random((len(taste), 1)) > taste.cumsum(1)).sum(1).clip(max=taste.shape[1] - 1)


def _titles(cfg: SynthConfig, w: _World, rng: np.random.Generator) -> tuple[list, list]:
    names = list(TOPICS)
    titles, tags = [], []
    n_words = rng.integers(3, 8, cfg.n_videos)
    for i in range(cfg.n_videos):
        words, own_tags = TOPICS[names[w.video_topic[i]]]
        picks = [
            words[rng.integers(len(words))] if rng.random() < 0.7 else rng.choice(FILLER)
            for _ in range(n_words[i])
        ]
        video_tags = list(dict.fromkeys(rng.choice(own_tags, rng.integers(1, 3)).tolist()))
        if rng.random() < 0.3:
            video_tags.append(GENERIC_TAGS[rng.integers(len(GENERIC_TAGS))])
        titles.append(" ".join([*picks, *(f"#{t}" for t in video_tags)]))
        tags.append(video_tags)
    return titles, tags


def _session_times(
    user: np.ndarray, watch_ms: np.ndarray, day_ms: int, cfg: SynthConfig, rng: np.random.Generator
) -> np.ndarray:
    """Impression times: sessions start at evening-heavy hours; impressions follow back to back."""
    n = len(user)
    first = np.r_[True, user[1:] != user[:-1]]
    pos = np.arange(n) - np.maximum.accumulate(np.where(first, np.arange(n), 0))
    new_session = pos % cfg.session_length == 0
    hour = rng.normal(19.0, 4.0, n) % 24
    start = day_ms + (hour * HOUR_MS).astype(np.int64)
    step = watch_ms + rng.integers(500, 3000, n)
    elapsed = np.cumsum(step) - step
    session_id = np.cumsum(new_session) - 1
    session_base = elapsed[new_session]
    return start[new_session][session_id] + elapsed - session_base[session_id]


def generate(cfg: SynthConfig) -> dict[str, pd.DataFrame]:
    """The world's canonical tables: interactions, items, users, follows."""
    rng = np.random.default_rng(cfg.seed)
    w = _world(cfg, rng)
    u_n, t_n = cfg.n_users, cfg.n_topics
    taste_max = w.taste.max(1)
    clicks = np.zeros(cfg.n_videos)
    follow_keys: dict[int, int] = {}  # user * n_users + creator user -> ts

    def follow(users: np.ndarray, creators: np.ndarray, ts: np.ndarray) -> None:
        keep = users != creators
        for key, t in zip((users * u_n + creators)[keep].tolist(), ts[keep].tolist(), strict=True):
            follow_keys.setdefault(key, t)

    # Follows before the period: a few creators each user met through the personalised policy.
    sampler = _Sampler(np.flatnonzero(w.upload_ms < cfg.start_ms), w.video_topic, w.appeal, t_n)
    n0 = rng.poisson(2.0 * w.activity)
    fu = np.repeat(np.arange(u_n), n0)
    topics = _draw_topics(w.taste[fu], rng)
    fu, topics = fu[~sampler.empty[topics]], topics[~sampler.empty[topics]]
    if len(fu):
        fv = sampler.in_topic(topics, rng.random(len(fu)))
        fts = w.register_ms[fu] + (rng.random(len(fu)) * (cfg.start_ms - w.register_ms[fu]))
        follow(fu, w.creator_user[w.video_creator[fv]], fts.astype(np.int64))

    parts = []
    for day in range(cfg.days):
        day_ms = cfg.start_ms + day * DAY_MS
        pool = np.flatnonzero(w.upload_ms < day_ms)
        if not len(pool):
            continue
        age_days = (day_ms - w.upload_ms) / DAY_MS
        weight = w.appeal * np.sqrt(1.0 + clicks) / (1.0 + age_days / 7.0)
        sampler = _Sampler(pool, w.video_topic, weight, t_n)
        user = np.repeat(
            np.arange(u_n), rng.poisson(w.activity * cfg.impressions_per_user / cfg.days)
        )
        n = len(user)
        policy = rng.random(n)
        is_rand = policy < cfg.random_share
        personal = policy >= cfg.random_share + cfg.popular_share
        video = sampler.popular(rng.random(n))
        video[is_rand] = pool[rng.integers(0, len(pool), int(is_rand.sum()))]
        topics = _draw_topics(w.taste[user[personal]], rng)
        ok = ~sampler.empty[topics]
        pick = np.flatnonzero(personal)[ok]
        video[pick] = sampler.in_topic(topics[ok], rng.random(len(pick)))

        creator = w.creator_user[w.video_creator[video]]
        keys = np.fromiter(follow_keys, np.int64, len(follow_keys))
        following = np.isin(user * u_n + creator, keys)
        affinity = w.taste[user, w.video_topic[video]] / taste_max[user]
        quality = w.video_quality[video]
        pop = np.log1p(clicks[video])
        pop = (pop - pop.mean()) / (pop.std() + 1e-9)
        clicked = rng.random(n) < _sigmoid(
            -1.6 + 2.5 * affinity + 0.5 * quality + 0.25 * pop + 0.8 * following + w.bias[user]
        )
        duration = w.duration_ms[video]
        mean_ratio = _sigmoid(
            -0.9 + 1.5 * affinity + 0.4 * quality - 0.5 * np.log(duration / 22_000)
        )
        ratio = rng.beta(4 * mean_ratio + 1e-3, 4 * (1 - mean_ratio) + 1e-3) * 1.25
        watch = np.where(
            clicked, ratio * duration, rng.random(n) * np.minimum(duration, 1500)
        ).astype(np.int64)
        long_view = clicked & ((watch >= duration) | (watch >= 18_000))

        x = np.stack([np.ones(n), affinity, quality, long_view])
        liked, commented, shared, followed = (
            clicked & (rng.random(n) < _sigmoid(np.asarray(coef) @ x)) for coef in OUTCOMES.values()
        )
        followed &= ~following & (user != creator)
        hated = ~clicked & (rng.random(n) < _sigmoid(-7.5 + 2.5 * (1 - affinity)))

        ts = _session_times(user, watch, day_ms, cfg, rng)
        follow(user[followed], creator[followed], ts[followed])
        clicks += np.bincount(video[clicked], minlength=cfg.n_videos)
        parts.append(
            pd.DataFrame(
                {
                    "user_id": user,
                    "item_id": video,
                    "ts": ts,
                    "event": IMPRESSION,
                    "watch_ms": watch,
                    "duration_ms": duration,
                    "clicked": clicked,
                    "long_view": long_view,
                    "liked": liked,
                    "followed": followed,
                    "commented": commented,
                    "shared": shared,
                    "hated": hated,
                    "is_rand": is_rand,
                }
            )
        )

    inter = pd.concat(parts, ignore_index=True)
    inter = inter.sort_values(["ts", "user_id"], kind="stable", ignore_index=True)
    inter["ts"] = pd.to_datetime(inter["ts"], unit="ms", utc=True)
    keys = np.fromiter(follow_keys, np.int64, len(follow_keys))
    follows = pd.DataFrame(
        {
            "user_id": keys // u_n,
            "author_id": keys % u_n,
            "ts": pd.to_datetime(
                np.fromiter(follow_keys.values(), np.int64, len(keys)), unit="ms", utc=True
            ),
        }
    ).sort_values(["ts", "user_id"], ignore_index=True)
    return {
        "interactions": inter,
        "items": _items(cfg, w, rng),
        "users": _users(cfg, w, rng, follows),
        "follows": follows,
    }


def _items(cfg: SynthConfig, w: _World, rng: np.random.Generator) -> pd.DataFrame:
    titles, tags = _titles(cfg, w, rng)
    shape = rng.choice(3, cfg.n_videos, p=[0.6, 0.3, 0.1])
    return pd.DataFrame(
        {
            "item_id": np.arange(cfg.n_videos),
            "author_id": w.creator_user[w.video_creator],
            "title": titles,
            "duration_ms": w.duration_ms,
            "upload_ts": pd.to_datetime(w.upload_ms, unit="ms", utc=True),
            "tags": tags,
            "category": np.array(list(TOPICS))[w.video_topic],
            "width": np.array([720, 1080, 1280])[shape],
            "height": np.array([1280, 1920, 720])[shape],
            "latent_quality": w.video_quality,
        }
    )


def _users(
    cfg: SynthConfig, w: _World, rng: np.random.Generator, follows: pd.DataFrame
) -> pd.DataFrame:
    users = np.arange(cfg.n_users)
    level = np.searchsorted(np.quantile(w.activity, [0.15, 0.4, 0.7]), w.activity)
    return pd.DataFrame(
        {
            "user_id": users,
            "register_ts": pd.to_datetime(w.register_ms, unit="ms", utc=True),
            "follow_count": np.bincount(follows["user_id"], minlength=cfg.n_users),
            "fan_count": np.bincount(follows["author_id"], minlength=cfg.n_users),
            "activity": np.array(ACTIVITY)[level],
            "region": rng.choice(REGIONS, cfg.n_users, p=[0.3, 0.25, 0.2, 0.15, 0.1]),
            "device": rng.choice(DEVICES, cfg.n_users, p=[0.55, 0.4, 0.05]),
            "is_creator": np.isin(users, w.creator_user),
            "latent_taste": list(w.taste.astype(np.float32)),
            "latent_activity": w.activity,
        }
    )


def config_meta(cfg: SynthConfig) -> dict[str, object]:
    """The config as JSON-ready values, for ``meta.json``."""
    return {k: str(v) if isinstance(v, date) else v for k, v in asdict(cfg).items()}


def recent_start(days: int) -> date:
    """A start date whose ``days`` simulated days end today, for a world that looks live."""
    return (utcnow() - timedelta(days=days)).date()
