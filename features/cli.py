"""``reelrank features ...``.

The usual sequence on a data set (``reelrank data synth`` makes one)::

    reelrank features apply                  # feature_store.yaml + registry
    reelrank features build --dataset synth  # batch snapshots -> <repo>/data/*.parquet
    reelrank features materialize            # newest snapshot per entity -> online store
    reelrank worker features                 # real-time features from the event bus
    reelrank features training-set --dataset synth --label click,long_view,like --out t.parquet

Feast is imported inside the commands: it takes seconds, and ``reelrank --help`` should not.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from core.config import get_settings


@contextmanager
def _clean_errors() -> Iterator[None]:
    """Known bad input ends with one ``error:`` line and exit code 2."""
    from features.store import FeatureStoreError

    try:
        yield
    except (FeatureStoreError, FileNotFoundError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def load_tables(dataset: str) -> dict[str, Any]:
    """A data set's tables read straight from ``<data_dir>/<name>/*.parquet`` (or a path)."""
    import pandas as pd

    path = Path(dataset)
    if not (path / "interactions.parquet").is_file():
        path = Path(get_settings().data_dir) / dataset
    if not (path / "interactions.parquet").is_file():
        raise FileNotFoundError(f"no data set at {path} (make one with `reelrank data synth`)")
    return {
        t: pd.read_parquet(path / f"{t}.parquet")
        for t in ("interactions", "items", "users", "follows")
        if (path / f"{t}.parquet").is_file()
    }


def apply() -> None:
    """Write feature_store.yaml from the settings and register entities and views."""
    from features.store import apply_repo, online_kind, repo_dir

    with _clean_errors():
        settings = get_settings()
        apply_repo(settings)
        typer.echo(f"applied {repo_dir(settings)} (online store: {online_kind(settings)})")


def build(
    dataset: Annotated[str, typer.Option(help="Data set name under the data dir, or a path.")],
    freq: Annotated[str, typer.Option(help="Snapshot interval (pandas offset: 1D, 6h).")] = "1D",
) -> None:
    """Compute the batch views' point-in-time snapshots from a data set's log."""
    from features.batch import build_features, write_features
    from features.store import apply_repo, repo_dir

    with _clean_errors():
        settings = get_settings()
        started = time.perf_counter()
        tables = load_tables(dataset)
        feats = build_features(
            tables["interactions"], tables["items"], tables["users"], tables.get("follows"), freq
        )
        write_features(repo_dir(settings), feats)
        apply_repo(settings)
        rows = ", ".join(f"{k} {v:,}" for k, v in feats.meta["rows"].items())
        typer.echo(f"built {rows} rows in {time.perf_counter() - started:.1f} s")


def _when(value: str | None) -> datetime | None:
    if value is None:
        return None
    ts = datetime.fromisoformat(value)
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def materialize(
    start: Annotated[str | None, typer.Option(help="ISO time (default: first snapshot).")] = None,
    end: Annotated[str | None, typer.Option(help="ISO time (default: now).")] = None,
) -> None:
    """Load the newest snapshot per entity between start and end into the online store."""
    from features.store import materialize_batch

    with _clean_errors():
        started = time.perf_counter()
        rows = materialize_batch(get_settings(), _when(start), _when(end))
        seconds = time.perf_counter() - started
        typer.echo(f"materialized {rows:,} rows in {seconds:.1f} s ({rows / seconds:,.0f} rows/s)")


def training_set(
    dataset: Annotated[str, typer.Option(help="Data set name under the data dir, or a path.")],
    out: Annotated[Path, typer.Option(help="Parquet file to write.")],
    label: Annotated[str, typer.Option(help="Comma-separated labels.")] = "click,long_view,like",
) -> None:
    """One row per logged impression with its features as of the impression's time."""
    from features.store import open_store, read_meta
    from features.training_set import build_training_set

    with _clean_errors():
        settings = get_settings()
        started = time.perf_counter()
        tables = load_tables(dataset)
        frame = build_training_set(
            open_store(settings),
            tables["interactions"],
            tables["items"],
            [s.strip() for s in label.split(",") if s.strip()],
            read_meta(settings),
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(out, index=False)
        typer.echo(
            f"wrote {len(frame):,} rows x {frame.shape[1]} columns to {out} "
            f"in {time.perf_counter() - started:.1f} s"
        )


def get(
    user: Annotated[int, typer.Option(help="User id.")],
    videos: Annotated[str, typer.Option(help="Comma-separated video ids.")] = "",
) -> None:
    """Print what the online read path returns for a user and candidate videos."""
    from features.online import FeatureReader

    with _clean_errors():
        ids = [int(v) for v in videos.split(",") if v.strip()]
        reader = FeatureReader(get_settings(), timeout_ms=5_000)
        feats = reader.get(user, ids)
        for k, v in feats.user.items():
            typer.echo(f"{k:24} {v}")
        if ids:
            typer.echo(feats.items.T.to_string())


def register(groups: dict[str, typer.Typer]) -> None:
    features = groups["features"]
    features.command("apply")(apply)
    features.command("build")(build)
    features.command("materialize")(materialize)
    features.command("training-set")(training_set)
    features.command("get")(get)
