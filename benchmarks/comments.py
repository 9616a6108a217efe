"""``reelrank bench comments``: which storage model for reply trees of any depth?

Three models of the same 10,000-comment video (1,000 threads, replies attached to random
earlier comments of a thread whose size follows a power law, so a few threads are thousands
deep and wide), each in its own table, built on SQLite and PostgreSQL:

- ``adjacency``: ``parent_id`` only; a thread's tree is a recursive CTE.
- ``path``: ``parent_id`` plus a thread-relative materialized path, index ``(root_id, path)``.
- ``nested``: nested sets (``lft``/``rgt`` per video), the design document's suggestion.

Measured: reading a page of 20 threads with up to 50 replies each in display order, reading
the 50 replies after a cursor inside the biggest thread, and inserting a reply (the nested-set
insert renumbers every later comment of the video). Results in
``benchmarks/results/comments.md``.
"""

from __future__ import annotations

import random
import shutil
import signal
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Engine, text

from benchmarks.report import table, write_report
from benchmarks.servers import start_postgres
from platform_services.comments import segment
from platform_services.storage import procs
from platform_services.storage.db import make_engine

VIDEO = 1
PAGE, REPLIES = 20, 50


def make_tree(n: int, roots: int, seed: int = 7) -> list[tuple[int, int | None, int]]:
    """``(id, parent_id, root_id)`` in id order: replies go to a power-law-chosen thread and
    a random comment in it, so depth and width vary as in real threads."""
    rng = random.Random(seed)
    rows: list[tuple[int, int | None, int]] = []
    members: dict[int, list[int]] = {}
    weights = [1 / (r + 1) ** 1.1 for r in range(roots)]
    for cid in range(1, n + 1):
        if cid <= roots:
            rows.append((cid, None, cid))
            members[cid] = [cid]
            continue
        root = rng.choices(range(1, roots + 1), weights)[0]
        thread = members[root]
        parent = thread[-1] if rng.random() < 0.3 else rng.choice(thread)  # chains and fans
        rows.append((cid, parent, root))
        thread.append(cid)
    return rows


def _paths(rows: list[tuple[int, int | None, int]]) -> dict[int, str]:
    path: dict[int, str] = {}
    for cid, parent, _ in rows:
        path[cid] = (path[parent] if parent else "") + segment(cid)
    return path


def _nested(rows: list[tuple[int, int | None, int]]) -> dict[int, tuple[int, int, int]]:
    children: dict[int | None, list[int]] = {}
    for cid, parent, _ in rows:
        children.setdefault(parent, []).append(cid)
    out: dict[int, tuple[int, int, int]] = {}
    counter = 0
    stack: list[tuple[int, int, bool]] = [(c, 0, False) for c in reversed(children[None])]
    left: dict[int, int] = {}
    while stack:
        cid, depth, done = stack.pop()
        counter += 1
        if done:
            out[cid] = (left[cid], counter, depth)
            continue
        left[cid] = counter
        stack.append((cid, depth, True))
        stack += [(c, depth + 1, False) for c in reversed(children.get(cid, []))]
    return out


DDL = {
    "adjacency": ["CREATE TABLE c_adjacency (id BIGINT PRIMARY KEY, video_id BIGINT NOT NULL, "
                  "parent_id BIGINT, body TEXT NOT NULL)",
                  "CREATE INDEX ix_adj_roots ON c_adjacency (video_id, parent_id, id)",
                  "CREATE INDEX ix_adj_parent ON c_adjacency (parent_id, id)"],
    "path": ["CREATE TABLE c_path (id BIGINT PRIMARY KEY, video_id BIGINT NOT NULL, "
             "parent_id BIGINT, root_id BIGINT NOT NULL, path VARCHAR(2048) {collate} NOT NULL, "
             "body TEXT NOT NULL)",
             "CREATE INDEX ix_path_roots ON c_path (video_id, parent_id, id)",
             "CREATE INDEX ix_path_tree ON c_path (root_id, path)"],
    "nested": ["CREATE TABLE c_nested (id BIGINT PRIMARY KEY, video_id BIGINT NOT NULL, "
               "parent_id BIGINT, depth INT NOT NULL, lft INT NOT NULL, rgt INT NOT NULL, "
               "body TEXT NOT NULL)",
               "CREATE INDEX ix_nested_roots ON c_nested (video_id, depth, id)",
               "CREATE INDEX ix_nested_lft ON c_nested (video_id, lft)",
               "CREATE INDEX ix_nested_rgt ON c_nested (video_id, rgt)"],
}


