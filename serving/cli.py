"""``reelrank serve api``, ``reelrank deploy`` and ``reelrank bench serve``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

MODEL_NAMES = {"ranker": "reelrank-ranker", "retrieval": "reelrank-retrieval"}


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
    workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes.")] = 1,
) -> None:
    """Serve /api/v1 (feeds included) until Ctrl-C; the ranker runs as configured
    (``REELRANK_RANKER_BACKEND=ray|local``)."""
    import uvicorn

    from core.config import get_settings
    from platform_services.storage.db import migrate

    settings = get_settings()
    if workers > 1 and settings.ranker_backend == "ray" and not settings.ray_address:
        typer.echo("error: several workers would each start their own local Ray; start one "
                   "(`ray start --head`) and set REELRANK_RAY_ADDRESS", err=True)
        raise typer.Exit(2)
    migrate(settings.database_url)
    serving_threads()
    uvicorn.run("serving.app:create_app", factory=True, host=host, port=port, workers=workers,
                limit_concurrency=settings.api_max_concurrency, log_level="warning")


def move_alias(model: str, alias: str, version: str = "latest") -> tuple[str, str, str | None]:
    """Point ``alias`` of ``model`` (ranker | retrieval | a registered name) at ``version``;
    returns (name, version, previous version). Raises ``MlflowException`` for a bad name or
    version."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from core.config import get_settings

    mlflow.set_tracking_uri(get_settings().mlflow_tracking_uri)
    name = MODEL_NAMES.get(model, model)
    client = MlflowClient()
    if version == "latest":
        versions = client.search_model_versions(f"name = '{name}'")
        if not versions:
            raise MlflowException(f"registered model {name!r} has no versions")
        version = str(max(int(v.version) for v in versions))
    previous = client.get_registered_model(name).aliases.get(alias)
    client.get_model_version(name, version)
    client.set_registered_model_alias(name, alias, version)
    return name, version, None if previous is None else str(previous)


def deploy(
    ctx: typer.Context,
    alias: Annotated[str | None, typer.Option(help="champion | challenger (or any alias).")]
    = None,
    model: Annotated[str, typer.Option(help="ranker | retrieval | a registered name.")]
    = "ranker",
    version: Annotated[str, typer.Option(help="Version number, or 'latest'.")] = "latest",
) -> None:
    """Point ALIAS of a registered model at VERSION; serving follows within model_poll_s."""
    if ctx.invoked_subcommand is not None:
        return
    if alias is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(0)
    from mlflow.exceptions import MlflowException

    try:
        name, version, before = move_alias(model, alias, version)
    except MlflowException as exc:
        typer.echo(f"error: {str(exc).splitlines()[0]}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"{name}@{alias} -> version {version}"
               + (f" (was {before})" if before and before != version else ""))


def bench_serve(
    out: Annotated[Path, typer.Option(help="Report file.")] = Path("benchmarks/results/serve.md"),
    videos: Annotated[int, typer.Option(min=1000, help="Catalog size.")] = 100_000,
    users: Annotated[int, typer.Option(min=100)] = 20_000,
    rates: Annotated[str, typer.Option(help="Comma-separated request rates (req/s).")]
    = "10,25,50,100,200",
    seconds: Annotated[float, typer.Option(help="Seconds per rate.")] = 10.0,
    quick: Annotated[bool, typer.Option(help="A small catalog and short runs (smoke).")]
    = False,
) -> None:
    """Load-test GET /api/v1/feed/for-you with the real models -> benchmarks/results/serve.md."""
    from serving.bench import run_bench

    path = run_bench(out, videos=videos, users=users,
                     rates=[int(r) for r in rates.split(",") if r.strip()],
                     seconds=seconds, quick=quick)
    typer.echo(f"wrote {path}")


def register(groups: dict[str, typer.Typer]) -> None:
    groups["serve"].command("api")(serve_api)
    groups["deploy"].callback(invoke_without_command=True)(deploy)
    groups["bench"].command("serve")(bench_serve)
