"""An open-loop HTTP load generator for the feed (``python -m benchmarks.loadgen``).

It runs in its own process (so its CPU is not the server's event loop), talks to loopback only,
and is bounded in time. Requests are sent on a fixed schedule (``rate`` per second) whether or
not earlier ones have returned, and latency is measured from each request's *scheduled* time,
so a stalled server shows up as latency instead of as a politely slower client (no
coordinated omission). ``first``: first pages of the for-you feed; ``cached``: next pages from
cursors fetched beforehand (``prime``, a separate run, so the server's CPU for the cached pages
can be metered without the first pages behind the cursors). ``--plan FILE`` instead sends a
given list of requests (any method and path, e.g. likes and follows for
``benchmarks/social.py``) on the same schedule.
Writes one JSON object to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import aiohttp

PATH = "/api/v1/feed/for-you"
PAGES_PER_USER = 8  # a list of 500 holds 25 pages of 20: a chain never runs dry
# The lists behind a cached run are built at a pace the API keeps up with (one first page per
# core; loopback only, so the API's cores): a list built in a burst that timed its ranker out
# is served degraded on every later page, which would charge the burst to the cached pages
# (4 at a time on 2 cores did, on Ray Serve).
PRIME_CONCURRENCY = os.cpu_count() or 1


def parse_timing(header: str) -> dict[str, float]:
    out = {}
    for part in header.split(","):
        name, _, rest = part.strip().partition(";dur=")
        if name and rest:
            out[name] = float(rest)
    return out


async def _get(session: aiohttp.ClientSession, base: str, token: str, params: dict,
               timeout_s: float) -> tuple[int, dict, dict]:
    async with session.get(base + PATH, params=params, timeout=aiohttp.ClientTimeout(
            total=timeout_s), headers={"Authorization": f"Bearer {token}"}) as resp:
        body = await resp.json() if resp.status == 200 else {}
        return resp.status, {k.lower(): v for k, v in resp.headers.items()}, body


def chains(tokens: list[str], rate: float, seconds: float) -> list[str]:
    """The users of a cached run: each one's cursor chain advances about PAGES_PER_USER
    pages during the run."""
    return tokens[: max(1, min(len(tokens), int(rate * seconds / PAGES_PER_USER)))]


async def prime(base: str, tokens: list[str], page_size: int, timeout_s: float
                ) -> list[str | None]:
    """One first page per user, ``PRIME_CONCURRENCY`` at a time: the cursors a cached run
    starts from. Its own step, so that a caller metering the server's CPU for cached pages
    leaves it out."""
    _loopback(base)
    sem = asyncio.Semaphore(PRIME_CONCURRENCY)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=8)) as session:

        async def one(token: str) -> str | None:
            async with sem:
                try:
                    _, _, body = await _get(session, base, token, {"page_size": page_size},
                                            timeout_s)
                    return body.get("next_cursor")
                except (TimeoutError, aiohttp.ClientError):
                    return None

        return list(await asyncio.gather(*(one(t) for t in tokens)))


async def run(base: str, tokens: list[str], mode: str, rate: float, seconds: float,
              page_size: int, timeout_s: float, cursors: list[str | None] | None = None
              ) -> dict:
    """``first``: first pages of the users in turn; ``cached``: next pages along the cursor
    chains of :func:`prime`'s users, from ``cursors`` (its result)."""
    _loopback(base)
    if mode == "cached":
        if cursors is None:
            raise ValueError("a cached run starts from primed cursors")
        tokens = chains(tokens, rate, seconds)[:len(cursors)]
    chain: list[str | None] = list(cursors or [None] * len(tokens))
    conn = aiohttp.TCPConnector(limit=1024, force_close=False)
    async with aiohttp.ClientSession(connector=conn) as session:

        async def one(i: int, rec: dict) -> None:
            u = i % len(tokens)
            params: dict = {"page_size": page_size}
            if mode == "cached" and chain[u]:
                params["cursor"] = chain[u]
            rec["cached"] = "cursor" in params
            status, headers, body = await _get(session, base, tokens[u], params, timeout_s)
            rec |= {"status": status, "degraded": headers.get("x-reelrank-degraded", ""),
                    "timing": parse_timing(headers.get("server-timing", "")),
                    "ranked": int(headers.get("x-reelrank-ranked", -1)),
                    "items": len(body.get("videos", []))}
            if mode == "cached" and body.get("next_cursor"):
                chain[u] = body["next_cursor"]

        records, wall = await open_loop(int(rate * seconds), rate, one)
    return {"mode": mode, "rate": rate, "seconds": seconds, "wall_s": wall, "records": records}


