"""The query plans of a page of comment threads on SQLite and PostgreSQL: the roots of a page
are one backwards range of ``ix_comments_video_threads`` (no sort of every root of the video,
which made a first page on PostgreSQL read and join all of them)."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import event
from sqlalchemy.orm import Session

from platform_services import comments
from tests.serving.social.conftest import make_account, make_video, post_comment, sessions_of


def _roots_plan(session: Session, video: int, cursor: int | None) -> str:
    """The database's plan of the statement :func:`comments.page_roots` runs."""
    captured: list[tuple] = []
    engine = session.get_bind()

    def capture(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        captured.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        comments.page_roots(session, video, cursor, 2, set())
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    statement, parameters = captured[0]
    raw = session.connection().connection.dbapi_connection.cursor()
    if engine.dialect.name == "postgresql":
        raw.execute("SET LOCAL enable_seqscan = off")  # a handful of rows: not a table scan
        raw.execute("EXPLAIN " + statement, parameters)
    else:
        raw.execute("EXPLAIN QUERY PLAN " + statement, parameters)
    return "\n".join(str(row) for row in raw.fetchall())


def test_the_roots_of_a_page_are_one_backwards_index_range(api: TestClient) -> None:
    ann = make_account(api, "ann")
    video = make_video(api, ann)
    roots = [post_comment(api, ann, video, f"thread {i}") for i in range(5)]
    post_comment(api, ann, video, "a reply", roots[0])
    with sessions_of(api)() as session:
        for cursor in (None, roots[3]):
            page = comments.page_roots(session, video, cursor, 2, set())
            assert [r.id for r in page.rows] == sorted(
                (r for r in roots if cursor is None or r < cursor), reverse=True)[:2]
            plan = _roots_plan(session, video, cursor)
            if session.get_bind().dialect.name == "postgresql":
                assert "Index Scan Backward using ix_comments_video_threads" in plan, plan
                assert "Sort" not in plan, plan
            else:
                assert "ix_comments_video_threads" in plan and "TEMP B-TREE" not in plan, plan
        session.rollback()
