"""``reelrank bench scaleout``: the same load on one process and on two, API and workers.

The demonstration of ``docs/SCALING.md`` on this machine: scaling out is adding processes
that share the load through the mechanisms production uses (a shared listening socket behind
which the kernel spreads connections; consumer groups that split a topic's partitions), so the
ratio two/one on one machine is what a second machine adds, minus what the two cores share.

1. **API**: ``reelrank serve api --workers 1``, then ``--workers 2`` (uvicorn processes on one
   socket), on a small synthetic world (SQLite, embedded Redis, rate limiter on with limits
   high enough never to refuse). A closed-loop client (this process: raw HTTP/1.1 keep-alive
   on asyncio streams, a few microseconds of CPU per request, so the API owns the cores) keeps
   ``concurrency`` requests in flight on ``GET /api/v1/videos/{id}`` (auth, rate limit,
   database read, signed media URLs, the response model: CPU-bound in the API) over random
   videos for ``seconds``. Reported: served/s, p50/p99, CPU ms per request of the API
   processes, the load average.
2. **Workers**: 1, then 2 ``reelrank worker counters`` processes (one consumer group) join
   on the ``db://`` bus of an embedded PostgreSQL (``user.interaction``, 4 partitions: each
   member owns half of them once the group settled), then ``events`` interactions are
   published and drained. The rate is taken between 10 % and 90 % applied.
   Reported: events/s, CPU ms per 1,000 events of the workers and of PostgreSQL, load.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

from benchmarks.report import table, write_report
from benchmarks.servers import embedded_env, tansu
from core.cli import CLI
from platform_services.storage.procs import spawn, stop_all, wait_until

ROOT = Path("var/bench-scaleout")
BUSES = ("db", "kafka")  # the worker demonstration on each event bus


def _env(root: Path) -> dict[str, str]:
    # One thread per process: the scale-out is in processes.
    return embedded_env(root, ranker_backend="local") | {"OMP_NUM_THREADS": "1",
                                                         "MKL_NUM_THREADS": "1"}


def _cli(root: Path, *args: object) -> None:
    import subprocess

    done = subprocess.run([*CLI, *map(str, args)], env=os.environ | _env(root),
                          capture_output=True, text=True, timeout=900)
    if done.returncode:
        raise RuntimeError(f"reelrank {' '.join(map(str, args))}: {done.stderr[-2000:]}")


def prepare(root: Path, users: int, videos: int) -> list[int]:
    """The world (built once per root): the public, ready video ids to read."""
    from sqlalchemy import select

    from platform_services.storage.db import make_engine
    from platform_services.storage.models import Video, VideoStatus, Visibility

    if not (root / "reelrank.db").is_file():
        root.mkdir(parents=True, exist_ok=True)
        _cli(root, "db", "upgrade")
        _cli(root, "data", "synth", "--users", users, "--videos", videos, "--days", 3)
        _cli(root, "data", "load", "synth", "--replace")
    engine = make_engine(_env(root)["REELRANK_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            return [int(i) for i in conn.execute(select(Video.id).where(
                Video.visibility == Visibility.PUBLIC, Video.status == VideoStatus.READY))
                .scalars()]
    finally:
        engine.dispose()


def _tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


RECONNECT_EVERY = 50  # requests per connection: a session's worth, then a new accept


async def _client(port: int, paths: list[str], token: str, seconds: float, latencies: list[float],
                  errors: list[int], deadline: float) -> None:
    """A keep-alive connection sending GETs back to back until ``deadline``, reopened every
    ``RECONNECT_EVERY`` requests. The API processes share one listening socket and the
    kernel hands each new connection to whichever accepts first: 16 connections opened at
    once can all land on one process and stay there, so the clients, like real ones, come
    and go."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = f"Host: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n\r\n"
    sent = 0
    try:
        while time.monotonic() < deadline:
            if sent and sent % RECONNECT_EVERY == 0:
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            sent += 1
            path = random.choice(paths)
            t0 = time.perf_counter()
            writer.write(f"GET {path} HTTP/1.1\r\n{head}".encode())
            status_line = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - t0)
            if not status_line.startswith(b"HTTP/1.1 200"):
                errors.append(int(status_line.split()[1]))
    finally:
        writer.close()


async def _load(port: int, paths: list[str], token: str, seconds: float,
                concurrency: int) -> tuple[list[float], list[int]]:
    latencies: list[float] = []
    errors: list[int] = []
    deadline = time.monotonic() + seconds
    await asyncio.gather(*(_client(port, paths, token, seconds, latencies, errors, deadline)
                           for _ in range(concurrency)))
    return latencies, errors


