"""One contract for the search interface, run against SQLite FTS5 and PostgreSQL full-text
search with the real MiniLM encoder: matching and stemming, the semantic half of the blend,
visibility, blocks, filters, sorts, pages, users by prefix, and documents following the rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from candidate_gen.search_indexer import encode_texts
from core.clock import utcnow
from platform_services.errors import Invalid
from platform_services.search import backends, service
from platform_services.search.backends import VideoFilter, lexical_backend
from platform_services.search.documents import sync_videos
from platform_services.search.semantic import SemanticIndex
from platform_services.search.service import VideoSearch, search_users
from platform_services.storage.db import make_engine, migrate, session_factory
from platform_services.storage.models import (
    Block,
    Moderation,
    User,
    Video,
    VideoStats,
    VideoStatus,
    Visibility,
)

VIDEOS = [  # (title, owner, extra columns)
    ("funny cat jumps off the sofa #cats", "alice", {}),
    ("hilarious kitten compilation", "bob", {}),
    ("cooking pasta carbonara #food", "bob", {"category": "cooking", "duration_ms": 90_000}),
    ("quick pasta salad", "alice", {"category": "cooking", "duration_ms": 20_000}),
    ("cat secret diary", "alice", {"visibility": Visibility.PRIVATE}),
    ("cat for my fans", "alice", {"visibility": Visibility.FOLLOWERS}),
    ("cat still transcoding", "alice", {"status": VideoStatus.PROCESSING}),
    ("cat awaiting review", "alice", {"moderation": Moderation.NEEDS_REVIEW}),
    ("cat from a blocked creator", "carol", {}),
    ("mountain bike downhill run", "carol", {"category": "sports"}),
]


@pytest.fixture(params=["sqlite", "postgres"])
def sessions(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    url = (f"sqlite:///{tmp_path}/s.db" if request.param == "sqlite"
           else request.getfixturevalue("postgres_db"))
    migrate(url)
    engine = make_engine(url)
    yield session_factory(engine)
    engine.dispose()


@pytest.fixture
def world(sessions: sessionmaker[Session]) -> dict[str, int]:
    """Users viewer/alice/bob/carol (viewer blocked carol), VIDEOS indexed; name -> id."""
    ids: dict[str, int] = {}
    with sessions.begin() as s:
        for name in ("viewer", "alice", "bob", "carol"):
            u = User(username=name, email=f"{name}@x.io", password_hash="x",
                     display_name="Alice Wonder" if name == "alice" else None)
            s.add(u)
            s.flush()
            ids[name] = u.id
        s.add(Block(blocker_id=ids["viewer"], blocked_id=ids["carol"]))
        now = utcnow()
        for i, (title, owner, extra) in enumerate(VIDEOS):
            values = {"status": VideoStatus.READY, "duration_ms": 10_000} | extra
            v = Video(owner_id=ids[owner], title=title, created_at=now - timedelta(hours=i),
                      **values)
            s.add(v)
            s.flush()
            ids[title] = v.id
            s.add(VideoStats(video_id=v.id, views=100 * i, likes=0, comments=0, shares=0,
                             skips=0, reports=0, watch_ms=0))
    with sessions.begin() as s:
        assert sync_videos(s, [ids[t] for t, _, _ in VIDEOS], encode_texts) == 6
    return ids


def titles(page) -> list[str]:  # noqa: ANN001
    return [VIDEOS_BY_ID[h.video_id] for h in page.hits]


VIDEOS_BY_ID: dict[int, str] = {}


def run(sessions, world, q: str, f: VideoFilter = VideoFilter(), sort: str = "relevance",  # noqa: ANN001, B008
        offset: int = 0, size: int = 20, semantic: bool = True):  # noqa: ANN201
    VIDEOS_BY_ID.update({v: k for k, v in world.items()})
    index = SemanticIndex(sessions)
    index.refresh()
    search = VideoSearch(index, encode_texts if semantic else None, 0.5, 200, 0.45)
    with sessions() as s:
        return search.search(s, world["viewer"], q, f, sort, offset, size)


def test_lexical_matches_stems_and_respects_visibility(sessions, world) -> None:  # noqa: ANN001
    page = run(sessions, world, "cat jumping", semantic=False)
    assert titles(page)[0] == "funny cat jumps off the sofa #cats", "stemmed: jumping ~ jumps"
    assert set(titles(page)) == {"funny cat jumps off the sofa #cats"}, \
        "private, followers-only, processing, held and blocked videos are never found"
    assert page.total == 1 and not page.semantic
    by_creator = run(sessions, world, "wonder", semantic=False)
    assert set(titles(by_creator)) == {"funny cat jumps off the sofa #cats", "quick pasta salad"}


def test_semantic_blend_finds_synonyms(sessions, world) -> None:  # noqa: ANN001
    lexical = run(sessions, world, "hilarious kitty", semantic=False)
    assert titles(lexical) == ["hilarious kitten compilation"]
    blended = run(sessions, world, "funny kitten videos")
    assert blended.semantic
    assert set(titles(blended)[:2]) == {"funny cat jumps off the sofa #cats",
                                        "hilarious kitten compilation"}
    assert "mountain bike downhill run" not in titles(blended), "unrelated stays out"
    assert "cat from a blocked creator" not in titles(blended)
    only = run(sessions, world, "adorable kittens")  # no word of it is in any title
    assert "hilarious kitten compilation" in titles(only)
    assert only.total == len(only.hits)


def test_filters_sorts_and_pages(sessions, world) -> None:  # noqa: ANN001
    pasta = "cooking pasta carbonara #food"
    assert set(titles(run(sessions, world, "pasta", VideoFilter(category="cooking"),
                          semantic=False))) == {pasta, "quick pasta salad"}
    assert titles(run(sessions, world, "pasta", VideoFilter(min_ms=60_000),
                      semantic=False)) == [pasta]
    assert titles(run(sessions, world, "pasta", VideoFilter(max_ms=60_000),
                      semantic=False)) == ["quick pasta salad"]
    assert titles(run(sessions, world, "pasta", VideoFilter(category="sports"))) == []
    views = titles(run(sessions, world, "pasta salad carbonara", sort="views", semantic=False))
    assert views == ["quick pasta salad", pasta]  # 300 views before 200
    recent = titles(run(sessions, world, "pasta salad carbonara", sort="recent",
                        semantic=False))
    assert recent == [pasta, "quick pasta salad"]
    first = run(sessions, world, "pasta salad carbonara", size=1, semantic=False)
    second = run(sessions, world, "pasta salad carbonara", offset=1, size=1, semantic=False)
    assert first.more and not second.more and titles(first) != titles(second)
    with pytest.raises(Invalid) as err:
        run(sessions, world, " ?! ")
    assert err.value.field == "q"


def test_documents_follow_the_rows(sessions, world) -> None:  # noqa: ANN001
    funny = world["funny cat jumps off the sofa #cats"]
    review = world["cat awaiting review"]
    with sessions.begin() as s:
        s.get(Video, funny).status = VideoStatus.REMOVED
        s.get(Video, review).moderation = Moderation.APPROVED
        sync_videos(s, [funny, review], encode_texts)
    found = titles(run(sessions, world, "cat", semantic=False))
    assert "funny cat jumps off the sofa #cats" not in found
    assert "cat awaiting review" in found
    with sessions.begin() as s:
        s.get(Video, review).visibility = Visibility.PRIVATE
        sync_videos(s, [review], encode_texts)
    assert "cat awaiting review" not in titles(run(sessions, world, "cat"))


def test_users_by_prefix(sessions, world) -> None:  # noqa: ANN001
    def names(q: str) -> list[str]:
        with sessions() as s:
            return [u.username for u, _ in search_users(s, world["viewer"], q, 0, 10)[0]]

    assert names("ali") == ["alice"]
    assert names("wond") == ["alice"], "display names count"
    assert names("alice wonder") == ["alice"]
    assert names("alice_won:*&|!") == ["alice"], "no query syntax reaches either engine"
    assert names("carol") == [], "blocked either way: not found"
    assert names("zed") == []
    with sessions.begin() as s:
        s.get(User, world["bob"]).display_name = "Bobby Tables"
    assert names("tables") == ["bob"], "a renamed user is found by the new name"
    with sessions() as s:
        assert lexical_backend(s).name in ("sqlite-fts5", "postgresql-fts")


def _fresh_statistics(sessions: sessionmaker[Session]) -> None:
    """PostgreSQL's word frequencies come from ANALYZE (autovacuum's, in production)."""
    with sessions.begin() as s:
        if s.get_bind().dialect.name == "postgresql":
            s.execute(text("ANALYZE search_videos"))
    backends._pg_stats.clear()


def test_common_words_score_but_do_not_match_alone(sessions, world,  # noqa: ANN001
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backends, "COMMON_TERM_DOCS", 1)  # "pasta" (2 documents) is common
    _fresh_statistics(sessions)
    with sessions() as s:
        assert lexical_backend(s).doc_freqs(s, ["pasta", "salad", "zebra"]) == {
            "pasta": 2, "salad": 1, "zebra": 0}
    page = run(sessions, world, "pasta salad", semantic=False)
    assert titles(page) == ["quick pasta salad"], "a common word alone does not match"
    assert page.total == 2 and page.total_exact, "the total counts every holder of any word"
    newest = run(sessions, world, "pasta", semantic=False)
    assert titles(newest) == ["quick pasta salad"], "only the newest of a common word's matches"
    assert newest.total == 2


@pytest.mark.parametrize("docs", [0, 1, 3, 10**6])
def test_the_newest_matches_whatever_the_frequency_hint(sessions, world, docs: int,  # noqa: ANN001
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL reads an id window sized by ``docs`` first and older ids only when it holds
    too few: a wrong hint costs time, never results."""
    monkeypatch.setattr(backends, "COMMON_TERM_DOCS", 1)
    _fresh_statistics(sessions)
    with sessions() as s:
        engine = lexical_backend(s)
        every_match = engine.ranked(s, ["cat"], ["cat"], VideoFilter(), 100, every=False)
        newest = engine.ranked(s, ["cat"], ["cat"], VideoFilter(), 100, every=True, docs=docs)
        cooking = engine.ranked(s, ["pasta"], ["pasta"], VideoFilter(category="cooking"), 100,
                                every=True, docs=docs)
    assert len(every_match) == 2, "more than the one newest"
    assert [v for v, _ in newest] == [max(v for v, _ in every_match)]
    assert [v for v, _ in cooking] == [max(world[t] for t in (
        "cooking pasta carbonara #food", "quick pasta salad"))]


