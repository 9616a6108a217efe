"""Load a data set's world into the running platform: accounts, videos, follows, counters.

The synthetic world (or any data set whose creators are users) becomes the app's state, with
the data set's ids as the platform's ids, so models trained on the data set serve its users
directly. Videos get a realistic mix of visibility (mostly public, a few followers-only or
private) and status (a few still processing or removed), drawn with a seed, so the feed's
privacy and readiness filters have something to filter. Accounts get no password (they sign
in through a development token). ``video_stats`` and the trending counters are seeded from
the log, so popularity-based sources work before any live traffic, and ``user_stats`` from the
follows and those likes: the counters worker adds live events to what was loaded, so every
counter must start from it.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np
import pandas as pd
import typer
from sqlalchemy import delete, func, insert, select, text
from sqlalchemy.orm import Session

from core.clock import DAY_MS, HOUR_MS
from core.config import Settings
from core.dataset_schema import DataError
from platform_services.storage.cache import redis_client
from platform_services.storage.db import make_engine, session_factory
from platform_services.storage.models import (
    Block,
    Follow,
    User,
    Video,
    VideoStats,
    VideoStatus,
    Visibility,
)
from platform_services.storage.social_models import UserStats
from platform_services.trending import Hit, add_counts
from training.datasets.store import Dataset

NO_PASSWORD = "!"  # never matches a scrypt hash: the account cannot log in with a password
VISIBILITY_MIX = {Visibility.PUBLIC: 0.95, Visibility.FOLLOWERS: 0.03, Visibility.PRIVATE: 0.02}
STATUS_MIX = {VideoStatus.READY: 0.985, VideoStatus.PROCESSING: 0.005, VideoStatus.REMOVED: 0.01}
_CHUNK = 20_000


@dataclass
class LoadReport:
    users: int
    videos: int
    follows: int
    stats: int
    trending_updates: int
    seconds: float


def _draw(mix: dict, n: int, rng: np.random.Generator) -> np.ndarray:
    keys = list(mix)
    return np.array(keys, dtype=object)[rng.choice(len(keys), n, p=list(mix.values()))]


def _ts(col: pd.Series, fallback: pd.Timestamp) -> list:
    return [t.to_pydatetime() for t in pd.to_datetime(col, utc=True).fillna(fallback)]


def _ms(col: pd.Series) -> np.ndarray:
    return pd.to_datetime(col, utc=True).dt.as_unit("ms").astype("int64").to_numpy()


def _insert(session: Session, table: object, rows: list[dict]) -> None:
    for s in range(0, len(rows), _CHUNK):
        session.execute(insert(table), rows[s : s + _CHUNK])  # type: ignore[arg-type]


def _check(ds: Dataset) -> None:
    authors = pd.to_numeric(ds.items["author_id"], errors="coerce")
    if authors.isna().any():
        raise DataError(f"{ds.name}: items without author_id cannot become videos")
    missing = np.setdiff1d(authors.astype(np.int64), ds.users["user_id"].to_numpy(np.int64))
    if len(missing):
        raise DataError(f"{ds.name}: {len(missing)} creators are not users (e.g. {missing[0]}); "
                        "only a world whose creators are users can be loaded")


def _clear(session: Session) -> None:
    for model in (UserStats, VideoStats, Block, Follow, Video, User):
        session.execute(delete(model))


def _user_rows(users: pd.DataFrame, now: pd.Timestamp) -> list[dict]:
    ids = users["user_id"].to_numpy(np.int64)
    region = users["region"] if "region" in users else pd.Series([None] * len(users))
    created = _ts(users["register_ts"], now) if "register_ts" in users else [now] * len(users)
    return [
        {"id": int(i), "username": f"u{i}", "email": f"u{i}@synth.invalid",
         "password_hash": NO_PASSWORD, "region": r if isinstance(r, str) else None,
         "created_at": c}
        for i, r, c in zip(ids, region, created, strict=True)
    ]


def _video_rows(items: pd.DataFrame, now: pd.Timestamp, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    n = len(items)
    visibility, status = _draw(VISIBILITY_MIX, n, rng), _draw(STATUS_MIX, n, rng)
    created = _ts(items["upload_ts"], now)
    category = items["category"] if "category" in items else pd.Series([None] * n)
    duration = pd.to_numeric(items["duration_ms"], errors="coerce")
    return [
        {"id": int(i), "owner_id": int(a), "title": str(t or "")[:200], "description": "",
         "visibility": v, "status": s, "duration_ms": None if pd.isna(d) else int(d),
         "category": c if isinstance(c, str) else None, "created_at": ts, "updated_at": ts}
        for i, a, t, v, s, d, c, ts in zip(
            items["item_id"], items["author_id"].astype(np.int64), items["title"], visibility,
            status, duration, category, created, strict=True)
    ]


def _follow_rows(follows: pd.DataFrame | None, now: pd.Timestamp) -> list[dict]:
    if follows is None or follows.empty:
        return []
    f = follows[follows["user_id"] != follows["author_id"]].drop_duplicates(
        ["user_id", "author_id"])
    return [
        {"follower_id": int(u), "followee_id": int(a), "created_at": ts}
        for u, a, ts in zip(f["user_id"], f["author_id"], _ts(f["ts"], now), strict=True)
    ]


def _user_stats_rows(follows: list[dict], videos: list[dict], stats: list[dict]
                     ) -> list[dict]:
    """Followers and following from the loaded follows, likes received from the seeded video
    counts (what the counters worker would have counted had they happened live)."""
    counts: dict[int, Counter[str]] = defaultdict(Counter)
    for f in follows:
        counts[f["follower_id"]]["following"] += 1
        counts[f["followee_id"]]["followers"] += 1
    owner = {v["id"]: v["owner_id"] for v in videos}
    for row in stats:
        if row["likes"]:
            counts[owner[row["video_id"]]]["total_likes"] += row["likes"]
    return [{"user_id": u, "followers": c["followers"], "following": c["following"],
             "total_likes": c["total_likes"]} for u, c in sorted(counts.items())]


def _clicks(ds: Dataset) -> pd.DataFrame:
    inter = ds.interactions
    if "clicked" in inter:
        return inter[inter["clicked"].fillna(False).astype(bool)]
    return inter[inter["event"].isin(["view", "click"])]


def _stats_rows(ds: Dataset, video_ids: np.ndarray) -> list[dict]:
    clicks = _clicks(ds)
    inter = ds.interactions
    count = {"views": clicks.groupby("item_id").size()}
    for col, flag in (("likes", "liked"), ("shares", "shared"), ("comments", "commented")):
        count[col] = inter[inter[flag].fillna(False).astype(bool)].groupby("item_id").size() \
            if flag in inter else pd.Series(dtype=np.int64)
    watch = clicks.groupby("item_id")["watch_ms"].sum() if "watch_ms" in clicks else None
    frame = pd.DataFrame(count).reindex(video_ids).fillna(0).astype(np.int64)
    frame["watch_ms"] = 0 if watch is None else watch.reindex(video_ids).fillna(0).astype(np.int64)
    frame = frame[(frame["views"] > 0) | (frame["likes"] > 0)]
    return [
        {"video_id": int(v), "views": int(r.views), "likes": int(r.likes), "comments":
         int(r.comments), "shares": int(r.shares), "skips": 0, "reports": 0,
         "watch_ms": int(r.watch_ms)}
        for v, r in zip(frame.index, frame.itertuples(), strict=True)
    ]


def _hits(ds: Dataset, now_ms: int) -> list[Hit]:
    """Clicks (1), likes (+3) and shares (+5) of the last 31 days, as trending hits."""
    inter = ds.interactions
    recent = inter[_ms(inter["ts"]) >= now_ms - 31 * DAY_MS]
    if recent.empty:
        return []
    weight = np.zeros(len(recent))
    for col, w in (("clicked", 1.0), ("liked", 3.0), ("shared", 5.0)):
        if col in recent:
            weight += w * recent[col].fillna(False).astype(bool).to_numpy()
    keep = weight > 0
    recent, weight = recent[keep], weight[keep]
    region = ds.users.set_index("user_id")["region"] if "region" in ds.users else pd.Series()
    topic = ds.items.set_index("item_id")["category"] if "category" in ds.items else pd.Series()
    hour = _ms(recent["ts"]) // HOUR_MS
    frame = pd.DataFrame({
        "hour": hour, "video": recent["item_id"].to_numpy(np.int64), "weight": weight,
        "region": recent["user_id"].map(region).fillna("").to_numpy(object),
        "topic": recent["item_id"].map(topic).fillna("").to_numpy(object),
    }).groupby(["hour", "video", "region", "topic"], as_index=False)["weight"].sum()
    # One hit per (hour, video, region, topic): the counters only resolve hours anyway.
    return [Hit(int(h) * HOUR_MS, int(v), r or None, c or None, float(w))
            for h, v, r, c, w in frame.itertuples(index=False)]


def load_world(settings: Settings, ds: Dataset, replace: bool = False, seed: int = 0,
               trending: bool = True) -> LoadReport:
    """Write ``ds`` into the platform's database (and trending counters into Redis)."""
    started = time.perf_counter()
    _check(ds)
    now = pd.Timestamp.now(tz="UTC")
    engine = make_engine(settings.database_url)
    try:
        with session_factory(engine).begin() as session:
            have = session.scalar(select(func.count()).select_from(User)) or 0
            if have and not replace:
                raise DataError(f"the platform already has {have} users; pass --replace to "
                                "delete every account, video and follow first")
            if replace:
                _clear(session)
            users = _user_rows(ds.users, now)
            videos = _video_rows(ds.items, now, seed)
            follows = _follow_rows(ds.follows, now)
            stats = _stats_rows(ds, ds.items["item_id"].to_numpy(np.int64))
            _insert(session, User, users)
            _insert(session, Video, videos)
            _insert(session, Follow, follows)
            _insert(session, VideoStats, stats)
            _insert(session, UserStats, _user_stats_rows(follows, videos, stats))
            if engine.dialect.name == "postgresql":  # explicit ids: move the sequences past them
                for table in ("users", "videos"):
                    session.execute(text(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                        f"(SELECT coalesce(max(id), 0) + 1 FROM {table}), false)"))
    finally:
        engine.dispose()
    updates = 0
    if trending:
        r = redis_client(settings.redis_url)
        try:
            updates = add_counts(r, _hits(ds, int(now.timestamp() * 1000)))
        finally:
            r.close()
    return LoadReport(len(users), len(videos), len(follows), len(stats), updates,
                      time.perf_counter() - started)


