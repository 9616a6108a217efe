"""The reliability runs the tests and ``reelrank bench product`` share: the processes, the
world and the soak, against the API, the outbox relay and the counters worker as real processes.

- :func:`soak`: a steady open-loop mix of writes and reads (:mod:`benchmarks.loadgen`
  ``--plan``) for a given time; the RSS of every process is sampled all along, and the result
  says whether memory stayed flat (the RSS trend over the last 80 % of the run below a bound,
  :func:`flat`).

The fault scenarios, on the same processes and world, are in :mod:`benchmarks.faults`.
"""

from __future__ import annotations

import os
import random
import secrets
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import insert

from benchmarks.servers import embedded_env, free_port
from benchmarks.social import _healthy, api_command, load, summarize
from core.cli import CLI
from core.clock import utcnow
from platform_services.storage import procs
from platform_services.storage.db import make_engine, migrate
from platform_services.storage.models import User, Video

FLAT_MIB_PER_MIN = 4.0  # RSS slope over the last 80 % of a soak, per process, at most ...
NOISE_MIB = 8.0  # ... or this much growth in all: one allocator arena step of a short run


# --- processes -------------------------------------------------------------------------------


def rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` in MiB (Linux ``/proc``); NaN once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


class Services:
    """The API, the relay and the counters worker as processes of this one, each restartable
    (what an orchestrator does after a crash)."""

    def __init__(self, root: Path, env: dict[str, str], port: int):
        self.root, self.env, self.port = root, os.environ | env, port
        self.procs: dict[str, subprocess.Popen] = {}

    def _cmd(self, name: str) -> list[str]:
        if name == "api":
            return api_command(self.port, workers=1)  # one process: the faults kill -9 it
        return [*CLI, "worker", name]

    def start(self, name: str) -> None:
        self.procs[name] = procs.spawn(self._cmd(name), log=self.root / f"{name}.log",
                                       env=self.env)
        if name == "api":
            procs.wait_until(lambda: _healthy(self.port), self.procs[name], what="API",
                             log=self.root / "api.log", timeout_s=120)

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self.procs.items()}

    def stop(self) -> None:
        for p in reversed(list(self.procs.values())):
            procs.stop(p, signal.SIGTERM, timeout_s=30)


@contextmanager
def services(root: Path, env: dict[str, str], port: int) -> Iterator[Services]:
    svc = Services(root, env, port)
    try:
        for name in ("relay", "counters", "api"):
            svc.start(name)
        yield svc
    finally:
        svc.stop()


class RssSampler(threading.Thread):
    """Samples the RSS of ``pids()`` every ``every_s`` seconds until stopped."""

    def __init__(self, pids: Callable[[], dict[str, int]], every_s: float = 1.0):
        super().__init__(daemon=True)
        self.pids, self.every_s = pids, every_s
        self.samples: list[dict[str, float]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        t0 = time.monotonic()
        while not self.halt.is_set():
            self.samples.append({"t": time.monotonic() - t0}
                                | {k: rss_mib(p) for k, p in self.pids().items()})
            self.halt.wait(self.every_s)


def rss_slope(samples: list[dict[str, float]], name: str, skip: float = 0.2) -> float:
    """Least-squares slope of ``name``'s RSS in MiB per minute over the samples after the
    first ``skip`` of the run (start-up and warm-up allocations)."""
    t = np.array([s["t"] for s in samples])
    y = np.array([s[name] for s in samples])
    keep = (t >= t[-1] * skip) & np.isfinite(y)
    if keep.sum() < 3:
        return float("nan")
    return float(np.polyfit(t[keep] / 60, y[keep], 1)[0])


# --- the world -------------------------------------------------------------------------------


@dataclass
class World:
    """Users and public videos seeded into a fresh database, and a token per user."""

    url: str
    users: int
    videos: int
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    def seed(self) -> None:
        migrate(self.url)
        engine = make_engine(self.url)
        at = utcnow()
        try:
            with engine.begin() as conn:
                conn.execute(insert(User), [
                    {"id": u, "username": f"user{u}", "email": f"user{u}@rel.invalid",
                     "password_hash": "!rel", "created_at": at}
                    for u in range(1, self.users + 1)])
                conn.execute(insert(Video), [
                    {"id": v, "owner_id": 1 + v % self.users, "title": f"video {v}",
                     "visibility": "public", "status": "ready", "duration_ms": 15_000,
                     "created_at": at, "updated_at": at} for v in range(1, self.videos + 1)])
        finally:
            engine.dispose()

    def tokens(self) -> list[str]:
        from core.config import load_settings
        from platform_services.auth import issue_token

        settings = load_settings(jwt_secret=self.secret)
        return [issue_token(settings, u, ttl_s=4 * 3600) for u in range(1, self.users + 1)]


# --- soak ------------------------------------------------------------------------------------


def soak_plan(world: World, rate: float, seconds: float, rng: random.Random) -> list[list]:
    """A steady mix: likes and unlikes, follows, and the reads an app makes between them."""
    out = []
    for _ in range(int(rate * seconds)):
        u = rng.randrange(world.users)
        v, t = rng.randint(1, world.videos), rng.randint(1, world.users)
        kind = rng.random()
        if kind < 0.3:
            out.append(["POST" if rng.random() < 0.8 else "DELETE",
                        f"/api/v1/videos/{v}/like", u, "like"])
        elif kind < 0.45 and t != u + 1:
            out.append(["POST" if rng.random() < 0.8 else "DELETE",
                        f"/api/v1/users/{t}/follow", u, "follow"])
        elif kind < 0.65:
            out.append(["GET", f"/api/v1/users/{t}", u, "read"])
        elif kind < 0.8:
            out.append(["GET", f"/api/v1/videos/{v}/comments?page_size=20", u, "read"])
        elif kind < 0.9:
            out.append(["GET", "/api/v1/notifications", u, "read"])
        else:
            out.append(["GET", f"/api/v1/users/{t}/followers", u, "read"])
    return out


def soak(root: Path, seconds: float, rate: float = 20.0, port: int | None = None) -> dict:
    """Run the soak; its numbers: requests, errors, latency, RSS samples and slopes."""
    root.mkdir(parents=True, exist_ok=True)
    world = World(f"sqlite:///{root.resolve()}/reelrank.db", users=300, videos=300)
    world.seed()
    port = port or free_port()
    tokens = world.tokens()
    plan = soak_plan(world, rate, seconds, random.Random(5))
    env = embedded_env(root, database_url=world.url, jwt_secret=world.secret)
    with services(root, env, port) as svc:
        sampler = RssSampler(svc.pids, every_s=max(1.0, seconds / 120))
        sampler.start()
        try:
            run = load(root, port, tokens, plan, int(rate))
        finally:
            sampler.halt.set()
            sampler.join()
    s = summarize(run)
    slopes = {name: rss_slope(sampler.samples, name) for name in ("api", "relay", "counters")}
    return {"seconds": seconds, "rate": rate, "summary": s, "statuses": dict(Counter(
        r.get("status", 0) for r in run["records"])), "samples": sampler.samples,
        "slopes": slopes, "flat": all(flat(v, seconds) for v in slopes.values())}


def flat(slope_mib_per_min: float, seconds: float) -> bool:
    """Whether an RSS trend is flat: at most :data:`FLAT_MIB_PER_MIN`, or a trend line rising
    at most :data:`NOISE_MIB` over the measured 80 % (a short run's slope is mostly noise)."""
    window_min = 0.8 * seconds / 60
    return abs(slope_mib_per_min) * window_min <= max(FLAT_MIB_PER_MIN * window_min, NOISE_MIB)
