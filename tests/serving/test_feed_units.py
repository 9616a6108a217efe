"""The feed's pure parts: cursors, re-ranking rules, blending under quotas."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import SecretStr

from candidate_gen.sources import CODE, blend
from serving.feed import cursor as cursors
from serving.feed.rerank import RerankConfig, rerank, resume

SECRET = SecretStr("a-test-signing-secret-of-32-bytes!")


def _signed(body: str) -> str:
    payload = cursors._b64(body.encode())
    return f"{payload}.{cursors._mac(SECRET, payload)}"


def test_cursor_round_trip_and_every_way_to_break_it() -> None:
    c = cursors.Cursor("abc", 7, 20, 2_000_000_000)
    token = cursors.encode(SECRET, c)
    assert cursors.decode(SECRET, token, 7, now_s=1_000) == c
    payload, mac = token.split(".")
    forged = cursors.encode(SECRET, cursors.Cursor("abc", 7, 40, 2_000_000_000)).split(".")[0]
    bad = {
        "other user": (token, 8, "another user"),
        "expired": (token, 7, "expired"),
        "tampered offset": (f"{forged}.{mac}", 7, "signature"),
        "other secret": (cursors.encode(SecretStr("x" * 32), c), 7, "signature"),
        "garbage": ("not-a-cursor", 7, "malformed"),
        "empty mac": (f"{payload}.", 7, "malformed"),
        # Signed but not integers (a leaked secret or a future bug must not give a 500):
        # ``1e400`` is an infinite float, int() of it raised OverflowError.
        "infinite expiry": (_signed('{"l":"a","u":7,"o":0,"x":1e400}'), 7, "malformed"),
        "float user": (_signed('{"l":"a","u":7.0,"o":0,"x":4e9}'), 7, "malformed"),
        "bool offset": (_signed('{"l":"a","u":7,"o":true,"x":4e9}'), 7, "malformed"),
    }
    for name, (tok, user, why) in bad.items():
        with pytest.raises(cursors.CursorError, match=why):
            cursors.decode(SECRET, tok, user, now_s=3_000_000_000 if name == "expired" else 0)


def test_rerank_spaces_creators_mixes_topics_and_fills_explore_slots() -> None:
    rng = np.random.default_rng(0)
    n = 300
    owners = rng.integers(0, 6, n)  # few creators: adjacent duplicates are likely by score
    topics = rng.integers(0, 4, n)
    explore = rng.random(n) < 0.1
    cfg = RerankConfig(explore_slots=0.1, topic_window=5)
    order = rerank(rng.random(n), owners, topics, rng.random(n) * 100, explore, cfg)
    assert sorted(order.tolist()) == list(range(n)), "a permutation: nothing lost or repeated"
    o, t = owners[order], topics[order]
    head = 200  # the rules may only be relaxed at the tail, when candidates run out
    assert not np.any(o[1:head] == o[: head - 1]), "two consecutive videos of one creator"
    for s in range(head - 4):
        assert np.bincount(t[s : s + 5]).max() <= 3, "one topic fills a 5-window"
    slots = np.arange(9, head, 10)
    assert explore[order[slots]].mean() > 0.8, "exploration slots hold exploration picks"


def test_rerank_freshness_boost_lifts_new_videos() -> None:
    n = 100
    scores = np.linspace(1, 0, n)
    age = np.full(n, 1000.0)
    age[80] = 0.0  # a brand-new video ranked 81st by the model
    order = rerank(scores, np.arange(n), np.full(n, -1), age, np.zeros(n, bool),
                   RerankConfig(explore_slots=0, freshness_boost=0.3, fresh_hours=24))
    assert order.tolist().index(80) < 60


def test_blend_respects_quotas_priority_and_fills_from_the_rest() -> None:
    lists = {
        "ann": np.arange(0, 100),
        "following": np.array([5, 6, 200, 201]),  # 5, 6 also in ANN: following wins them
        "trending": np.arange(300, 400),
        "explore": np.arange(500, 502),
    }
    quotas = {"ann": 0.5, "following": 0.2, "trending": 0.2, "explore": 0.1}
    ids, src = blend(lists, quotas, 50)
    assert len(ids) == 50 and len(set(ids.tolist())) == 50
    by = {name: ids[src == code].tolist() for name, code in CODE.items()}
    assert by["following"] == [5, 6, 200, 201]
    assert set(by["explore"]) == {500, 501}
    # ANN had 25 slots, trending 10; the room following/explore left goes ANN first.
    assert len(by["ann"]) >= 25 and len(by["trending"]) >= 10
    assert len(by["ann"]) + len(by["trending"]) == 44


def test_rerank_pages_follow_source_quotas_and_a_dry_source_leaves_its_share_to_others(
) -> None:
    rng = np.random.default_rng(1)
    quotas = {CODE["ann"]: 0.5, CODE["following"]: 0.15, CODE["trending"]: 0.15,
              CODE["fresh"]: 0.1, CODE["explore"]: 0.1}
    n = 400
    sources = rng.choice(list(quotas), n, p=[0.5, 0.1, 0.15, 0.15, 0.1]).astype(np.uint8)
    sources[:n][sources == CODE["following"]] = CODE["ann"]
    sources[:6] = CODE["following"]  # following runs dry after six videos
    scores = rng.random(n) + 2.0 * (sources == CODE["explore"])  # the ranker loves explore
    explore = sources == CODE["explore"]
    order = rerank(scores, rng.integers(0, 80, n), rng.integers(0, 6, n), rng.random(n) * 100,
                   explore, RerankConfig(explore_slots=0.1), sources, quotas)
    assert sorted(order.tolist()) == list(range(n))
    pages = sources[order][:200].reshape(10, 20)
    for page in pages:
        count = {name: int((page == code).sum()) for name, code in CODE.items()}
        assert count["explore"] == 2, count  # its slots, however high it scores
    first = {name: int((pages[0] == code).sum()) for name, code in CODE.items()}
    assert abs(first["ann"] - 10) <= 1 and abs(first["trending"] - 3) <= 1, first
    assert abs(first["following"] - 3) <= 1 and abs(first["fresh"] - 2) <= 1, first
    # Once following is dry its share goes to ann, trending and fresh in proportion.
    later = sources[order][60:200]
    assert not (later == CODE["following"]).any()
    share = {name: float((later == code).mean()) for name, code in CODE.items()}
    assert abs(share["ann"] - 0.9 * 0.5 / 0.75) < 0.05, share
    assert abs(share["trending"] - 0.9 * 0.15 / 0.75) < 0.05, share
    assert abs(share["explore"] - 0.1) < 0.01, share



def test_rerank_in_steps_gives_the_list_rerank_at_once_gives() -> None:
    """A first page re-ranks its first pages' positions and a later page the next ones
    (``resume``): the rules must carry over (quota counts, the last creator, the topic window,
    the exploration slots' rhythm), so the pages read the same as a list ranked in one go."""
    rng = np.random.default_rng(2)
    quotas = {CODE["ann"]: 0.5, CODE["following"]: 0.15, CODE["trending"]: 0.15,
              CODE["fresh"]: 0.1, CODE["explore"]: 0.1}
    for trial in range(60):
        n = int(rng.integers(1, 400))
        sources = rng.choice(list(quotas), n, p=[0.5, 0.1, 0.15, 0.15, 0.1]).astype(np.uint8)
        sources[: n // 4] = CODE["following"] if trial % 3 == 0 else sources[: n // 4]
        owners = rng.integers(0, int(rng.integers(1, 60)), n)
        topics = rng.integers(-1, int(rng.integers(1, 8)), n)
        explore = sources == CODE["explore"]
        cfg = RerankConfig(explore_slots=float(rng.choice([0.0, 0.1, 0.25])),
                           topic_window=int(rng.integers(1, 7)))
        args = (rng.random(n), owners, topics, rng.random(n) * 100, explore, cfg, sources, quotas)
        at_once = rerank(*args)
        done = int(rng.integers(0, 80))
        steps = rerank(*args, depth=done)
        assert sorted(steps.tolist()) == list(range(n))
        assert (steps[:done] == at_once[:done]).all()
        while done < n:
            depth = int(rng.integers(1, 70))
            steps = steps[resume(done, owners[steps], topics[steps], explore[steps], cfg,
                                 sources[steps], quotas, depth)]
            done += depth
        assert (steps == at_once).all(), trial


async def test_for_you_debug_is_for_staff_outside_dev() -> None:
    """A plain user asking for ``debug`` (scores, experiment arm) gets 403 in ``test`` and
    ``prod``; staff do, and in ``dev`` anyone does; ``feed_debug_role`` overrides it."""
    from fastapi import HTTPException

    from core.config import Settings
    from platform_services.auth import Claims
    from platform_services.storage.models import Role
    from serving.routes.feed import debug_allowed

    secret = "s" * 40

    async def allowed(env: str, role: Role, **over: object) -> bool:
        settings = Settings(env=env, jwt_secret=secret, **over)  # type: ignore[arg-type]
        try:
            return await debug_allowed(Claims(7, role), settings, debug=True)
        except HTTPException as exc:
            assert exc.status_code == 403 and "moderator" in str(exc.detail)
            return False

    assert await allowed("dev", Role.USER)
    assert not await allowed("test", Role.USER) and not await allowed("prod", Role.USER)
    assert await allowed("prod", Role.MODERATOR) and await allowed("prod", Role.ADMIN)
    assert await allowed("prod", Role.USER, feed_debug_role="user")
    assert not await debug_allowed(Claims(7, Role.USER), Settings(env="prod", jwt_secret=secret),
                                   debug=False)  # no debug asked: nothing to refuse