def api_run(root: Path, video_ids: list[int], processes: int, seconds: float,
            concurrency: int, port: int) -> dict:
    """Capacity of ``processes`` API processes: served/s, latency, CPU per request."""
    import urllib.request

    from core.config import Settings
    from platform_services.auth import issue_token

    env = os.environ | _env(root)
    log = root / f"api-{processes}.log"
    api = spawn([*CLI, "serve", "api", "--port", port, "--workers", processes], log=log, env=env)

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return True
        except OSError:
            return False

    try:
        wait_until(ready, api, what="API", log=log, timeout_s=120)
        settings = Settings(**{k.removeprefix("REELRANK_").lower(): v for k, v in
                               _env(root).items() if k.startswith("REELRANK_")})
        token = issue_token(settings, 1, ttl_s=3600)
        paths = [f"/api/v1/videos/{i}" for i in video_ids]
        asyncio.run(_load(port, paths, token, 3.0, concurrency))  # warm-up: caches, pools
        load_before = os.getloadavg()[0]
        procs = _tree(api.pid)
        cpu0, t0 = _cpu_by_pid(procs), time.monotonic()
        latencies, errors = asyncio.run(_load(port, paths, token, seconds, concurrency))
        elapsed, cpu1 = time.monotonic() - t0, _cpu_by_pid(procs)
        per_pid = {pid: cpu1[pid] - cpu0.get(pid, 0.0) for pid in cpu1}
        cpu = sum(per_pid.values())
    finally:
        stop_all([api], timeout_s=30)
    n = len(latencies)
    lat = np.asarray(latencies) * 1000
    return {"processes": processes, "requests": n, "served_s": n / elapsed,
            "p50_ms": float(np.percentile(lat, 50)) if n else float("nan"),
            "p99_ms": float(np.percentile(lat, 99)) if n else float("nan"),
            "errors": len(errors), "cpu_ms_req": cpu * 1000 / max(n, 1),
            "busiest": max(per_pid.values(), default=0.0) / max(cpu, 1e-9),
            "load": load_before}


async def _publish(db_url: str, bus_url: str, events: int) -> None:
    """``events`` likes on ``user.interaction`` in one publish (one transaction on ``db://``,
    one batch per partition on Kafka: the consumers see the backlog at once, not the
    publisher's pace); ``events`` = 0 only creates the topics."""
    from core.events import Action, UserInteraction, encode
    from platform_services.bus import Message, open_bus
    from platform_services.storage.db import make_engine

    engine = make_engine(db_url)
    bus = open_bus(bus_url, engine)
    await bus.start()
    try:
        await bus.ensure_topics(["user.interaction", "user.interaction.dlq"], partitions=4)
        msgs = []
        for i in range(events):
            e = UserInteraction(user_id=i % 5000, action=Action.LIKE, video_id=i % 2000)
            msgs.append(Message(e.topic, e.key, encode(e)))
        if msgs:  # one transaction: the whole backlog appears at once, as a backlog does
            await bus.publish(msgs)
    finally:
        await bus.stop()
        engine.dispose()


def _cpu_by_pid(procs: list[psutil.Process]) -> dict[int, float]:
    out = {}
    for p in procs:
        try:
            t = p.cpu_times()
            out[p.pid] = t.user + t.system
        except psutil.Error:
            pass
    return out