def load(engine: Engine, rows: list[tuple[int, int | None, int]]) -> None:
    pg = engine.dialect.name == "postgresql"
    paths, nested = _paths(rows), _nested(rows)
    body = "a comment of ordinary length, about as long as people write them " * 2
    with engine.begin() as conn:
        for name, stmts in DDL.items():
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS c_{name}")
            for stmt in stmts:
                conn.exec_driver_sql(stmt.format(collate='COLLATE "C"' if pg else ""))
        conn.execute(text("INSERT INTO c_adjacency VALUES (:i, :v, :p, :b)"),
                     [{"i": c, "v": VIDEO, "p": p, "b": body} for c, p, _ in rows])
        conn.execute(text("INSERT INTO c_path VALUES (:i, :v, :p, :r, :path, :b)"),
                     [{"i": c, "v": VIDEO, "p": p, "r": r, "path": paths[c], "b": body}
                      for c, p, r in rows])
        conn.execute(text("INSERT INTO c_nested VALUES (:i, :v, :p, :d, :l, :r, :b)"),
                     [{"i": c, "v": VIDEO, "p": p, "d": nested[c][2], "l": nested[c][0],
                       "r": nested[c][1], "b": body} for c, p, _ in rows])
        if pg:
            conn.exec_driver_sql("ANALYZE")


def _cte_path(pg: bool) -> str:
    pad = "lpad(CAST(c.id AS TEXT), 19, '0')" if pg else "printf('%019d', c.id)"
    root_pad = pad.replace("c.id", "id")
    return (
        "WITH RECURSIVE t(id, root, path) AS ("
        f" SELECT id, id, CAST({root_pad} AS TEXT) FROM c_adjacency WHERE id IN ({{ids}})"
        f" UNION ALL SELECT c.id, t.root, t.path || {pad} FROM c_adjacency c"
        " JOIN t ON c.parent_id = t.id)"
    )


def page_queries(pg: bool) -> dict[str, Callable]:
    """Per model: a function ``(conn, cursor_root) -> rows`` reading one page of threads."""

    def roots(conn, table: str, cursor: int, parent_col: str = "parent_id IS NULL") -> list:
        return [r[0] for r in conn.execute(text(
            f"SELECT id FROM {table} WHERE video_id = :v AND {parent_col} AND id < :c "
            "ORDER BY id DESC LIMIT :n"), {"v": VIDEO, "c": cursor, "n": PAGE})]

    def adjacency(conn, cursor: int) -> list:
        ids = roots(conn, "c_adjacency", cursor)
        sql = (_cte_path(pg).format(ids=",".join(map(str, ids)))
               + " SELECT id, root, path, rn FROM (SELECT t.*, ROW_NUMBER() OVER"
               " (PARTITION BY root ORDER BY path) AS rn FROM t) x"
               f" WHERE rn <= {REPLIES + 1} ORDER BY root DESC, path")
        return conn.exec_driver_sql(sql).all()

    def path(conn, cursor: int) -> list:
        ids = roots(conn, "c_path", cursor)
        parts = [f"SELECT * FROM (SELECT id, root_id, path, body FROM c_path WHERE root_id = {r}"
                 f" ORDER BY path LIMIT {REPLIES + 1}) s{i}" for i, r in enumerate(ids)]
        return conn.exec_driver_sql(" UNION ALL ".join(parts)).all()

    def nested(conn, cursor: int) -> list:
        ids = roots(conn, "c_nested", cursor, "depth = 0")
        bounds = conn.exec_driver_sql(
            f"SELECT id, lft, rgt FROM c_nested WHERE id IN ({','.join(map(str, ids))})").all()
        parts = [f"SELECT * FROM (SELECT id, lft, body FROM c_nested WHERE video_id = {VIDEO}"
                 f" AND lft BETWEEN {lo} AND {hi} ORDER BY lft LIMIT {REPLIES + 1}) s{i}"
                 for i, (_, lo, hi) in enumerate(bounds)]
        return conn.exec_driver_sql(" UNION ALL ".join(parts)).all()

    return {"adjacency": adjacency, "path": path, "nested": nested}


