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
