"""``reelrank serve api`` and ``reelrank deploy``."""

from __future__ import annotations

import os
from typing import Annotated

import typer


def serving_threads() -> None:
    """One thread per request for torch and FAISS: a request's work is small, and the cores
    belong to concurrent requests and the Ray replicas (uvicorn workers inherit the env)."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import faiss
    import torch

    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)


def serve_api(
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    workers: Annotated[int | None, typer.Option(
        min=1, help="API worker processes (default: api_workers, else the cores).")] = None,
    feed: Annotated[bool | None, typer.Option(
        "--feed/--no-feed", help="Serve the feeds (default: api_feed); --no-feed: a "
        "platform-only API that loads no model.")] = None,
) -> None:
    """Serve /api/v1 (feeds included) until Ctrl-C; the ranker runs as configured
    (``REELRANK_RANKER_BACKEND=ray|local``), one Ray Serve deployment for all workers."""
    from core.config import get_settings
    from platform_services.storage.db import migrate
    from serving.launch import run_api

    if feed is not None:  # through the environment: the worker processes read it there
        os.environ["REELRANK_API_FEED"] = str(feed).lower()
        get_settings.cache_clear()
    settings = get_settings()
    migrate(settings.database_url)
    serving_threads()
    run_api(settings, host, port, workers)


def deploy(
    ctx: typer.Context,
    alias: Annotated[str | None, typer.Option(help="champion | challenger (or any alias).")]
    = None,
    model: Annotated[str, typer.Option(help="ranker | retrieval | a registered name.")]
    = "ranker",
    version: Annotated[str, typer.Option(help="Version number, or 'latest'.")] = "latest",
    force: Annotated[bool, typer.Option(
        help="Deploy even if the pre-deploy gate refuses (worse or incomparable metrics).")]
    = False,
) -> None:
    """Point ALIAS of a registered model at VERSION after the pre-deploy gate (its primary
    offline metric vs the champion's, same data set and split); serving follows within
    model_poll_s. `reelrank deploy rollback` moves an alias back."""
    if ctx.invoked_subcommand is not None:
        return
    if alias is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(0)
    from mlflow.exceptions import MlflowException

    from core.config import get_settings
    from training import registry
    from training.deploy import DeployRefused
    from training.deploy import deploy as run_deploy

    settings = get_settings()
    registry.connect(settings.mlflow_tracking_uri)
    try:
        name, version, before, gate = run_deploy(model, alias, version,
                                                 settings.deploy_max_regression, force)
    except (MlflowException, DeployRefused) as exc:
        typer.echo(f"error: {str(exc).splitlines()[0]}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"gate {'passed' if gate.passed else 'forced past'}: {gate.reason}")
    typer.echo(f"{name}@{alias} -> version {version}"
               + (f" (was {before})" if before and before != version else ""))


def rollback(
    model: Annotated[str, typer.Option(help="ranker | retrieval | a registered name.")],
    alias: Annotated[str, typer.Option(help="The alias to move back.")] = "champion",
) -> None:
    """Point ALIAS back at the version it pointed at before (the alias history is kept as a
    registered-model tag); no gate: that version served before."""
    from mlflow.exceptions import MlflowException

    from core.config import get_settings
    from training import registry
    from training.deploy import DeployRefused
    from training.deploy import rollback as run_rollback

    registry.connect(get_settings().mlflow_tracking_uri)
    try:
        name, version, moved_from = run_rollback(model, alias)
    except (MlflowException, DeployRefused) as exc:
        typer.echo(f"error: {str(exc).splitlines()[0]}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"{name}@{alias} -> version {version} (rolled back from {moved_from})")


def register(groups: dict[str, typer.Typer]) -> None:
    groups["serve"].command("api")(serve_api)
    groups["deploy"].callback(invoke_without_command=True)(deploy)
    groups["deploy"].command("rollback")(rollback)