def _spent(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds between two readings (a process new since ``before`` counts whole)."""
    return sum(v - before.get(pid, 0.0) for pid, v in after.items())


def _all_joined(engine: object, workers: int, procs: list) -> None:
    """Until every worker is a member of the group and has had one heartbeat since the last
    joined (each recomputes its share of the partitions once a heartbeat, a third of the
    session timeout): the backlog then meets the final assignment, not a rebalance."""
    from sqlalchemy import func, select

    from core.config import get_settings
    from platform_services.bus.models import BusMember

    deadline = time.monotonic() + 120
    while True:
        with engine.connect() as conn:  # type: ignore[attr-defined]
            n = conn.execute(select(func.count()).select_from(BusMember)
                             .where(BusMember.group == "counters")).scalar()
        if n == workers:
            break
        _check_alive(deadline, procs, f"{n} of {workers} workers joined the group")
        time.sleep(0.1)
    time.sleep(get_settings().bus_session_timeout_ms / 3000 + 1.0)


def _kafka_joined(bootstrap: str, workers: int, procs: list) -> None:
    """Until the broker reports the ``counters`` group stable with every worker in it."""
    from aiokafka.admin import AIOKafkaAdminClient

    async def members() -> tuple[str, int]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            (response,) = await admin.describe_consumer_groups(["counters"])
            group = response.groups[0]  # (error, id, state, protocol type, protocol, members)
            return group[2], len(group[5])
        finally:
            await admin.close()

    deadline = time.monotonic() + 120
    while (got := asyncio.run(members())) != ("Stable", workers):
        _check_alive(deadline, procs, f"group {got} of {workers} workers")
        time.sleep(0.2)


def _check_alive(deadline: float, procs: list, what: str) -> None:
    if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
        raise RuntimeError(f"workers not settled: {what}")


def workers_run(server: object, workers: int, events: int, bus: str = "db") -> dict:
    """Events/s drained by ``workers`` counters workers of one group from a backlog on
    ``bus``: ``db`` (the database log) or ``kafka`` (a fresh in-memory tansu per run)."""
    with contextlib.ExitStack() as stack:
        if bus == "db":
            bus_url = "db://"
        else:
            logs = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            bus_url = f"kafka://{stack.enter_context(tansu(logs))}"
        return _drain(server, workers, events, bus, bus_url)


def _drain(server: object, workers: int, events: int, bus: str, bus_url: str) -> dict:
    from sqlalchemy import func, select

    from platform_services.bus.models import ProcessedEvent
    from platform_services.storage.db import make_engine, migrate

    db_url = server.create_database()  # type: ignore[attr-defined]
    migrate(db_url)
    asyncio.run(_publish(db_url, bus_url, 0))
    env = os.environ | {"REELRANK_DATABASE_URL": db_url, "REELRANK_EVENT_BUS_URL": bus_url,
                        "OMP_NUM_THREADS": "1"}
    root = Path(tempfile.mkdtemp(prefix="scaleout-workers-"))
    engine = make_engine(db_url)
    pg_pid = server.proc.pid  # type: ignore[attr-defined]
    load_before = os.getloadavg()[0]
    procs = [spawn([*CLI, "worker", "counters"], log=root / f"counters-{i}.log", env=env)
             for i in range(workers)]
    marks: dict[float, tuple[float, dict[int, float], dict[int, float]]] = {}
    try:
        if bus == "db":
            _all_joined(engine, workers, procs)
        else:
            _kafka_joined(bus_url.removeprefix("kafka://"), workers, procs)
        asyncio.run(_publish(db_url, bus_url, events))
        deadline = time.monotonic() + 600
        while 0.9 not in marks:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{workers} workers did not drain {events} events in 600 s")
            with engine.connect() as conn:
                done = conn.execute(select(func.count()).select_from(ProcessedEvent)).scalar()
            for q in (0.1, 0.9):
                if (done or 0) >= q * events and q not in marks:
                    marks[q] = (time.monotonic(),
                                _cpu_by_pid([psutil.Process(p.pid) for p in procs]),
                                _cpu_by_pid(_tree(pg_pid)))
            time.sleep(0.05)
    finally:
        stop_all(procs, signal.SIGTERM, timeout_s=30)
        engine.dispose()
        shutil.rmtree(root, ignore_errors=True)
    (t10, w10, pg10), (t90, w90, pg90) = marks[0.1], marks[0.9]
    n = 0.8 * events
    return {"bus": bus, "workers": workers, "events": events, "events_s": n / (t90 - t10),
            "cpu_workers_ms_k": _spent(w10, w90) * 1e6 / n,
            "cpu_pg_ms_k": _spent(pg10, pg90) * 1e6 / n, "load": load_before}


def run_bench(*, users: int, videos: int, seconds: float, concurrency: int, events: int,
              repeats: int, port: int, buses: tuple[str, ...] = BUSES,
              out_dir: Path | None = None) -> Path:
    """Both demonstrations, ``repeats`` times each (1 and 2 alternating); the report."""
    from benchmarks.servers import start_postgres

    load_start = os.getloadavg()
    root = ROOT / f"{users}u-{videos}v"  # one world per size, reused by later runs
    ids = prepare(root, users, videos)
    api = []
    for _ in range(repeats):
        for n in (1, 2):
            api.append(api_run(root, ids, n, seconds, concurrency, port))
    pg_root = Path(tempfile.mkdtemp(prefix="reelrank-pg-"))
    server = start_postgres(pg_root)
    bus = []
    try:
        for name in buses:
            for _ in range(repeats):
                for n in (1, 2):
                    bus.append(workers_run(server, n, events, name))
    finally:
        stop_all([server.proc], signal.SIGINT, timeout_s=30)
        shutil.rmtree(pg_root, ignore_errors=True)
    body = report_body(api, bus, users=users, videos=videos, seconds=seconds,
                       concurrency=concurrency, events=events, load_start=load_start,
                       load_end=os.getloadavg())
    return write_report("scaleout", "Scale-out: one process against two (API, workers)", body,
                        **({"results_dir": out_dir} if out_dir else {}))


def ratio(rows: list[dict], key: str, by: str) -> tuple[float, float, float]:
    """Two over one: the median of the per-repeat ratios, and their min and max."""
    ones = [r[key] for r in rows if r[by] == 1]
    twos = [r[key] for r in rows if r[by] == 2]
    ratios = [b / a for a, b in zip(ones, twos, strict=False) if a > 0]
    if not ratios:
        return float("nan"), float("nan"), float("nan")
    return float(np.median(ratios)), min(ratios), max(ratios)


def report_body(api: list[dict], bus: list[dict], *, users: int, videos: int, seconds: float,
                concurrency: int, events: int, load_start: tuple, load_end: tuple) -> str:
    cores = os.cpu_count() or 1
    api_rows = [[r["processes"], r["requests"], r["served_s"], r["p50_ms"], r["p99_ms"],
                 r["errors"], r["cpu_ms_req"], f"{r['busiest']:.0%}", r["load"]] for r in api]
    bus_rows = [[r["bus"], r["workers"], r["events"], r["events_s"], r["cpu_workers_ms_k"],
                 r["cpu_pg_ms_k"], r["load"]] for r in bus]
    a, a_lo, a_hi = ratio(api, "served_s", "processes")
    bus_ratios = []
    for name in dict.fromkeys(r["bus"] for r in bus):
        rows = [r for r in bus if r["bus"] == name]
        b, b_lo, b_hi = ratio(rows, "events_s", "workers")
        bus_ratios.append(f"**{name}: two over one {b:.2f}x** events/s (median of "
                          f"{len(rows) // 2} paired runs; range {b_lo:.2f}-{b_hi:.2f}).")
    bus_summary = "\n\n".join(bus_ratios)
    return f"""
Load average (1, 5, 15 min) at the start: {load_start[0]:.2f}, {load_start[1]:.2f}, \
{load_start[2]:.2f}; at the end: {load_end[0]:.2f}, {load_end[1]:.2f}, {load_end[2]:.2f} on \
{cores} cores (other jobs on the machine take their share: with a load above ~1 the second \
process competes with them, not only with the first).

## API: `reelrank serve api --workers 1` against `--workers 2`

`GET /api/v1/videos/{{id}}` (JWT, rate limit in Redis, SQLite read, signed media URLs) over \
random public videos of a {users:,}-user, {videos:,}-video synthetic world; closed loop, \
{concurrency} keep-alive connections (each reopened every {RECONNECT_EVERY} requests, so the \
kernel spreads them over the processes), {seconds:g} s per run after a 3 s warm-up; the client \
is this process (raw HTTP/1.1 on asyncio streams). `CPU ms/req`: CPU time of the API processes \
(the supervisor, the uvicorn workers, the embedded Redis they started) per request served; \
`busiest process`: the share of that CPU spent by the busiest one (with two workers sharing \
evenly, about half of the API's part).

{table(["API processes", "requests", "served/s", "p50 ms", "p99 ms", "errors", "CPU ms/req",
        "busiest process", "load"], api_rows)}

**Two over one: {a:.2f}x** served/s (median of {len(api) // 2} paired runs; range \
{a_lo:.2f}-{a_hi:.2f}).

## Workers: one consumer group, 1 against 2 `reelrank worker counters`

The workers join the `counters` group on each bus: `db` is the database log of an embedded \
PostgreSQL (`user.interaction`, 4 partitions keyed by user, split among the members by the \
platform's own group protocol), `kafka` a `tansu` broker (in memory, a fresh one per run; the \
same 4 partitions, split by Kafka's group protocol through aiokafka). Once the group has \
settled, {events:,} likes are published at once (one transaction on `db`, one batch per \
partition on `kafka`) and drained; events/s between 10 % and 90 % applied (each event: the \
counters update and the processed-id insert in one PostgreSQL transaction per batch). CPU per \
1,000 events of the workers and of the PostgreSQL server (all its backends).

{table(["bus", "workers", "events", "events/s", "CPU ms/1k workers", "CPU ms/1k PostgreSQL",
        "load"], bus_rows)}

{bus_summary}

On {cores} cores the ceiling of two over one is below 2: the client (API) or PostgreSQL \
(workers) and the machine's other jobs run on the same cores. The arithmetic in \
`docs/SCALING.md` uses the CPU per request and per event, which do not depend on the sharing.
"""
