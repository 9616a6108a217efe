"""``reelrank data ...``: import real data sets, generate the synthetic world, describe them.

Bad input ends with one ``error:`` line naming the file and the column, exit code 2, and no
data set written.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from core.config import get_settings
from core.dataset_schema import DataError
from training.datasets import kuairand, microlens, store
from training.datasets.synth import SynthConfig, config_meta, generate, recent_start


@contextmanager
def _clean_errors() -> Iterator[None]:
    try:
        yield
    except DataError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _show(name: str) -> None:
    ds = store.load_dataset(name, get_settings().data_dir)
    typer.echo(store.format_description(store.describe(ds)))


def _import(
    source: str, path: Path, name: str, load: Callable[[Path], dict[str, Any]], attribution: str
) -> None:
    with _clean_errors():
        started = time.perf_counter()
        tables = load(path)
        target = store.write_dataset(
            name, tables, f"{source} {path}", {"path": str(path), "attribution": attribution},
            root=get_settings().data_dir,
        )
        typer.echo(f"imported {source} into {target} in {time.perf_counter() - started:.1f} s")
        _show(name)


def import_kuairand(
    path: Annotated[Path, typer.Argument(help="KuaiRand directory, e.g. ../shared/data/kuairand")],
    name: Annotated[str, typer.Option(help="Data set name under the data dir.")] = "kuairand",
) -> None:
    """Import KuaiRand (CC BY-SA 4.0, Gao et al. CIKM 2022): exposures with real negatives."""
    _import("kuairand", path, name, kuairand.load, "KuaiRand, Gao et al. CIKM 2022, CC BY-SA 4.0")


def import_microlens(
    path: Annotated[
        Path, typer.Argument(help="MicroLens directory, e.g. ../shared/data/microlens50k")
    ],
    name: Annotated[str, typer.Option(help="Data set name under the data dir.")] = "microlens",
) -> None:
    """Import MicroLens-50K (research use): watch sequences and titles, no timestamps."""
    _import("microlens", path, name, microlens.load, "MicroLens, Ni et al. 2023, research use")


def synth(
    users: Annotated[int, typer.Option(min=1, help="Number of users.")] = 2_000,
    videos: Annotated[int, typer.Option(min=1, help="Number of videos.")] = 3_000,
    days: Annotated[int, typer.Option(min=1, help="Days of simulated sessions.")] = 7,
    seed: Annotated[int, typer.Option(help="The same seed gives the same data.")] = 0,
    creators: Annotated[int | None, typer.Option(min=1, help="Default: videos / 20.")] = None,
    topics: Annotated[int, typer.Option(min=1, help="Number of topics (at most 20).")] = 20,
    name: Annotated[str, typer.Option(help="Data set name under the data dir.")] = "synth",
) -> None:
    """Generate the synthetic world (same schema as the real adapters)."""
    try:
        cfg = SynthConfig(
            n_users=users,
            n_videos=videos,
            days=days,
            seed=seed,
            n_creators=creators,
            n_topics=topics,
        )
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    build_synth(cfg, name)


def build_synth(cfg: SynthConfig, name: str) -> None:
    with _clean_errors():
        started = time.perf_counter()
        target = store.write_dataset(name, generate(cfg), "synth", {"config": config_meta(cfg)},
                                     root=get_settings().data_dir)
        typer.echo(f"generated synth world into {target} in {time.perf_counter() - started:.1f} s")
        _show(name)


def describe(
    name: Annotated[str | None, typer.Argument(help="Data set (all when omitted).")] = None,
) -> None:
    """Rows, users, items, time range, event and label rates of data sets."""
    with _clean_errors():
        root = get_settings().data_dir
        names = [name] if name else store.list_datasets(root)
        if not names:
            typer.echo(f"no data sets in {root}")
        for i, n in enumerate(names):
            if i:
                typer.echo()
            _show(n)


def register(groups: dict[str, typer.Typer]) -> None:
    data = groups["data"]
    imports = typer.Typer(help="Import a real data set from its directory.", no_args_is_help=True)
    imports.command("kuairand")(import_kuairand)
    imports.command("microlens")(import_microlens)
    data.add_typer(imports, name="import")
    data.command("synth")(synth)
    data.command("describe")(describe)


KUAIRAND_DEMO_USERS = 8000  # log users of the KuaiRand demo world: minutes on 2 cores


def demo_step() -> None:
    """Build the default synthetic world, ending today, into the data dir and describe it;
    with ``demo_data`` kuairand, the KuaiRand world of ``demo_data_path`` instead."""
    settings = get_settings()
    if settings.demo_data == "kuairand":
        from training.datasets.kuairand_world import build

        with _clean_errors():
            meta = build(settings.demo_data_path or settings.demo_kuairand_dir, "kuairand",
                         settings.data_dir, KUAIRAND_DEMO_USERS)
        typer.echo(f"kuairand world: {meta['log_users']:,} sampled log users, creators as "
                   f"users from id {meta['creator_offset']:,}, shifted {meta['shift_days']} "
                   f"days; rows {meta['rows']}")
        _show("kuairand")
        return
    build_synth(SynthConfig(start=recent_start(SynthConfig.days)), "synth")
