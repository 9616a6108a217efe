"""The lexical half of search behind one interface, chosen by the database's dialect.

Both engines get the same sanitised query terms (words of ``q``, at most :data:`MAX_TERMS`)
matched with OR and ranked by the engine's own relevance (more matched terms and rarer terms
rank higher): SQLite FTS5 with BM25 (title 4x, tags and creator 2x, description 1x, porter
stemming), PostgreSQL ``ts_rank`` over a weighted ``tsvector`` (title A, tags and creator B,
description C, english stemming) stored beside each document and served by a GIN index.
Users match by word prefix on username and display name. Scores are returned as "higher is
better"; the blend normalises.

**Top-k with bounded work** (the cost of ranking grows with the number of matches, and a
two-word query of common words matched 16k of 100k documents: 15-30 ms of BM25 alone). As
Lucene's "common terms" query does, a word in more than :data:`COMMON_TERM_DOCS` documents is
*common*: it still scores, but it does not make a document a candidate on its own. The ranked
candidates are the documents holding every word (the newest :data:`COMMON_TERM_DOCS` of them)
plus those holding any rare word; each gets the engine's score for the whole query (exact for
both kinds except a document with a rare word and only some of the common ones, scored
without those). A query of rare words only is ranked as before, over every match.
``total`` still counts every document that holds any word: exactly on SQLite (FTS5 counts
from its index), and on PostgreSQL exactly up to :data:`EXACT_TOTAL_UP_TO` and past it the
planner's estimate (``exact`` is false), as search engines report "about N results".
"""

from __future__ import annotations

import abc
import json
import re
import time
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session

MAX_TERMS = 16
COMMON_TERM_DOCS = 2000  # a word in more documents is "common": it scores but does not match
EXACT_TOTAL_UP_TO = 1000  # PostgreSQL counts matches exactly up to here, then estimates
_WORD = re.compile(r"[^\W_]+", re.UNICODE)  # letters and digits; ``_`` separates

# Must match migration 0008's users index expression character for character (the videos'
# weighted document is the stored column ``search_videos.search_fts_doc`` of that migration).
PG_USER_DOC = (
    "to_tsvector('simple'::regconfig, (username::text || ' ' || "
    "coalesce(display_name, '')::text))"
)


def terms(q: str) -> list[str]:
    """Lower-cased words of ``q`` (runs of letters and digits), de-duplicated, in order."""
    return list(dict.fromkeys(w.lower() for w in _WORD.findall(q)))[:MAX_TERMS]


@dataclass(frozen=True)
class VideoFilter:
    category: str | None = None
    min_ms: int | None = None  # duration bounds, inclusive / exclusive
    max_ms: int | None = None

    def sql(self, alias: str = "sv") -> tuple[str, dict]:
        clauses, params = [], {}
        if self.category is not None:
            clauses.append(f"{alias}.category = :category")
            params["category"] = self.category
        if self.min_ms is not None:
            clauses.append(f"{alias}.duration_ms >= :min_ms")
            params["min_ms"] = self.min_ms
        if self.max_ms is not None:
            clauses.append(f"{alias}.duration_ms < :max_ms")
            params["max_ms"] = self.max_ms
        return "".join(f" AND {c}" for c in clauses), params


@dataclass(frozen=True)
class LexicalHits:
    hits: list[tuple[int, float]]  # (video_id, score), best first
    total: int  # documents holding any word (under the filter)
    exact: bool = True  # False: ``total`` is an estimate (past EXACT_TOTAL_UP_TO)


