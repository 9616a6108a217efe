"""Steady background traffic for the demo: simulated users visiting the served API.

``python -m experiments.traffic --api URL --visits-per-min 30`` sends the experiment
simulator's users (:mod:`experiments.simulator`, responses fitted to KuaiRand) one visit at a
time at a gentle rate, so trending, the counters, the real-time features and the exposure log
move while a person looks at the product; it runs until SIGTERM or SIGINT, and prints one
line of totals a minute. Unlike ``reelrank experiment simulate`` it runs no experiment and
analyses nothing: it is load, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

from core.config import Settings, get_settings

REPORT_EVERY_S = 60.0


async def run(settings: Settings, base_url: str, visits_per_min: float, dataset: str,
              kuairand: Path, stop: asyncio.Event, seed: int = 0) -> Counter:
    """Visits at ``visits_per_min`` (one at a time, at most 3 pages each) until ``stop``;
    the totals so far."""
    from experiments.simulate_cli import response_model
    from experiments.simulator import Population, SimConfig, pick_users, visit
    from platform_services.auth import issue_token
    from training.datasets.store import load_dataset

    pop = Population(load_dataset(dataset, settings.data_dir))
    model = response_model(settings, kuairand)
    users = pick_users(pop, 500, seed)
    cfg = SimConfig(users=1, seed=seed, concurrency=1, max_pages=3)
    rng = np.random.default_rng(seed)
    totals: Counter = Counter()
    statuses: Counter = Counter()
    interval, last_report = 60.0 / max(visits_per_min, 1e-6), time.monotonic()
    async with httpx.AsyncClient(base_url=base_url, timeout=30.0) as client:
        while not stop.is_set():
            started = time.monotonic()
            user = int(rng.choice(users))
            token = issue_token(settings, user, ttl_s=3600)
            try:
                out = await visit(client, token, pop.visitor(user), pop, model, cfg, rng,
                                  statuses)
                totals.update(visits=1, pages=out.pages, seen=out.seen, clicks=out.clicks,
                              likes=out.likes, errors=out.errors)
            except httpx.HTTPError as exc:
                totals.update(visits=1, errors=1)
                statuses[f"transport {type(exc).__name__}"] += 1
            if time.monotonic() - last_report >= REPORT_EVERY_S:
                print(f"traffic: {_line(totals)}; responses: {_line(statuses)}", flush=True)
                last_report = time.monotonic()
            wait = interval - (time.monotonic() - started)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(wait, 0.0))
    return totals + Counter({f"responses {k}": v for k, v in statuses.items()})


def _line(counts: Counter) -> str:
    """``a 1, b 2``: what a person reading the log sees (an error comes with its status)."""
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", required=True, help="The API's base URL.")
    parser.add_argument("--visits-per-min", type=float, default=30.0)
    parser.add_argument("--dataset", default="synth", help="The loaded world's data set.")
    parser.add_argument("--kuairand", type=Path, default=Path("../shared/data/kuairand"),
                        help="KuaiRand, to fit the users' responses on (once).")
    args = parser.parse_args(argv)

    async def go() -> Counter:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return await run(get_settings(), args.api, args.visits_per_min, args.dataset,
                         args.kuairand, stop)

    totals = asyncio.run(go())
    print(f"traffic stopped: {_line(totals)}", flush=True)


if __name__ == "__main__":
    main()