async def open_loop(n: int, rate: float, send: Callable[[int, dict], Awaitable[None]]
                    ) -> tuple[list[dict], float]:
    """Call ``send(i, record)`` for i < n at ``start + i / rate`` whether or not earlier
    calls returned; each record gets ``latency_ms`` from its scheduled time (``status`` 0 and
    ``error`` if the request failed). Returns the records and the wall time."""
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05
    records: list[dict] = []

    async def one(i: int) -> None:
        scheduled = start + i / rate
        await asyncio.sleep(max(0.0, scheduled - loop.time()))
        rec: dict = {}
        try:
            await send(i, rec)
        except (TimeoutError, aiohttp.ClientError) as exc:
            rec |= {"status": 0, "error": type(exc).__name__}
        rec["latency_ms"] = (loop.time() - scheduled) * 1000
        records.append(rec)

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return records, time.perf_counter() - t0


def _loopback(base: str) -> None:
    if urlsplit(base).hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("loadgen: loopback targets only")


async def run_plan(base: str, plan: dict, rate: float, timeout_s: float) -> dict:
    """Send ``plan["requests"]`` (``[method, path, token index, kind]`` each, tokens in
    ``plan["tokens"]``) at ``rate`` per second; a record per request with its ``kind``."""
    _loopback(base)
    tokens, requests = plan["tokens"], plan["requests"]
    conn = aiohttp.TCPConnector(limit=1024, force_close=False)
    async with aiohttp.ClientSession(connector=conn) as session:

        async def send(i: int, rec: dict) -> None:
            method, path, who, kind = requests[i]
            rec["kind"] = kind
            async with session.request(
                    method, base + path, timeout=aiohttp.ClientTimeout(total=timeout_s),
                    headers={"Authorization": f"Bearer {tokens[who]}"}) as resp:
                await resp.read()
                rec["status"] = resp.status

        records, wall = await open_loop(len(requests), rate, send)
    return {"mode": "plan", "rate": rate, "seconds": len(requests) / rate, "wall_s": wall,
            "records": records}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--base", default="http://127.0.0.1:8000")
    p.add_argument("--tokens", help="File with one bearer token per line.")
    p.add_argument("--plan", help="JSON file of requests to send instead of feed pages.")
    p.add_argument("--mode", choices=("first", "cached", "prime"), default="first",
                   help="prime: write the cursors a cached run of the same rate and seconds "
                        "starts from (first pages, not timed).")
    p.add_argument("--cursors", help="cached: a prime run's output (else primed first, "
                                    "with the same run's CPU).")
    p.add_argument("--rate", type=float, required=True)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--page-size", type=int, default=20)
    p.add_argument("--timeout", type=float, default=5.0)
    a = p.parse_args(argv)
    if a.plan:
        with open(a.plan) as fh:
            plan = json.load(fh)
        json.dump(asyncio.run(run_plan(a.base, plan, a.rate, a.timeout)), sys.stdout)
        return
    if not a.tokens:
        p.error("--tokens is required without --plan")
    with open(a.tokens) as fh:
        tokens = [t.strip() for t in fh if t.strip()]
    primed = None
    if a.cursors:
        with open(a.cursors) as fh:
            primed = json.load(fh)["cursors"]
    elif a.mode in ("cached", "prime"):  # a cached run on its own primes first
        primed = asyncio.run(prime(a.base, chains(tokens, a.rate, a.seconds), a.page_size,
                                   a.timeout))
    if a.mode == "prime":
        json.dump({"mode": "prime", "cursors": primed}, sys.stdout)
        return
    result = asyncio.run(run(a.base, tokens, a.mode, a.rate, a.seconds, a.page_size,
                             a.timeout, primed))
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
