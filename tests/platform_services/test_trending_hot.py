"""The trending lists are hot keys: many concurrent readers of one list cost Redis one read
per process per ``local_ttl_s`` (single flight), and each union sits under several replica
keys. Still fresh: a list changes once its local copy and its Redis slot have passed."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import redis

from platform_services import trending
from platform_services.trending import Hit, add_counts, top


def calls(r: redis.Redis, command: str) -> int:
    return int(r.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))


def test_many_readers_one_redis_read(redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url + "?db=4")
    r.flushdb()
    now = int(time.time() * 1000)
    add_counts(r, [Hit(now - 1000, v, "north", "pets", float(v)) for v in range(1, 30)],
               now_ms=now)
    expected = top(r, "24h", region="north", n=10, cache_s=0.001)
    assert [v for v, _ in expected] == list(range(29, 19, -1))
    before = {c: calls(r, c) for c in ("zrevrange", "zunionstore")}
    with ThreadPoolExecutor(32) as pool:
        got = list(pool.map(lambda _: top(r, "24h", region="north", n=10, cache_s=30,
                                          local_ttl_s=5), range(2000)))
    assert all(g == expected for g in got)
    assert calls(r, "zrevrange") - before["zrevrange"] <= 2, "2,000 reads, one Redis read"
    assert calls(r, "zunionstore") - before["zunionstore"] == trending.REPLICAS
    replicas = r.keys("trend:u:24h:north:all:*:r*")
    assert len(replicas) == trending.REPLICAS and all(r.pttl(k) > 0 for k in replicas)
    assert len({tuple(r.zrange(k, 0, -1)) for k in replicas}) == 1, "identical copies"

    # New engagement shows once the local copy and the Redis slot have both passed.
    add_counts(r, [Hit(now - 500, 99, "north", "pets", 1000.0)], now_ms=now)
    assert top(r, "24h", region="north", n=10, cache_s=30, local_ttl_s=5) == expected
    time.sleep(0.6)
    fresh = top(r, "24h", region="north", n=10, cache_s=0.5, local_ttl_s=0.3)
    assert fresh[0] == (99, 1000.0)
    # An empty list is cached too (a marker member keeps the key; it is never returned).
    assert top(r, "7d", region="nowhere", cache_s=30) == []
    assert top(r, "7d", region="nowhere", cache_s=30, local_ttl_s=0.001) == []
