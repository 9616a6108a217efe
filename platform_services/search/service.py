"""Video and user search: filters, the lexical + semantic relevance blend, sorts, pages.

Relevance of a video = ``w * lexical / best lexical + (1 - w) * max(cosine, 0)``: the engine's
best candidates (any query word, stemmed; :mod:`.backends` says how common words count) plus
documents whose MiniLM vector is within ``min_similarity`` of the query's, so "funny cat" also
finds "hilarious kitten". ``w`` is ``search_lexical_weight`` (chosen on validation queries by
``benchmarks/search_synonyms.py``).
Every hit is re-read from ``search_videos`` joined with its video, under the filters, the live
visibility rule and without creators across a block, so a page shows what the index holds now
and nothing that stopped being public since it was indexed (a relevance page reads only its best
candidates: see :meth:`VideoSearch._read`). ``total_results`` counts the lexical matches
(documents with any query word; on PostgreSQL an estimate past ``backends.EXACT_TOTAL_UP_TO``)
less those found hidden, plus the semantic-only hits; ``total_exact`` says whether it is exact.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

import numpy as np
from sqlalchemy import Row, TextClause, bindparam, select, text
from sqlalchemy.orm import Session

from platform_services.errors import Invalid
from platform_services.search.backends import (
    LexicalHits,
    VideoFilter,
    lexical_backend,
    terms,
)
from platform_services.search.documents import Encoder
from platform_services.search.models import SearchVideo
from platform_services.search.semantic import SemanticIndex
from platform_services.social import blocked_users_either_way
from platform_services.storage.models import (
    Moderation,
    User,
    VideoStatus,
    Visibility,
)
from platform_services.storage.social_models import UserStats

# Short videos are the app's norm; "long" is past a minute.
DURATIONS: dict[str, tuple[int | None, int | None]] = {
    "short": (None, 15_000), "medium": (15_000, 60_000), "long": (60_000, None)}
SORTS = ("relevance", "views", "recent")
READ_FIRST = 64  # candidates read for a relevance page (at least twice the page), then doubled


@dataclass(frozen=True)
class VideoHit:
    video_id: int
    owner_id: int
    title: str
    duration_ms: int | None
    created_at: datetime
    views: int
    likes: int
    comments: int
    shares: int
    relevance: float
    lexical: float  # the engine's score normalised to [0, 1] (0: not a lexical match)
    semantic: float  # cosine similarity to the query (0 without the encoder)


@dataclass(frozen=True)
class VideoPage:
    hits: list[VideoHit]
    total: int
    more: bool
    semantic: bool  # whether the semantic half took part
    total_exact: bool = True  # False: ``total`` holds the engine's estimate of its matches


def query_hash(*parts: object) -> str:
    """Binds a cursor to the query, filters and sort it was made for."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def check_query(q: str) -> list[str]:
    words = terms(q)
    if not words:
        raise Invalid("q must contain at least one letter or digit", field="q")
    return words


# The live rule (``documents.searchable``): a document written while its video was public stays
# until the search worker hears of a change, so every hit is checked against its video. In
# Python, on the rows read by id: as SQL, SQLite's planner scanned ``videos`` by status instead
# (57 ms a query on 100k videos).
SEARCHABLE = (VideoStatus.READY, Moderation.APPROVED, Visibility.PUBLIC)