class LexicalBackend(abc.ABC):
    """What an engine must answer; every call runs in the caller's session."""

    name: str

    def videos(self, session: Session, words: list[str], f: VideoFilter,
               limit: int) -> LexicalHits:
        """Best ``limit`` (video_id, score) of the candidates (see the module's doc), best
        first, and how many documents hold any word (under the filter)."""
        freqs = self.doc_freqs(session, words)
        rare = [w for w in words if freqs.get(w, 0) <= COMMON_TERM_DOCS]
        if len(rare) == len(words):
            hits = self.ranked(session, words, words, f, limit, every=False)
            if len(hits) < limit:
                return LexicalHits(hits, len(hits))  # every match is here
        else:  # documents with every word (the newest, bounded), and any with a rare word
            found = dict(self.ranked(session, words, words, f, limit, every=True,
                                     docs=min(n for n in freqs.values() if n)))
            for v, score in self.ranked(session, rare, words, f, limit, False) if rare else []:
                found[v] = max(score, found.get(v, score))
            hits = sorted(found.items(), key=lambda h: (h[1], h[0]), reverse=True)[:limit]
        total, exact = self.count(session, words, f, max(freqs.values(), default=0))
        return LexicalHits(hits, total, exact)

    @abc.abstractmethod
    def doc_freqs(self, session: Session, words: list[str]) -> dict[str, int]:
        """About how many documents hold each word (exact or an estimate)."""

    @abc.abstractmethod
    def ranked(self, session: Session, match: list[str], scored: list[str], f: VideoFilter,
               limit: int, every: bool, docs: int = 0) -> list[tuple[int, float]]:
        """Best ``limit`` documents holding every word of ``match`` (``every``: only the
        newest COMMON_TERM_DOCS of them are ranked) or any, scored for the words ``scored``
        (FTS5's bm25 scores the MATCH expression's words: for a document without the other
        words of ``scored`` that is the same score). ``docs``: about how many documents hold
        every word of ``match`` (at most; 0 if unknown), which an engine may use to bound
        its work."""

    @abc.abstractmethod
    def count(self, session: Session, words: list[str], f: VideoFilter,
              at_least: int) -> tuple[int, bool]:
        """How many documents hold any word, and whether that number is exact; ``at_least``:
        the largest of the words' document frequencies (:meth:`doc_freqs`)."""

    @abc.abstractmethod
    def users(self, session: Session, words: list[str], limit: int,
              offset: int) -> list[int]:
        """User ids whose username / display name has a word starting with every word."""


class SqliteFts(LexicalBackend):
    name = "sqlite-fts5"

    @staticmethod
    def _match(words: list[str], op: str = " OR ", prefix: bool = False) -> str:
        star = "*" if prefix else ""
        return op.join(f'"{w}"{star}' for w in words)  # quoted: no FTS5 syntax gets through

    def doc_freqs(self, session: Session, words: list[str]) -> dict[str, int]:
        # FTS5 counts from its index alone: ~0.1 ms a word on 100k documents.
        counts = ", ".join(f"(SELECT count(*) FROM search_fts_videos WHERE search_fts_videos "
                           f"MATCH :w{i})" for i in range(len(words)))
        row = session.execute(text(f"SELECT {counts}"),
                              {f"w{i}": self._match([w]) for i, w in enumerate(words)}).one()
        return dict(zip(words, map(int, row), strict=True))

    def ranked(self, session: Session, match: list[str], scored: list[str], f: VideoFilter,
               limit: int, every: bool, docs: int = 0) -> list[tuple[int, float]]:
        where, params = f.sql()
        params |= {"m": self._match(match, " AND " if every else " OR "), "limit": limit}
        score = "-bm25(search_fts_videos, 4.0, 1.0, 2.0, 2.0)"
        matches = f"FROM {self._source(where)} WHERE search_fts_videos MATCH :m{where}"
        if every:  # rank the newest matches only: bounded work for a query of common words
            sql = (f"SELECT id, score FROM (SELECT {self._id} AS id, {score} AS score "
                   f"{matches} ORDER BY {self._id} DESC LIMIT :cap) "
                   "ORDER BY score DESC, id DESC LIMIT :limit")
            params["cap"] = COMMON_TERM_DOCS
        else:
            sql = (f"SELECT {self._id}, {score} AS score {matches} "
                   f"ORDER BY score DESC, {self._id} DESC LIMIT :limit")
        return [(int(v), float(s)) for v, s in session.execute(text(sql), params)]

    def count(self, session: Session, words: list[str], f: VideoFilter,
              at_least: int) -> tuple[int, bool]:
        # FTS5 does not allow bm25() beside a window function: a second, cheap statement.
        where, params = f.sql()
        return int(session.execute(text(
            f"SELECT count(*) FROM {self._source(where)} WHERE search_fts_videos MATCH :m{where}"),
            params | {"m": self._match(words)}).scalar_one()), True

    # The FTS rowid is the video id: without filters the documents table is not joined.
    # Joining it costs a lookup per match (4x the time of a common-word query), and FTS5
    # counts matches from its index alone (0.3 ms against 9 ms joined, on 100k documents).
    _id = "search_fts_videos.rowid"

    @staticmethod
    def _source(where: str) -> str:
        return ("search_fts_videos JOIN search_videos sv ON sv.video_id = search_fts_videos.rowid"
                if where else "search_fts_videos")

    def users(self, session: Session, words: list[str], limit: int, offset: int) -> list[int]:
        rows = session.execute(text(
            "SELECT rowid FROM search_fts_users WHERE search_fts_users MATCH :m "
            "ORDER BY rank, rowid LIMIT :limit OFFSET :offset"),
            {"m": self._match(words, " AND ", prefix=True), "limit": limit, "offset": offset})
        return [int(r[0]) for r in rows]


