"""``RateLimiter.hit_all``: several limits counted in one Redis round trip, with the same
counts and keys as ``limits``' own ``hit``, and failing open when Redis is gone."""

from __future__ import annotations

import asyncio
import uuid

from platform_services.ratelimit import RateLimiter


def test_every_limit_counts_and_the_first_refusal_decides(redis_url: str) -> None:
    async def run() -> list:
        limiter = RateLimiter(redis_url, prefix=f"t-{uuid.uuid4().hex}")
        out = [await limiter.hit_all(("5/minute", ("ip", "1.2.3.4")), ("2/minute", ("user", "7")))
               for _ in range(3)]
        out.append(await limiter.hit("2/minute", "user", "7"))  # the same counter as hit_all's
        out += [await limiter.hit("5/minute", "ip", "1.2.3.4") for _ in range(3)]
        return out

    first, second, third, user, ip4, ip5, ip6 = asyncio.run(run())
    assert first.allowed and second.allowed
    assert not third.allowed and third.rule == "2/minute" and third.retry_after_s >= 1
    assert not user.allowed, "hit and hit_all count the same window"
    assert ip4.allowed and ip5.allowed and not ip6.allowed and ip6.rule == "5/minute", (
        "the IP counted each of the three combined calls")


def test_fails_open_without_redis(tmp_path) -> None:  # noqa: ANN001
    async def run() -> bool:
        limiter = RateLimiter(f"unix://{tmp_path}/no.sock", timeout_s=0.1)
        return (await limiter.hit_all(("1/minute", ("ip", "x")), ("1/minute", ("user", "1"))
                                      )).allowed

    assert asyncio.run(run())


def test_a_redis_that_lost_its_scripts_still_counts(redis_url: str) -> None:
    async def run() -> list[bool]:
        limiter = RateLimiter(redis_url, prefix=f"t-{uuid.uuid4().hex}")
        out = [(await limiter.hit_all(("2/minute", ("user", "1")))).allowed]
        await limiter.storage.bridge.get_connection().script_flush()  # as after a restart
        out += [(await limiter.hit_all(("2/minute", ("user", "1")))).allowed for _ in range(2)]
        return out

    assert asyncio.run(run()) == [True, True, False]


def test_concurrent_checks_share_round_trips_and_stay_exact(redis_url: str) -> None:
    async def run() -> tuple[list, list[int]]:
        limiter = RateLimiter(redis_url, prefix=f"t-{uuid.uuid4().hex}")
        sent, send = [], limiter._batches._send

        async def counted(items: list) -> list:
            sent.append(len(items))
            return await send(items)

        limiter._batches._send = counted
        got = await asyncio.gather(*(limiter.hit_all(("25/minute", ("user", "1")),
                                                     ("1000/minute", ("ip", "x")))
                                     for _ in range(40)))
        return got, sent

    got, sent = asyncio.run(run())
    assert sum(d.allowed for d in got) == 25, "each request counted once, none lost"
    assert sum(sent) == 80 and len(sent) < 10, f"not batched: {sent}"


def test_a_cancelled_request_does_not_strand_the_ones_behind_it(redis_url: str) -> None:
    async def run() -> list:
        limiter = RateLimiter(redis_url, prefix=f"t-{uuid.uuid4().hex}")
        send = limiter._batches._send

        async def slow(items: list) -> list:
            await asyncio.sleep(0.05)
            return await send(items)

        limiter._batches._send = slow
        first = asyncio.create_task(limiter.hit_all(("3/minute", ("user", "1"))))
        await asyncio.sleep(0.01)  # its batch is in flight
        behind = [asyncio.create_task(limiter.hit_all(("3/minute", ("user", "1"))))
                  for _ in range(3)]
        await asyncio.sleep(0)
        first.cancel()  # before its batch reached Redis: it is not counted
        got = [d.allowed for d in await asyncio.wait_for(asyncio.gather(*behind), 5)]
        return got + [(await limiter.hit_all(("3/minute", ("user", "1")))).allowed]

    assert asyncio.run(run()) == [True, True, True, False], "the three behind it were counted"
