"""Comments: replies of any depth (up to :data:`MAX_DEPTH`), threads newest first with cursor
pagination, edit by the author, delete by the author or a moderator.

Storage is an adjacency list (``parent_id``) plus a thread-relative materialized path:
``path`` is the concatenated :func:`segment` of every ancestor and the comment itself, so a
thread in display order (each comment followed by its replies, oldest first) is one range of
the ``(root_id, path)`` index, and a page after a cursor is ``path > cursor LIMIT n``: the
cost is the page, not the thread. ``benchmarks/comments.py`` measured it against a recursive
CTE over ``parent_id`` (its reads grow with the thread: 50 replies of a 1,500-comment thread
took 12 ms median on both databases, against 0.4 ms on SQLite and 4 ms on PostgreSQL by path)
and nested sets (as fast to read, but an insert renumbers the video: 55 ms median on SQLite,
711 ms on PostgreSQL, and it serializes every commenter of a video); see
``benchmarks/results/comments.md``.

A deleted comment stays as a tombstone (empty body, ``deleted_at``) so its replies keep their
place. Comments by someone the viewer blocked are left out, together with their replies.
"""

from __future__ import annotations

import re
from collections.abc import Set
from dataclasses import dataclass, field
from functools import lru_cache

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Integer,
    Row,
    Select,
    Text,
    TextualSelect,
    bindparam,
    func,
    select,
    text,
    true,
)
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session

from core.clock import utcnow
from core.events import Action, UserInteraction
from platform_services.bus.outbox import emit
from platform_services.errors import Forbidden, Invalid, NotFound
from platform_services.social import blocked_ids, check_visible, visible_video
from platform_services.storage.models import User
from platform_services.storage.social_models import Comment

# A segment is at most 14 characters (ids < 2^63 are 13 base-36 digits), so the deepest path
# (1,400 characters) stays under the column's 2,048 and PostgreSQL's btree entry limit.
MAX_DEPTH = 100
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
PATH_CURSOR = re.compile(r"[0-9a-z]{2,2048}")


def segment(comment_id: int) -> str:
    """One path segment: a hex length digit, then base-36 digits; byte order = id order."""
    digits = ""
    while comment_id:
        comment_id, d = divmod(comment_id, 36)
        digits = _DIGITS[d] + digits
    return f"{len(digits):x}{digits}"


# What a tree answer reads of a comment and its author, joined in the same statement: plain
# rows, not ORM objects. A page holds up to ~1,000 comments; loading them as tracked entities
# and then their authors with an IN list of hundreds of ids was most of its CPU.
ROW = (*(Comment.__table__.c[name] for name in (
    "id", "video_id", "author_id", "parent_id", "root_id", "depth", "path", "body",
    "created_at", "edited_at", "deleted_at")),
    User.username, User.display_name, User.avatar_url, User.verified)


_ID, _PARENT_ID, _ROOT_ID, _PATH = 0, 3, 4, 6  # positions in :data:`ROW`


def _rows() -> Select:
    return select(*ROW).join(User, User.id == Comment.author_id)


@dataclass(slots=True)
class Node:
    """A comment in a tree answer; ``replies`` in display order."""

    comment: Row | tuple  # :data:`ROW`'s columns in its order
    replies: list[Node] = field(default_factory=list)
    more_replies_after: str | None = None  # a cursor for /replies when the thread was cut


def as_row(comment: Comment, author: User) -> tuple:
    """A comment just written and its author as a :data:`ROW` tuple (what pages hold)."""
    return (*(getattr(comment, c.name) for c in ROW[:11]), author.username,
            author.display_name, author.avatar_url, author.verified)


@dataclass
class Page:
    """Threads (or replies) in display order; each node's comment is a :data:`ROW` row, which
    carries its author's columns too."""

    threads: list[Node]
    next_cursor: str | None


def _event(session: Session, user_id: int, action: Action, video_id: int,
           author_id: int, comment_id: int | None = None) -> None:
    emit(session, UserInteraction(user_id=user_id, action=action, video_id=video_id,
                                  author_id=author_id, comment_id=comment_id))


