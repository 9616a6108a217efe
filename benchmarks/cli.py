"""``reelrank bench NAME``: each command runs one benchmark module and writes its report
under ``benchmarks/results/``. The modules are imported inside the commands: they pull in
torch, FAISS or Feast, and ``reelrank --help`` should not.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from training.ranker.cli import clean_errors as ranker_errors
from training.retrieval.cli import clean_errors as retrieval_errors
from training.retrieval.cli import set_threads


def bench_bus(
    backends: Annotated[str, typer.Option(help="Comma-separated.")]
    = "db-sqlite,db-postgres,kafka",
    events: Annotated[int, typer.Option(help="Events per throughput run.")] = 20_000,
) -> None:
    """End-to-end events/s and latency per bus backend → benchmarks/results/bus.md."""
    from benchmarks.bus import bench_bus as run

    run(backends, events)


def bench_features(
    candidates: Annotated[int, typer.Option(help="Candidate videos per read.")] = 500,
    reads: Annotated[int, typer.Option(help="Timed reads per store and path.")] = 300,
    rate: Annotated[int, typer.Option(help="Events per second for the freshness run.")] = 1000,
    seconds: Annotated[float, typer.Option(help="Length of the freshness run.")] = 15.0,
    out: Annotated[Path, typer.Option(help="Report file.")] = Path(
        "benchmarks/results/features.md"
    ),
) -> None:
    """Online read latency (SQLite, Redis), freshness at a given event rate, materialization."""
    from benchmarks.features import run_bench

    run_bench(out, candidates=candidates, reads=reads, rate=rate, seconds=seconds)
    typer.echo(f"wrote {out}")


def bench_ranker(
    data: Annotated[Path, typer.Option(help="KuaiRand directory.")] = Path(
        "../shared/data/kuairand"),
    seeds: Annotated[int, typer.Option(min=1, help="Training seeds (mean and spread).")] = 3,
    threads: Annotated[int, typer.Option(min=1)] = 2,
    out: Annotated[Path, typer.Option(help="Results directory.")] = Path("benchmarks/results"),
    test_day: Annotated[str | None, typer.Option(
        help="The test day (UTC+8); default: the log's last day (04-30 on KuaiRand-Pure). An "
             "earlier day runs the same protocol on the days before it and tests on it alone "
             "(ranker-<day>.md): a check that never reads the last day.")] = None,
) -> None:
    """Ranker vs LightGBM vs single-task on KuaiRand (test: the last day); latency for 500."""
    from benchmarks.ranker import run_bench

    with ranker_errors():
        path = run_bench(data, seeds=seeds, threads=threads, results_dir=out, test_day=test_day)
        typer.echo(f"wrote {path}")


def bench_retrieval(
    kuairand: Annotated[Path, typer.Option(help="KuaiRand directory (raw or imported).")]
    = Path("../shared/data/kuairand"),
    microlens: Annotated[Path, typer.Option(help="MicroLens directory (raw or imported).")]
    = Path("../shared/data/microlens50k"),
    out: Annotated[Path, typer.Option()] = Path("benchmarks/results/retrieval.md"),
    kuairand_train_end: Annotated[str, typer.Option(
        help="KuaiRand's first test day (UTC+8): training and validation before it, the test "
             "from it to the log's end (a later log's days too).")] = "2022-04-29",
    ann_items: Annotated[int, typer.Option(min=1000)] = 1_000_000,
    threads: Annotated[int | None, typer.Option()] = None,
    quick: Annotated[bool, typer.Option(help="Few epochs, no grids: a smoke run.")] = False,
    seeds: Annotated[int, typer.Option(min=1, max=10, help="Refit seeds per model.")] = 3,
    sections: Annotated[str, typer.Option(help="Comma-separated: kuairand,microlens,cold.")]
    = "kuairand,microlens,cold",
    max_epochs: Annotated[int | None, typer.Option(min=1, max=100, help="Two-tower epochs "
                                                   "at most (default 20).")] = None,
    resume: Annotated[bool, typer.Option(help="Read back the fits an interrupted run of the "
                                         "same benchmark finished (same data, settings and "
                                         "code); --no-resume fits everything again.")] = True,
    checkpoint: Annotated[Path, typer.Option(help="Where finished fits are kept (gzip JSON "
                                             "lines), under the ignored var/: an "
                                             "interrupted run resumes from them.")]
    = Path("var/checkpoints/retrieval-fits.jsonl.gz"),
    tuning_fits: Annotated[Path, typer.Option(help="Where finished tuning fits are kept (JSON "
                                              "lines, a few numbers each, committed): a run "
                                              "resumes from them on a fresh clone too.")]
    = Path("benchmarks/results/retrieval-tuning-fits.jsonl"),
) -> None:
    """Quality of every retrieval model and baseline, training cost, ANN search -> markdown."""
    from benchmarks.retrieval import bench
    from core.config import get_settings

    set_threads(threads)
    settings = get_settings()
    if not resume:
        checkpoint.unlink(missing_ok=True)
        tuning_fits.unlink(missing_ok=True)
    with retrieval_errors():
        path = bench(kuairand, microlens, out, ann_items, threads or os.cpu_count() or 1, quick,
                     cache_dir=settings.path("content"), seeds=seeds,
                     sections_run=tuple(x.strip() for x in sections.split(",") if x.strip()),
                     max_epochs=max_epochs, checkpoint_path=checkpoint,
                     tuning_path=tuning_fits, kuairand_train_end=kuairand_train_end)
        typer.echo(f"wrote {path}")


def bench_serve(
    out: Annotated[Path, typer.Option(help="Report file.")] = Path("benchmarks/results/serve.md"),
    videos: Annotated[int, typer.Option(min=1000, help="Catalog size.")] = 100_000,
    users: Annotated[int, typer.Option(min=100)] = 20_000,
    rates: Annotated[str, typer.Option(
        help="Comma-separated first-page rates (req/s); cached pages at 5x.")]
    = "25,50,100,200,300",
    seconds: Annotated[float, typer.Option(help="Seconds per rate.")] = 10.0,
    quick: Annotated[bool, typer.Option(help="A small catalog and short runs (smoke).")]
    = False,
    workers: Annotated[int | None, typer.Option(
        min=1, help="API worker processes (default: the API's own default, the cores).")]
    = None,
) -> None:
    """Load-test GET /api/v1/feed/for-you with the real models -> benchmarks/results/serve.md."""
    from benchmarks.serve import run_bench

    path = run_bench(out, videos=videos, users=users,
                     rates=[int(r) for r in rates.split(",") if r.strip()],
                     seconds=seconds, quick=quick, workers=workers)
    typer.echo(f"wrote {path}")


def bench_experiments_analysis(
    users: Annotated[int, typer.Option(min=100, help="Users (about 15 pages each).")] = 65_000,
    days: Annotated[int, typer.Option(min=1, max=60)] = 7,
    repeats: Annotated[int, typer.Option(min=1, max=10)] = 3,
) -> None:
    """Time of ``experiment analyze`` for ~1M exposure rows -> experiments-analysis.md."""
    from benchmarks.experiments_analysis import run_bench

    typer.echo(f"wrote {run_bench(users, days, repeats)}")


def bench_experiments(
    users: Annotated[int, typer.Option(min=2, help="Simulated users.")] = 2000,
    world_users: Annotated[int, typer.Option(min=100, help="Users of the world.")] = 2500,
    videos: Annotated[int, typer.Option(min=100, help="Videos of the world.")] = 3000,
    port: Annotated[int, typer.Option(min=1, max=65535, help="The API's port.")] = 8023,
    concurrency: Annotated[int, typer.Option(min=1, max=256)] = 8,
    seed: Annotated[int, typer.Option()] = 0,
    kuairand: Annotated[Path, typer.Option(help="KuaiRand, to fit the simulated users on.")]
    = Path("../shared/data/kuairand"),
) -> None:
    """Simulated A/B test two-tower + ranker vs popularity -> experiments.md."""
    from benchmarks.experiments import run_bench

    if users > world_users:
        typer.echo("error: --users: at most --world-users simulated users", err=True)
        raise typer.Exit(2)
    path = run_bench(users, world_users, videos, port=port, concurrency=concurrency, seed=seed,
                     kuairand=kuairand)
    typer.echo(f"wrote {path}")


def bench_comments(
    out: Annotated[Path, typer.Option(help="Report file.")] = Path(
        "benchmarks/results/comments.md"),
    comments: Annotated[int, typer.Option(min=1000)] = 10_000,
    roots: Annotated[int, typer.Option(min=100)] = 1_000,
    reads: Annotated[int, typer.Option(min=10)] = 200,
    inserts: Annotated[int, typer.Option(min=10)] = 100,
) -> None:
    """Comment-tree storage models on SQLite and PostgreSQL -> benchmarks/results/comments.md."""
    from benchmarks.comments import run_bench

    typer.echo(f"wrote {run_bench(out, comments, roots, reads, inserts)}")


def bench_transcode(
    clips: Annotated[Path, typer.Option(help="Folder of the real clips.")]
    = Path("../shared/data/videos"),
    presets: Annotated[str, typer.Option(help="Comma-separated x264 presets to measure.")]
    = "veryfast,superfast,ultrafast",
    threads: Annotated[str, typer.Option(help="Comma-separated x264 thread counts (0: auto).")]
    = "0",
    repeats: Annotated[int, typer.Option(min=1, help="Runs per clip and setting.")] = 3,
    out: Annotated[Path, typer.Option(help="Results directory.")] = Path("benchmarks/results"),
) -> None:
    """Transcode speed per clip and preset, upload -> recommendable seconds -> transcode.md."""
    from benchmarks.transcode import run_bench

    path = run_bench(clips, [p.strip() for p in presets.split(",") if p.strip()],
                     [int(t) for t in threads.split(",") if t.strip()], repeats, out)
    typer.echo(f"wrote {path}")


def bench_ray_hop(
    calls: Annotated[int, typer.Option(min=10, help="Timed calls per path and round.")] = 200,
    candidates: Annotated[int, typer.Option(min=1)] = 500,
    rounds: Annotated[int, typer.Option(min=1, help="Interleaved rounds per path.")] = 3,
    out: Annotated[Path, typer.Option(help="Report file.")] = Path(
        "benchmarks/results/ray_hop.md"),
) -> None:
    """Cost of one ranker call to Ray Serve replicas per path (handles, socket) -> ray_hop.md."""
    from benchmarks.ray_hop import run_bench

    typer.echo(f"wrote {run_bench(calls, candidates, rounds, out)}")


def bench_api_overhead(
    requests: Annotated[int, typer.Option(min=100, help="Timed requests per round.")] = 2000,
    rounds: Annotated[int, typer.Option(min=1)] = 5,
    out: Annotated[Path, typer.Option(help="Report file.")] = Path(
        "benchmarks/results/api_overhead.md"),
) -> None:
    """Event-loop CPU per API request, with the rate limiter's round trip, the API's middleware
    and the route order taken out one at a time -> api_overhead.md."""
    from benchmarks.api_overhead import run_bench

    typer.echo(f"wrote {run_bench(requests, rounds, out)}")


def bench_social(
    out: Annotated[Path, typer.Option(help="Report file.")] = Path(
        "benchmarks/results/social.md"),
    backends: Annotated[str, typer.Option(help="Comma-separated: sqlite, postgres.")]
    = "sqlite,postgres",
    port: Annotated[int, typer.Option(help="Port of the API under test.")] = 8024,
    quick: Annotated[bool, typer.Option(help="A small world and 2-second runs (smoke).")]
    = False,
) -> None:
    """Likes/follows under open-loop load (counters checked exact), comment-thread reads of a
    10,000-comment video, on SQLite and PostgreSQL -> benchmarks/results/social.md."""
    from benchmarks.social import run_bench

    names = tuple(b.strip() for b in backends.split(",") if b.strip())
    if unknown := set(names) - {"sqlite", "postgres"}:
        raise typer.BadParameter(f"unknown backends {sorted(unknown)}", param_hint="--backends")
    typer.echo(f"wrote {run_bench(out, quick=quick, backends=names, port=port)}")


def bench_search_synonyms(
    microlens: Annotated[Path, typer.Option(help="MicroLens directory.")]
    = Path("../shared/data/microlens50k"),
    titles: Annotated[int | None, typer.Option(min=1000, help="Sample this many titles.")]
    = None,
    out: Annotated[Path, typer.Option(help="Results directory.")] = Path("benchmarks/results"),
) -> None:
    """Lexical vs lexical + semantic search on synonym queries -> search_synonyms.md."""
    from benchmarks.search_synonyms import run_bench
    from core.config import get_settings

    typer.echo(f"wrote {run_bench(microlens, get_settings().path('content'), out, titles)}")


def bench_following(
    quick: Annotated[bool, typer.Option(help="Small sizes: a smoke run.")] = False,
    backends: Annotated[str, typer.Option(help="Comma-separated: sqlite,postgres.")]
    = "sqlite,postgres",
    out: Annotated[Path, typer.Option(help="Results directory.")] = Path("benchmarks/results"),
) -> None:
    """Fan-out throughput, following-feed read p99, search p99 -> following.md."""
    from benchmarks.following import run_bench

    typer.echo(f"wrote {run_bench(quick, [b.strip() for b in backends.split(',')], out)}")


def bench_product(
    out: Annotated[Path, typer.Option(help="Report file.")] = Path(
        "benchmarks/results/product.md"),
    soak_s: Annotated[float, typer.Option(min=10, help="Soak length in seconds.")] = 600.0,
    port: Annotated[int, typer.Option(help="First of the three ports used.")] = 8130,
    demo: Annotated[bool, typer.Option(help="Time reelrank demo on a fresh clone (~5 min).")]
    = True,
) -> None:
    """Fresh clone -> first for-you page, the soak's RSS over time, the fault table ->
    benchmarks/results/product.md."""
    from benchmarks.product import run_bench

    typer.echo(f"wrote {run_bench(out, soak_s=soak_s, port=port, demo=demo)}")


def bench_scaleout(
    users: Annotated[int, typer.Option(min=10, max=100_000)] = 1000,
    videos: Annotated[int, typer.Option(min=10, max=200_000)] = 2000,
    seconds: Annotated[float, typer.Option(min=1, max=600, help="Per API run.")] = 15.0,
    concurrency: Annotated[int, typer.Option(min=1, max=256)] = 16,
    events: Annotated[int, typer.Option(min=1000, max=10_000_000, help="Backlog per run.")]
    = 30_000,
    repeats: Annotated[int, typer.Option(min=1, max=10, help="Paired 1/2 runs.")] = 3,
    port: Annotated[int, typer.Option(min=1024, max=65535)] = 8148,
    quick: Annotated[bool, typer.Option(help="One pair of short runs: a smoke run.")] = False,
    buses: Annotated[str, typer.Option(help="Comma-separated event buses for the workers: "
                                            "db, kafka.")] = "db,kafka",
) -> None:
    """One process against two: API capacity, and a consumer group's drain rate -> scaleout.md."""
    from benchmarks.scaleout import BUSES, run_bench

    names = tuple(b.strip() for b in buses.split(",") if b.strip())
    if unknown := set(names) - set(BUSES):
        raise typer.BadParameter(f"unknown buses {sorted(unknown)}", param_hint="--buses")
    if quick:
        seconds, events, repeats = min(seconds, 5.0), min(events, 20_000), 1
    path = run_bench(users=users, videos=videos, seconds=seconds, concurrency=concurrency,
                     events=events, repeats=repeats, port=port, buses=names)
    typer.echo(path.read_text())


def register(groups: dict[str, typer.Typer]) -> None:
    bench = groups["bench"]
    bench.command("bus")(bench_bus)
    bench.command("comments")(bench_comments)
    bench.command("features")(bench_features)
    bench.command("ranker")(bench_ranker)
    bench.command("ray-hop")(bench_ray_hop)
    bench.command("api-overhead")(bench_api_overhead)
    bench.command("retrieval")(bench_retrieval)
    bench.command("serve")(bench_serve)
    bench.command("experiments-analysis")(bench_experiments_analysis)
    bench.command("experiments")(bench_experiments)
    bench.command("transcode")(bench_transcode)
    bench.command("social")(bench_social)
    bench.command("search-synonyms")(bench_search_synonyms)
    bench.command("following")(bench_following)
    bench.command("product")(bench_product)


    bench.command("scaleout")(bench_scaleout)