class PostgresFts(LexicalBackend):
    name = "postgresql-fts"

    @staticmethod
    def _or(words: list[str]) -> str:
        return " or ".join(words)  # websearch_to_tsquery syntax; words are letters/digits

    def doc_freqs(self, session: Session, words: list[str]) -> dict[str, int]:
        # The planner's statistics (ANALYZE, autovacuum) know the ~1,000 most common lexemes
        # and their frequencies; a lexeme not among them is rarer than all of those.
        lexemes = session.execute(text(
            "SELECT w, tsvector_to_array(to_tsvector('english', w)) "
            "FROM unnest(CAST(:words AS text[])) AS w"), {"words": words}).all()
        freqs, rows, _, _ = _pg_lexeme_stats(session)
        return {w: int(rows * max((freqs.get(x, 0.0) for x in lex), default=0.0))
                for w, lex in lexemes}

    def ranked(self, session: Session, match: list[str], scored: list[str], f: VideoFilter,
               limit: int, every: bool, docs: int = 0) -> list[tuple[int, float]]:
        # ``ts_rank`` (term frequency, weighted) rather than ``ts_rank_cd`` (cover density):
        # on 100k documents cover density cost ~1.6x as much per match. Always ranked
        # against the OR of every word, so both kinds of candidates score alike.
        where, params = f.sql()
        params |= {"m": (" " if every else " or ").join(match), "s": self._or(scored),
                   "limit": limit, "cap": COMMON_TERM_DOCS}
        matching = ("SELECT sv.video_id, sv.search_fts_doc FROM search_videos sv "
                    f"WHERE sv.search_fts_doc @@ websearch_to_tsquery('english', :m){where}")
        if every:  # rank the newest matches only: bounded work for a query of common words
            matching = self._newest(session, matching, docs, params)
        sql = text("SELECT d.video_id, ts_rank(d.search_fts_doc, s) AS score "
                   f"FROM ({matching}) d, websearch_to_tsquery('english', :s) s "
                   "ORDER BY score DESC, d.video_id DESC LIMIT :limit")
        if not every:
            return [(int(v), float(sc)) for v, sc in session.execute(sql, params)]
        # The planner prices testing each row of the id window (30k rows: 28 ms) below a
        # bitmap AND of both indexes (2.5k rows: 11 ms), as it undercosts ``@@``: only
        # bitmap scans for this statement.
        session.execute(text("SET LOCAL enable_indexscan = off"))
        try:
            return [(int(v), float(sc)) for v, sc in session.execute(sql, params)]
        finally:
            session.execute(text("SET LOCAL enable_indexscan TO DEFAULT"))

    @staticmethod
    def _newest(session: Session, matching: str, docs: int, params: dict) -> str:
        """``matching`` cut to its newest COMMON_TERM_DOCS rows, reading about that many.

        A GIN index yields matches in no useful order, so the newest ``cap`` of a word in
        10 % of 100k rows meant fetching all 10k rows from the heap (25-35 ms). The newest
        ids likely to hold ``cap`` matches (1.25x the share ``docs`` says, spread over the id
        range) are read first, a bitmap AND of the primary key's range and the GIN index;
        only when they hold fewer (filters, or words that seldom meet) are older ids read,
        in the same statement. ``+ 0``: not the primary key's order, or the planner may
        walk the key backwards testing every row (55 ms for a word in 4 % of the rows)."""
        _, rows, lo_id, hi_id = _pg_lexeme_stats(session)
        share = min(1.0, docs / rows) if docs and rows else 1.0
        ids_per_doc = max(1.0, (hi_id - lo_id + 1) / rows) if rows else 1.0
        params["lo"] = hi_id - int(1.25 * params["cap"] / share * ids_per_doc)
        newest = f"{matching} AND sv.video_id >= :lo ORDER BY sv.video_id + 0 DESC LIMIT :cap"
        older = (f"{matching} AND sv.video_id < :lo AND (SELECT count(*) FROM newest) < :cap "
                 "ORDER BY sv.video_id + 0 DESC LIMIT :cap")
        return (f"WITH newest AS MATERIALIZED ({newest}) SELECT * FROM (SELECT * FROM newest "
                f"UNION ALL ({older})) n ORDER BY video_id DESC LIMIT :cap")

    def count(self, session: Session, words: list[str], f: VideoFilter,
              at_least: int) -> tuple[int, bool]:
        # Counting reads every matching row (a bitmap heap scan: 9 ms for 16k matches), so
        # past EXACT_TOTAL_UP_TO the planner's estimate is reported; when the statistics
        # already say a word is that common, the exact attempt is skipped.
        where, params = f.sql()
        matching = ("FROM search_videos sv WHERE sv.search_fts_doc @@ "
                    f"websearch_to_tsquery('english', :q){where}")
        params |= {"q": self._or(words)}
        if at_least <= EXACT_TOTAL_UP_TO:
            exact = session.execute(text(
                f"SELECT count(*) FROM (SELECT 1 {matching} LIMIT :cap) x"),
                params | {"cap": EXACT_TOTAL_UP_TO + 1}).scalar_one()
            if exact <= EXACT_TOTAL_UP_TO:
                return int(exact), True
        plan = session.execute(text(f"EXPLAIN (FORMAT JSON) SELECT 1 {matching}"),
                               params).scalar_one()
        plan = json.loads(plan) if isinstance(plan, str) else plan
        return max(EXACT_TOTAL_UP_TO + 1, int(plan[0]["Plan"]["Plan Rows"])), False

    def users(self, session: Session, words: list[str], limit: int, offset: int) -> list[int]:
        query = " & ".join(f"{w}:*" for w in words)  # letters and digits only: no syntax
        rows = session.execute(text(
            f"SELECT id FROM users WHERE ({PG_USER_DOC}) @@ to_tsquery('simple', :q) "
            f"ORDER BY ts_rank(({PG_USER_DOC}), to_tsquery('simple', :q)) DESC, id "
            "LIMIT :limit OFFSET :offset"), {"q": query, "limit": limit, "offset": offset})
        return [int(r[0]) for r in rows]


