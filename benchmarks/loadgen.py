"""An open-loop HTTP load generator for the feed (``python -m benchmarks.loadgen``).

It runs in its own process (so its CPU is not the server's event loop), talks to loopback only,
and is bounded in time. Requests are sent on a fixed schedule (``rate`` per second) whether or
not earlier ones have returned, and latency is measured from each request's *scheduled* time,
so a stalled server shows up as latency instead of as a politely slower client (no
coordinated omission). ``first``: first pages of the for-you feed; ``cached``: next pages from
cursors fetched beforehand. Writes one JSON object to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from urllib.parse import urlsplit

import aiohttp

PATH = "/api/v1/feed/for-you"
PAGES_PER_USER = 8  # a list of 500 holds 25 pages of 20: a chain never runs dry


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


async def run(base: str, tokens: list[str], mode: str, rate: float, seconds: float,
              page_size: int, timeout_s: float) -> dict:
    host = urlsplit(base).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("loadgen: loopback targets only")
    conn = aiohttp.TCPConnector(limit=1024, force_close=False)
    records: list[dict] = []
    async with aiohttp.ClientSession(connector=conn) as session:
        if mode == "cached":
            # One first page per user (not measured); each user's cursor chain then advances
            # about PAGES_PER_USER pages during the run.
            tokens = tokens[: max(1, min(len(tokens), int(rate * seconds / PAGES_PER_USER)))]
        cursors: list[str | None] = [None] * len(tokens)
        if mode == "cached":
            sem = asyncio.Semaphore(4)

            async def prime(i: int) -> None:
                async with sem:
                    try:
                        _, _, body = await _get(session, base, tokens[i],
                                                {"page_size": page_size}, timeout_s)
                        cursors[i] = body.get("next_cursor")
                    except (TimeoutError, aiohttp.ClientError):
                        pass

            await asyncio.gather(*(prime(i) for i in range(len(tokens))))
        loop = asyncio.get_running_loop()
        n = int(rate * seconds)
        start = loop.time() + 0.05

        async def one(i: int) -> None:
            scheduled = start + i / rate
            await asyncio.sleep(max(0.0, scheduled - loop.time()))
            u = i % len(tokens)
            params: dict = {"page_size": page_size}
            if mode == "cached" and cursors[u]:
                params["cursor"] = cursors[u]
            rec: dict = {"cached": "cursor" in params}
            try:
                status, headers, body = await _get(session, base, tokens[u], params, timeout_s)
                rec |= {"status": status, "degraded": headers.get("x-reelrank-degraded", ""),
                        "timing": parse_timing(headers.get("server-timing", "")),
                        "ranked": int(headers.get("x-reelrank-ranked", -1)),
                        "items": len(body.get("videos", []))}
                if mode == "cached" and body.get("next_cursor"):
                    cursors[u] = body["next_cursor"]
            except (TimeoutError, aiohttp.ClientError) as exc:
                rec |= {"status": 0, "error": type(exc).__name__}
            rec["latency_ms"] = (loop.time() - scheduled) * 1000
            records.append(rec)

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        wall = time.perf_counter() - t0
    return {"mode": mode, "rate": rate, "seconds": seconds, "wall_s": wall, "records": records}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--base", default="http://127.0.0.1:8000")
    p.add_argument("--tokens", required=True, help="File with one bearer token per line.")
    p.add_argument("--mode", choices=("first", "cached"), default="first")
    p.add_argument("--rate", type=float, required=True)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--page-size", type=int, default=20)
    p.add_argument("--timeout", type=float, default=5.0)
    a = p.parse_args(argv)
    with open(a.tokens) as fh:
        tokens = [t.strip() for t in fh if t.strip()]
    result = asyncio.run(run(a.base, tokens, a.mode, a.rate, a.seconds, a.page_size,
                             a.timeout))
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
