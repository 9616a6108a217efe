"""``reelrank demo`` steps after the world is loaded: train, index, deploy, serve.

Each step is the CLI command a person would run, called in-process on the embedded defaults.
The last one starts the workers and the API (the ranker on Ray Serve), prints a request to
paste, and on Ctrl-C stops the API (which stops Ray Serve and Ray) and then the workers.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import typer

from core.config import get_settings

DATASET = "synth"


def _data() -> Path:
    return Path(get_settings().data_dir) / DATASET


def train_retrieval(epochs: int = 10, variant: str = "content") -> None:
    """Train the two-tower on the demo world, register it, build its FAISS index."""
    from candidate_gen.retrieval_cli import index_build
    from training.retrieval.cli import train_retrieval as train

    train(dataset=DATASET, data=_data(), epochs=epochs, variant=variant, progress=False)
    index_build(model="models:/reelrank-retrieval/latest")


def build_features() -> None:
    """Batch feature snapshots of the world, registered and materialized online."""
    from features.cli import build, materialize

    build(dataset=DATASET)
    materialize()


def train_ranker(**options: object) -> None:
    """Train the multi-task ranker on the point-in-time training set and register it;
    ``options`` go to ``reelrank train ranker`` (e.g. ``epochs``). The baselines (LightGBM,
    single-task) are left to ``reelrank train ranker`` and the bench: the demo serves."""
    from training.ranker.cli import train_ranker as train

    defaults = {"progress": False, "lightgbm": False, "single_task": ""}
    train(dataset=DATASET, data=_data(), **(defaults | options))  # type: ignore[arg-type]


def deploy_champions() -> None:
    """Point both champions at the newest versions (a re-run of the demo moves them)."""
    from training import registry

    registry.connect(get_settings().mlflow_tracking_uri)
    for model in ("retrieval", "ranker"):
        name, version, _ = registry.move_alias(model, "champion")
        typer.echo(f"{name}@champion -> version {version}")


def _demo_user() -> int:
    """A user with follows and history, so every source has something to show."""
    from sqlalchemy import func, select

    from platform_services.storage.db import make_engine
    from platform_services.storage.models import Follow

    engine = make_engine(get_settings().database_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(
                select(Follow.follower_id).group_by(Follow.follower_id)
                .order_by(func.count().desc()).limit(1)).scalar() or 0)
    finally:
        engine.dispose()


def _announce(base: str, token: str, ready: threading.Event) -> None:
    for _ in range(600):
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=1):
                break
        except OSError:
            time.sleep(0.5)
    else:
        return
    ready.set()
    typer.secho("\nreelrank is serving. Try the for-you feed:\n", bold=True)
    typer.echo(f"  curl -s -H 'Authorization: Bearer {token}' \\\n"
               f"    '{base}/api/v1/feed/for-you?page_size=5' | python3 -m json.tool\n")
    typer.echo("Then pass the response's next_cursor as &cursor=... for the next page.")
    typer.echo("Also /api/v1/feed/trending?time_range=7d and /api/v1/feed/following.")
    typer.echo("Ctrl-C stops the API, Ray Serve, Ray and the workers.\n")


def serve() -> None:
    """Workers + API (at ``api_base_url``, ``api_workers`` processes) with the ranker on Ray
    Serve, until Ctrl-C."""
    from core.cli import WORKERS  # imported here: importing it registers every command
    from platform_services.auth import issue_token
    from serving.cli import serving_threads
    from serving.launch import run_api

    settings = get_settings()
    url = urlsplit(settings.api_base_url)
    host, port = url.hostname or "127.0.0.1", url.port or 8000
    exe = [sys.executable, "-c", "from core.cli import main; main()"]
    workers = [subprocess.Popen([*exe, "worker", w]) for w in WORKERS]
    token = issue_token(settings, _demo_user(), ttl_s=24 * 3600)
    serving_threads()
    threading.Thread(target=_announce, args=(f"http://{host}:{port}", token, threading.Event()),
                     daemon=True).start()
    try:
        run_api(settings, host, port)  # returns after Ctrl-C and a clean lifespan shutdown
    finally:
        for p in workers:
            p.send_signal(signal.SIGTERM)
        for p in workers:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        typer.echo("stopped: API, Ray Serve, Ray and the workers")