def add(session: Session, user_id: int, video_id: int, body: str,
        parent_id: int | None = None) -> Comment:
    """A new comment (or a reply to ``parent_id``, which must be a live comment of the same
    video) on a video the user may see."""
    video = visible_video(session, user_id, video_id)
    parent = None
    if parent_id is not None:
        parent = session.get(Comment, parent_id)
        if parent is None or parent.video_id != video_id or parent.deleted_at is not None:
            raise Invalid("no such comment on this video", field="parent_comment_id")
        if parent.depth + 1 > MAX_DEPTH:
            raise Invalid(f"replies nest at most {MAX_DEPTH} deep", field="parent_comment_id")
        if parent.author_id in blocked_ids(session, user_id):
            raise Invalid("you blocked this comment's author", field="parent_comment_id")
    comment = Comment(video_id=video_id, author_id=user_id, parent_id=parent_id, body=body,
                      depth=parent.depth + 1 if parent else 0,
                      root_id=parent.root_id if parent else None)
    session.add(comment)
    session.flush()  # the id is part of the path
    comment.path = (parent.path if parent else "") + segment(comment.id)
    if parent is None:
        comment.root_id = comment.id
    session.flush()
    _event(session, user_id, Action.COMMENT, video_id, video.owner_id, comment.id)
    return comment


def _live(session: Session, comment_id: int) -> Comment:
    comment = session.get(Comment, comment_id)
    if comment is None or comment.deleted_at is not None:
        raise NotFound("no such comment")
    return comment


def edit(session: Session, user_id: int, comment_id: int, body: str) -> Comment:
    """Change the text; only the author may (403 for anyone else, moderators included)."""
    comment = _live(session, comment_id)
    visible_video(session, user_id, comment.video_id)
    if comment.author_id != user_id:
        raise Forbidden("only the author may edit a comment")
    comment.body, comment.edited_at = body, utcnow()
    session.flush()
    return comment


def delete(session: Session, user_id: int, comment_id: int, moderator: bool) -> Comment:
    """Delete (tombstone) a comment: its author, or a moderator, may."""
    comment = _live(session, comment_id)
    if not moderator:
        visible_video(session, user_id, comment.video_id)
        if comment.author_id != user_id:
            raise Forbidden("only the author or a moderator may delete a comment")
    comment.body, comment.deleted_at = "", utcnow()
    session.flush()
    _event(session, user_id, Action.UNCOMMENT, comment.video_id, comment.author_id,
           comment.id)
    return comment


def commented_videos(session: Session, user_id: int) -> list[int]:
    """The videos with a live comment of ``user_id`` (whose cached pages an account deletion,
    which tombstones them, must invalidate)."""
    return list(session.scalars(select(Comment.video_id).distinct().where(
        Comment.author_id == user_id, Comment.deleted_at.is_(None))))


def get(session: Session, viewer_id: int, comment_id: int) -> Comment:
    comment = session.get(Comment, comment_id)
    if comment is None:
        raise NotFound("no such comment")
    visible_video(session, viewer_id, comment.video_id)
    if comment.author_id in blocked_ids(session, viewer_id):
        raise NotFound("no such comment")
    return comment


# --- reading trees ---------------------------------------------------------------------------


_ONE_RANGE = (_rows().where(Comment.root_id == bindparam("root"),
                            Comment.path > bindparam("after"), Comment.path < bindparam("below"))
              .order_by(Comment.path).limit(bindparam("limit", type_=Integer)))
_RANGE_PARAM = re.compile(r":(root|after|below)\b")


@lru_cache(maxsize=64)
def _ranges_union(n: int) -> TextualSelect:
    """SQLite: ``n`` index ranges of ``(root_id, path)`` as a UNION ALL of ``LIMIT``-ed range
    scans, the comments in thread and display order. Written as text from one range's SQL,
    once per ``n``: SQLAlchemy took ~7 ms per range to compile the same UNION built as a
    construct (150 ms for 20, on the first page of each count of ranges, and a page after a
    cursor reads only the threads missing from the cache: any count)."""
    one = _ONE_RANGE.compile(dialect=sqlite.dialect(paramstyle="named"))
    parts = [f"SELECT * FROM ({_RANGE_PARAM.sub(lambda m, i=i: f':{m[1]}{i}', str(one))})"
             for i in range(n)]
    constants = {k: v for k, v in one.params.items() if k not in ("root", "after", "below",
                                                                   "limit")}  # OFFSET 0
    return (text(" UNION ALL ".join(parts) + " ORDER BY root_id, path")
            .bindparams(**constants).columns(*ROW))