class VideoSearch:
    """Search over ``search_videos`` with one process's semantic index and query encoder."""

    def __init__(self, semantic: SemanticIndex | None, encode: Encoder | None,
                 lexical_weight: float = 0.5, candidates: int = 200,
                 min_similarity: float = 0.45) -> None:
        self.semantic, self.encode = semantic, encode
        self.w, self.candidates, self.min_similarity = lexical_weight, candidates, min_similarity

    def _query_vector(self, q: str) -> np.ndarray | None:
        if self.encode is None or self.semantic is None:
            return None
        return np.asarray(self.encode([q.strip().lower()])[0], np.float32)

    def scores(self, session: Session, q: str, f: VideoFilter
               ) -> tuple[dict[int, tuple[float, float]], LexicalHits, bool]:
        """Candidates as video_id -> (normalised lexical, cosine), the engine's answer (its
        match count), and whether the semantic half ran."""
        words = check_query(q)
        found = lexical_backend(session).videos(session, words, f, self.candidates)
        best = max((s for _, s in found.hits), default=0.0) or 1.0
        out = {v: (s / best, 0.0) for v, s in found.hits}
        qv = self._query_vector(q)
        if qv is not None:
            assert self.semantic is not None
            for v, sim in self.semantic.similarity(qv, list(out)).items():
                out[v] = (out[v][0], sim)
            for v, sim in self.semantic.search(qv, self.candidates):
                if v not in out and sim >= self.min_similarity:
                    out[v] = (0.0, sim)
        return out, found, qv is not None

    def search(self, session: Session, viewer_id: int, q: str, f: VideoFilter, sort: str,
               offset: int, size: int) -> VideoPage:
        cands, lexical, semantic = self.scores(session, q, f)
        relevance = {v: self._blend(*scores) for v, scores in cands.items()}
        order = sorted(cands, key=lambda v: (relevance[v], v), reverse=True)
        rows, read = self._read(session, viewer_id, order, f,
                                offset + size + 1 if sort == "relevance" else len(order))
        when = _created_at(session)
        key = {"relevance": lambda r: (relevance[r.video_id], r.video_id),
               "views": lambda r: (r.views or 0, relevance[r.video_id], r.video_id),
               "recent": lambda r: (when(r.created_at), r.video_id)}[sort]
        rows.sort(key=key, reverse=True)
        # Lexical matches the filters / blocks dropped are not results; semantic-only are
        # (those not read yet counted as shown: then the total is not exact).
        lexical_shown = sum(1 for r in rows if cands[r.video_id][0] > 0.0)
        dropped = sum(1 for v in order[:read] if cands[v][0] > 0.0) - lexical_shown
        unread_semantic = sum(1 for v in order[read:] if cands[v][0] == 0.0)
        total = lexical.total - dropped + (len(rows) - lexical_shown) + unread_semantic
        hits = [VideoHit(r.video_id, r.owner_id, r.title, r.duration_ms, when(r.created_at),
                         r.views or 0, r.likes or 0, r.comments or 0, r.shares or 0,
                         relevance[r.video_id], *cands[r.video_id])
                for r in rows[offset:offset + size]]
        return VideoPage(hits, total, offset + size < len(rows), semantic,
                         lexical.exact and read == len(order))

    def _blend(self, lexical: float, cosine: float) -> float:
        return self.w * lexical + (1 - self.w) * max(cosine, 0.0)

    @staticmethod
    def _read(session: Session, viewer_id: int, order: list[int], f: VideoFilter,
              wanted: int) -> tuple[list[Row], int]:
        """The live rows of the best candidates (``order``: best first) until ``wanted`` of
        them are live, and how many candidates were read. A relevance page needs only its
        own rows (and one more for ``has_more``): reading all ~300 candidates cost 10 ms on
        100k documents (each a lookup in three tables), the first 64 ~2 ms."""
        blocked = blocked_users_either_way(session, viewer_id) if order else set()
        rows: list[Row] = []
        read, step = 0, max(READ_FIRST, 2 * wanted)
        while len(rows) < wanted and read < len(order):
            rows += VideoSearch._live_rows(session, order[read:read + step], f, blocked)
            read, step = min(read + step, len(order)), step * 2
        return rows, read

    @staticmethod
    def _live_rows(session: Session, ids: list[int], f: VideoFilter,
                   blocked: set[int]) -> list[Row]:
        """The candidates that pass the filters, the live visibility rule and blocks, in
        one narrow SQL statement read by primary key, as plain tuples (the ORM's objects cost
        ~8 ms for 200 candidates, these ~1 ms): statuses compare as strings (``StrEnum``),
        timestamps are converted only where read (:func:`_created_at`)."""
        where, params = f.sql("sv")
        sql = _live_rows_sql(where, session.get_bind().dialect.name == "postgresql")
        rows = session.execute(sql, params | {"ids": ids})
        return [r for r in rows if r.owner_id not in blocked
                and (r.status, r.moderation, r.visibility) == SEARCHABLE]


@lru_cache(maxsize=32)  # one per filter shape (at most 8) and dialect, built once
def _live_rows_sql(where: str, postgres: bool) -> TextClause:
    # PostgreSQL: one array parameter (200 "IN" parameters cost 1.4 ms of planning a query).
    ids = "= ANY(CAST(:ids AS bigint[]))" if postgres else "IN :ids"
    sql = text(
        "SELECT sv.video_id, sv.owner_id, sv.title, sv.duration_ms, sv.created_at, "
        "st.views, st.likes, st.comments, st.shares, v.status, v.moderation, v.visibility "
        "FROM search_videos sv JOIN videos v ON v.id = sv.video_id "
        "LEFT JOIN video_stats st ON st.video_id = sv.video_id "
        f"WHERE sv.video_id {ids}{where}")
    return sql if postgres else sql.bindparams(bindparam("ids", expanding=True))


def _created_at(session: Session) -> Callable[[object], datetime]:
    """The database's raw ``created_at`` -> aware UTC datetime (``UTCDateTime``'s own result
    processing for this dialect: a string on SQLite, a datetime on PostgreSQL)."""
    dialect = session.get_bind().dialect
    convert = SearchVideo.__table__.c.created_at.type.dialect_impl(dialect).result_processor(
        dialect, None)
    return convert if convert is not None else lambda value: value  # type: ignore[return-value]


def search_users(session: Session, viewer_id: int, q: str, offset: int,
                 size: int) -> tuple[list[tuple[User, int]], bool]:
    """Users whose username or display name has words starting with every query word, best
    match first, with their follower counts; creators across a block are left out."""
    words = check_query(q)
    ids = lexical_backend(session).users(session, words, size + 1, offset)
    more, ids = len(ids) > size, ids[:size]
    blocked = blocked_users_either_way(session, viewer_id)
    users = {u.id: u for u in session.scalars(select(User).where(User.id.in_(ids)))}
    followers = dict(session.execute(select(UserStats.user_id, UserStats.followers)
                                     .where(UserStats.user_id.in_(ids))).all())
    return [(users[i], int(followers.get(i, 0))) for i in ids
            if i in users and i not in blocked], more