def subtree_queries(pg: bool, root: int) -> dict[str, Callable]:
    """Per model: ``(conn, after) -> rows``: 50 replies of thread ``root`` after the
    ``after``-th one in display order (the cursor is that reply's key)."""

    def adjacency(conn, after: int) -> list:
        sql = (_cte_path(pg).format(ids=root) + " SELECT id, path FROM t ORDER BY path"
               f" LIMIT {REPLIES} OFFSET {after}")  # the CTE walks the whole thread anyway
        return conn.exec_driver_sql(sql).all()

    def path(conn, after: int) -> list:
        cursor = conn.exec_driver_sql(
            f"SELECT path FROM c_path WHERE root_id = {root} ORDER BY path LIMIT 1 "
            f"OFFSET {after}").scalar_one()
        return conn.execute(text(
            "SELECT id, path FROM c_path WHERE root_id = :r AND path > :p ORDER BY path "
            "LIMIT :n"), {"r": root, "p": cursor, "n": REPLIES}).all()

    def nested(conn, after: int) -> list:
        lo, hi = conn.exec_driver_sql(
            f"SELECT lft, rgt FROM c_nested WHERE id = {root}").one()
        cursor = conn.exec_driver_sql(
            f"SELECT lft FROM c_nested WHERE video_id = {VIDEO} AND lft BETWEEN {lo} AND {hi}"
            f" ORDER BY lft LIMIT 1 OFFSET {after}").scalar_one()
        return conn.exec_driver_sql(
            f"SELECT id, lft FROM c_nested WHERE video_id = {VIDEO} AND lft > {cursor} "
            f"AND lft <= {hi} ORDER BY lft LIMIT {REPLIES}").all()

    return {"adjacency": adjacency, "path": path, "nested": nested}


def insert_reply(engine: Engine, model: str, cid: int, parent: int) -> float:
    """Insert one reply in its own transaction; seconds taken."""
    t0 = time.perf_counter()
    with engine.begin() as conn:
        if model == "adjacency":
            conn.execute(text("INSERT INTO c_adjacency VALUES (:i, :v, :p, 'reply')"),
                         {"i": cid, "v": VIDEO, "p": parent})
        elif model == "path":
            root, ppath = conn.execute(text(
                "SELECT root_id, path FROM c_path WHERE id = :p"), {"p": parent}).one()
            conn.execute(text("INSERT INTO c_path VALUES (:i, :v, :p, :r, :path, 'reply')"),
                         {"i": cid, "v": VIDEO, "p": parent, "r": root,
                          "path": ppath + segment(cid)})
        else:
            depth, rgt = conn.execute(text(
                "SELECT depth, rgt FROM c_nested WHERE id = :p"), {"p": parent}).one()
            conn.execute(text("UPDATE c_nested SET rgt = rgt + 2 WHERE video_id = :v AND "
                              "rgt >= :r"), {"v": VIDEO, "r": rgt})
            conn.execute(text("UPDATE c_nested SET lft = lft + 2 WHERE video_id = :v AND "
                              "lft > :r"), {"v": VIDEO, "r": rgt})
            conn.execute(text("INSERT INTO c_nested VALUES (:i, :v, :p, :d, :l, :r, 'reply')"),
                         {"i": cid, "v": VIDEO, "p": parent, "d": depth + 1, "l": rgt,
                          "r": rgt + 1})
    return time.perf_counter() - t0