def _ranges_lateral() -> Select:
    """PostgreSQL: the same ranges from arrays, one ``LATERAL`` range scan per element. A
    UNION of 20 ranges took PostgreSQL 10 ms to plan for 0.5 ms of execution (and its generic
    plan was never chosen); this statement's plan is small and its text the same for any
    number of ranges, so psycopg prepares it once per connection."""
    ranges = func.unnest(bindparam("roots", type_=ARRAY(BigInteger)),
                         bindparam("afters", type_=ARRAY(Text)),
                         bindparam("belows", type_=ARRAY(Text))
                         ).table_valued("root", "after", "below").render_derived(name="ranges")
    found = (_rows().where(Comment.root_id == ranges.c.root,
                           Comment.path > ranges.c.after,
                           Comment.path < ranges.c.below)
             .order_by(Comment.path).limit(bindparam("limit", type_=Integer)).lateral())
    return (select(found).select_from(ranges).join(found, true())
            .order_by(found.c.root_id, found.c.path))


_RANGES_LATERAL = _ranges_lateral()


def _subtrees(session: Session, ranges: list[tuple[int, str, str]], limit: int
              ) -> dict[int, list[Row]]:
    """For each ``(root_id, after, below)``: up to ``limit`` comments with
    ``after < path < below`` in path order, all in one statement."""
    if not ranges:
        return {}
    if session.get_bind().dialect.name == "postgresql":
        roots, afters, belows = (list(column) for column in zip(*ranges, strict=True))
        stmt = _RANGES_LATERAL
        params: dict = {"roots": roots, "afters": afters, "belows": belows, "limit": limit}
    else:
        # Padded to a power of two with empty ranges: a handful of statements to prepare.
        padded = ranges + [(0, "", "")] * ((1 << (len(ranges) - 1).bit_length()) - len(ranges))
        stmt, params = _ranges_union(len(padded)), {"limit": limit}
        for i, (root, after, below) in enumerate(padded):
            params |= {f"root{i}": root, f"after{i}": after, f"below{i}": below}
    out: dict[int, list[Row]] = {}
    for c in session.connection().execute(stmt, params).all():  # one fetchall, not per row
        out.setdefault(c[_ROOT_ID], []).append(c)
    return out


def parse_path(path: str) -> list[int]:
    """The ids of a path's segments (ancestors first, the comment last)."""
    ids, i = [], 0
    while i < len(path):
        n = int(path[i], 16)
        ids.append(int(path[i + 1:i + 1 + n], 36))
        i += 1 + n
    return ids


def _hidden_comments(session: Session, roots: list[int], hidden_authors: set[int]
                     ) -> dict[int, int]:
    """The comments in these threads written by someone the viewer blocked: ``{id: root_id}``
    (a thread without any is the same for every viewer: its rendering may be shared)."""
    if not hidden_authors or not roots:
        return {}
    return dict(session.execute(select(Comment.id, Comment.root_id).where(
        Comment.author_id.in_(hidden_authors), Comment.root_id.in_(roots))).all())


def _tree(comments: list[Row], hidden: Set[int]) -> list[Node]:
    """Nest ``comments`` (path order) into nodes; a comment with a ``hidden`` comment on its
    path (itself or an ancestor, also one outside this page) is left out. Columns by position
    (:data:`ROW`'s order): a row's attribute lookup by name was a third of this loop's time
    on a 1,000-comment page."""
    nodes: dict[int, Node] = {}
    top: list[Node] = []
    for c in comments:
        if hidden and not hidden.isdisjoint(parse_path(c[_PATH])):
            continue
        node = nodes[c[_ID]] = Node(c)
        parent = nodes.get(c[_PARENT_ID])
        (parent.replies if parent is not None else top).append(node)
    return top