def load_command(
    name: str = typer.Argument("synth", help="Data set name (or directory) to load."),
    replace: bool = typer.Option(False, help="Delete every account, video and follow first."),
    seed: int = typer.Option(0, help="Seed of the visibility / status mix."),
) -> None:
    """Load a data set's world (creators must be users, as in synth) into the platform."""
    from core.config import get_settings
    from platform_services.storage.db import migrate
    from training.datasets.store import load_dataset

    settings = get_settings()
    try:
        migrate(settings.database_url)
        ds = load_dataset(name, settings.data_dir)
        rep = load_world(settings, ds, replace=replace, seed=seed)
    except DataError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"loaded {name}: {rep.users:,} users, {rep.videos:,} videos, {rep.follows:,} "
               f"follows, {rep.stats:,} video stats, {rep.trending_updates:,} trending updates "
               f"in {rep.seconds:.1f} s")
    typer.echo("search finds them after `reelrank search reindex` (the search worker indexes "
               "uploads as they are processed, not loaded worlds)")


def register(groups: dict[str, typer.Typer]) -> None:
    groups["data"].command("load")(load_command)


def demo_step() -> None:
    """Load the demo's world (``demo_data``: synth or kuairand) into the platform, replacing a
    previous load."""
    from core.config import get_settings
    from training.datasets.store import load_dataset

    settings = get_settings()
    rep = load_world(settings, load_dataset(settings.demo_data, settings.data_dir), replace=True)
    typer.echo(f"platform: {rep.users:,} users, {rep.videos:,} videos, {rep.follows:,} follows "
               f"loaded in {rep.seconds:.1f} s")