def lexical_backend(session: Session) -> LexicalBackend:
    """FTS5 on SQLite, full-text search on PostgreSQL: the database URL decides."""
    dialect = session.get_bind().dialect.name
    return PostgresFts() if dialect == "postgresql" else SqliteFts()


_STATS_TTL_S = 60.0
_pg_stats: dict[str, tuple[float, dict[str, float], float, int, int]] = {}


def _pg_lexeme_stats(session: Session) -> tuple[dict[str, float], float, int, int]:
    """(lexeme -> fraction of documents, number of documents, lowest and highest video id)
    of ``search_videos`` from ``pg_stats`` and its primary key, re-read once a minute per
    database; no lexemes before the first ANALYZE (then every word counts as rare: ranked
    over every match, as without this bound)."""
    key = str(session.get_bind().url)
    found = _pg_stats.get(key)
    if found is None or found[0] < time.monotonic():
        row = session.execute(text(
            "SELECT s.most_common_elems::text::text[], s.most_common_elem_freqs, c.reltuples, "
            "(SELECT min(video_id) FROM search_videos), (SELECT max(video_id) FROM search_videos) "
            "FROM pg_class c LEFT JOIN pg_stats s ON s.schemaname = current_schema() "
            "AND s.tablename = 'search_videos' AND s.attname = 'search_fts_doc' "
            "WHERE c.oid = 'search_videos'::regclass")).one()
        elems, fracs, rows, lo_id, hi_id = row
        freqs = dict(zip(elems, fracs, strict=False)) if elems else {}  # fracs: 3 extra
        found = _pg_stats[key] = (time.monotonic() + _STATS_TTL_S, freqs, max(float(rows), 0.0),
                                  int(lo_id or 0), int(hi_id or 0))
    return found[1:]