# The roots of a page, newest first: one range of ``ix_comments_video_threads`` read backwards.
# ``parent_id DESC`` changes nothing in the answer (every root's is NULL) but lets PostgreSQL
# see that the index is in this order: ``IS NULL`` is no equality to its planner, so ordering
# by ``id`` alone made it read every root of the video (or, with statistics, walk the primary
# key through all the video's comments), join their authors and sort: 2.8 ms instead of
# 0.14 ms for a 1,000-thread video (EXPLAIN ANALYZE). Built once, bound per call (as
# :func:`_ranges_union`).
_ROOTS = (_rows().where(Comment.video_id == bindparam("video_id"), Comment.parent_id.is_(None))
          .order_by(Comment.parent_id.desc(), Comment.id.desc())
          .limit(bindparam("limit", type_=Integer)))
_ROOTS_AFTER = _ROOTS.where(Comment.id < bindparam("cursor"))


def open_threads(session: Session, viewer_id: int, video_id: int) -> set[int]:
    """Check that ``viewer_id`` may see the video (:class:`NotFound` otherwise); the authors
    they blocked, whose comments (and their replies) a page leaves out for them."""
    check_visible(session, viewer_id, video_id)
    return set(blocked_ids(session, viewer_id))


@dataclass
class Roots:
    """The threads of a page before their replies are read: the roots in page order (those
    of blocked authors left out), the cursor of the next page, and ``hidden``: the comments
    in these threads the viewer must not see (``{id: root_id}``)."""

    rows: list[Row]
    next_cursor: str | None
    hidden: dict[int, int]
    hidden_threads: set[int] = field(init=False)

    def __post_init__(self) -> None:
        self.hidden_threads = set(self.hidden.values())

    def shared(self, root_id: int) -> bool:
        """The thread reads the same for every viewer (none of its comments is hidden)."""
        return root_id not in self.hidden_threads


def page_roots(session: Session, video_id: int, cursor: int | None, page_size: int,
               blocked: set[int]) -> Roots:
    """The roots of a page of threads (newest first, ``id < cursor``); ``blocked``:
    :func:`open_threads`'s answer."""
    roots = session.connection().execute(_ROOTS_AFTER if cursor is not None else _ROOTS, {
        "video_id": video_id, "cursor": cursor, "limit": page_size + 1}).all()
    next_cursor = str(roots[page_size - 1].id) if len(roots) > page_size else None
    roots = [r for r in roots[:page_size] if r.author_id not in blocked]
    return Roots(roots, next_cursor, _hidden_comments(session, [r.id for r in roots], blocked))


def trees(session: Session, roots: list[Row], hidden: Set[int], replies: int) -> list[Node]:
    """Each root with up to ``replies`` replies in display order, ``hidden`` comments (and
    their replies) left out; one statement for all of them."""
    # "~" sorts after every path character: (path, path~) is exactly the subtree below.
    subs = _subtrees(session, [(r.id, r.path, r.path + "~") for r in roots], replies + 1)
    out = []
    for r in roots:
        found = subs.get(r.id, [])
        node = Node(r, _tree(found[:replies], hidden))
        if len(found) > replies:
            node.more_replies_after = found[replies - 1].path
        out.append(node)
    return out


def threads(session: Session, viewer_id: int, video_id: int, cursor: int | None,
            page_size: int, replies: int, blocked: set[int] | None = None) -> Page:
    """A page of threads (roots newest first, ``id < cursor``), each with up to ``replies``
    replies in display order. ``blocked``: :func:`open_threads`'s answer, if already asked."""
    if blocked is None:
        blocked = open_threads(session, viewer_id, video_id)
    roots = page_roots(session, video_id, cursor, page_size, blocked)
    return Page(trees(session, roots.rows, roots.hidden.keys(), replies), roots.next_cursor)


def replies(session: Session, viewer_id: int, comment_id: int, after: str | None,
            limit: int) -> Page:
    """The replies under ``comment_id`` in display order, after the ``after`` path cursor."""
    comment = get(session, viewer_id, comment_id)
    assert comment.root_id is not None
    hidden = _hidden_comments(session, [comment.root_id], set(blocked_ids(session, viewer_id)))
    if not hidden.keys().isdisjoint(parse_path(comment.path)):
        raise NotFound("no such comment")
    start = max(after or "", comment.path)
    subs = _subtrees(session, [(comment.root_id, start, comment.path + "~")], limit + 1)
    found = subs.get(comment.root_id, [])
    cursor = found[limit - 1].path if len(found) > limit else None
    return Page(_tree(found[:limit], hidden.keys()), cursor)