def test_total_past_the_bound_is_an_estimate_on_postgres(sessions, world,  # noqa: ANN001
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backends, "EXACT_TOTAL_UP_TO", 1)
    _fresh_statistics(sessions)
    one_candidate = VideoSearch(None, None, 0.5, 1, 0.45)  # so not every match is ranked
    with sessions() as s:
        page = one_candidate.search(s, world["viewer"], "pasta", VideoFilter(), "relevance",
                                    0, 20)
        postgres = s.get_bind().dialect.name == "postgresql"
    assert len(page.hits) == 1
    if postgres:  # the planner's estimate, said to be one
        assert not page.total_exact and page.total >= 2
    else:  # FTS5 counts from its index: always exact
        assert page.total_exact and page.total == 2


def test_a_relevance_page_reads_only_its_best_candidates(sessions, world,  # noqa: ANN001
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    VIDEOS_BY_ID.update({v: k for k, v in world.items()})
    monkeypatch.setattr(service, "READ_FIRST", 1)
    index = SemanticIndex(sessions)
    index.refresh()
    every_video = VideoSearch(index, encode_texts, 0.5, 200, -1.0)  # all 6 are candidates
    with sessions() as s:
        def page(offset: int, size: int):  # noqa: ANN202
            return every_video.search(s, world["viewer"], "cat", VideoFilter(), "relevance",
                                      offset, size)

        full = page(0, 10)
        first, second = page(0, 1), page(1, 1)
    assert len(full.hits) >= 3 and full.total_exact, "all candidates read: exact"
    assert "cat from a blocked creator" not in titles(full)
    assert titles(first) + titles(second) == titles(full)[:2], "same order, read in part"
    assert first.more and second.more
    assert not first.total_exact, "candidates left unread: the total is an estimate"
    assert first.total >= full.total