def _ms(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return 1000 * statistics.median(ordered), 1000 * ordered[int(0.99 * (len(ordered) - 1))]


def measure(engine: Engine, rows: list[tuple[int, int | None, int]], reads: int,
            inserts: int) -> list[list[object]]:
    pg = engine.dialect.name == "postgresql"
    rng = random.Random(11)
    roots = [c for c, p, _ in rows if p is None]
    sizes: dict[int, int] = {}
    for _, _, r in rows:
        sizes[r] = sizes.get(r, 0) + 1
    biggest = max(sizes, key=sizes.get)
    out = []
    pages, subtrees = page_queries(pg), subtree_queries(pg, biggest)
    next_id = len(rows) + 1
    for model in ("adjacency", "path", "nested"):
        page_t, sub_t = [], []
        with engine.connect() as conn:
            for _ in range(reads):
                cursor = rng.choice(roots[PAGE:]) + 1
                t0 = time.perf_counter()
                got = pages[model](conn, cursor)
                page_t.append(time.perf_counter() - t0)
                assert got, (model, cursor)
                after = rng.randrange(0, sizes[biggest] - REPLIES)
                t0 = time.perf_counter()
                got = subtrees[model](conn, after)
                sub_t.append(time.perf_counter() - t0)
                assert len(got) == REPLIES, (model, len(got))
        ins_t = []
        for _ in range(inserts):
            ins_t.append(insert_reply(engine, model, next_id, rng.randint(1, len(rows))))
            next_id += 1
        out.append([model, *_ms(page_t), *_ms(sub_t), *_ms(ins_t)])
    return out


def run_bench(out: Path, comments: int = 10_000, roots: int = 1_000, reads: int = 200,
              inserts: int = 100) -> Path:
    rows = make_tree(comments, roots)
    sizes: dict[int, int] = {}
    for _, _, r in rows:
        sizes[r] = sizes.get(r, 0) + 1
    depth = max(len(p) for p in _paths(rows).values())
    header = ["model", "page p50 ms", "page p99 ms", "subtree p50 ms", "subtree p99 ms",
              "insert p50 ms", "insert p99 ms"]
    sections = []
    tmp = Path(tempfile.mkdtemp(prefix="reelrank-comments-"))
    pg_root = Path(tempfile.mkdtemp(prefix="reelrank-pg-"))  # its own: chowned when root
    pg = None
    try:
        for backend in ("sqlite", "postgresql"):
            if backend == "sqlite":
                engine = make_engine(f"sqlite:///{tmp}/comments.db")
            else:
                pg = start_postgres(pg_root)
                engine = make_engine(pg.create_database("comments"))
            try:
                load(engine, rows)
                sections.append(f"## {backend}\n\n" + table(
                    header, measure(engine, rows, reads, inserts)))
            finally:
                engine.dispose()
    finally:
        if pg is not None:
            procs.stop(pg.proc, signal.SIGINT)
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(pg_root, ignore_errors=True)
    body = f"""
Command: `reelrank bench comments --comments {comments} --roots {roots} --reads {reads}
--inserts {inserts}`. One video with {comments:,} comments in {roots:,} threads (biggest
thread {max(sizes.values()):,} comments; longest path {depth} characters). "page": 20 threads
newest first, each with up to 50 comments in display order (one statement after the roots
query). "subtree": the 50 replies after a random cursor inside the biggest thread. "insert":
one reply to a random comment, in its own transaction. Median and p99 of {reads} reads and
{inserts} inserts per model, one connection, no concurrency.

{(chr(10) * 2).join(sections)}
"""
    return write_report("comments", "Comment trees: adjacency list vs materialized path vs "
                        "nested sets", body, out.parent)
