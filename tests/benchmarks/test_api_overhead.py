"""``reelrank bench api-overhead``: each layer's row against the app as it is, same run."""

from __future__ import annotations

from pathlib import Path

from benchmarks.api_overhead import LAYERS, run_bench


def test_each_layer_is_measured_against_the_app_as_it_is(tmp_path: Path) -> None:
    text = run_bench(200, 1, tmp_path / "api_overhead.md").read_text()
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()
            if line.startswith("| GET ")]
    apps = ["as it is", *LAYERS.values(), "all three"]
    assert [r[1] for r in rows] == apps * 2  # healthz, then the feed page
    for request in ("GET /healthz", "GET /api/v1/feed/for-you"):
        got = {r[1]: (float(r[2]), r[3]) for r in rows if r[0].startswith(request)}
        assert got["as it is"][1] == "1.00x"
        # The limiter's round trip is a third or more of a request's loop time: not noise.
        assert got["without the rate limiter's round trip"][0] < 0.85 * got["as it is"][0]
        assert got["all three"][0] < got["as it is"][0]


def test_a_run_where_the_limiter_failed_open_is_not_reported(tmp_path: Path) -> None:
    """Without Redis the limiter lets requests through unchecked: such a run would compare the
    app without its round trip against itself, so it raises instead of writing a report."""
    from unittest import mock

    import pytest
    from redis.exceptions import ConnectionError as RedisDown

    with mock.patch("platform_services.ratelimit.RateLimiter._acquire",
                    side_effect=RedisDown("down")), pytest.raises(RuntimeError, match="open"):
        run_bench(100, 1, tmp_path / "api_overhead.md")
    assert not (tmp_path / "api_overhead.md").exists()
