"""The in-process vector index: past ``REDUCE_FROM`` documents a projected scan picks the rows
and the exact product scores them; its answers match the exact scan's on vectors of a
low-dimensional space, and rows updated or added later are found at their new place."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, insert, select, text

from core.clock import utcnow
from platform_services.search import semantic
from platform_services.search.documents import sync_videos, to_blob
from platform_services.search.models import SearchEmbedding, SearchVideo
from platform_services.search.semantic import SemanticIndex
from platform_services.storage.db import downgrade, make_engine, migrate, session_factory
from platform_services.storage.models import Moderation, User, Video, VideoStatus, Visibility

_SUBSPACE = np.random.default_rng(3).normal(size=(48, 384))


def _vectors(n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit vectors in one 48-dimensional subspace of 384 (the projection keeps 128)."""
    v = rng.normal(size=(n, 48)) @ _SUBSPACE
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def _store(sessions, start: int, vectors: np.ndarray) -> None:  # noqa: ANN001
    now = utcnow()
    ids = range(start, start + len(vectors))
    with sessions.begin() as s:
        s.execute(insert(Video), [{"id": i, "owner_id": 1, "title": f"v{i}", "created_at": now,
                                   "status": VideoStatus.READY} for i in ids])
        s.execute(insert(SearchVideo), [{
            "video_id": i, "owner_id": 1, "title": f"v{i}", "description": "", "tags": "",
            "creator": "u", "created_at": now, "indexed_at": now} for i in ids])
        s.execute(insert(SearchEmbedding), [
            {"video_id": i, "embedding": to_blob(v), "indexed_at": now}
            for i, v in zip(ids, vectors, strict=True)])


def test_projected_scan_finds_what_the_exact_scan_finds(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(semantic, "REDUCE_FROM", 500)
    url = f"sqlite:///{tmp_path}/v.db"
    migrate(url)
    engine = make_engine(url)
    sessions = session_factory(engine)
    with sessions.begin() as s:
        s.add(User(id=1, username="u", email="u@x.io", password_hash="x"))
    rng = np.random.default_rng(7)
    _store(sessions, 1, _vectors(3000, rng))
    index = SemanticIndex(sessions)
    index.refresh()
    assert index._state[4] is not None, "past REDUCE_FROM the projection is built"
    later = _vectors(600, rng)  # grows the matrix: the projection follows
    monkeypatch.setattr(semantic, "OVERLAP", timedelta(0))
    _store(sessions, 3001, later)
    index.refresh()
    assert len(index) == 3600
    ids, matrix, row, n, projection = index._state
    for q in _vectors(20, rng):
        found = index.search(q, 20)
        exact = matrix[:n] @ q
        best = np.argsort(-exact)[:20]
        # The same rows (their order may differ where two cosines tie to float rounding).
        assert {v for v, _ in found} == {int(ids[i]) for i in best}
        assert np.allclose([s for _, s in found], exact[best], atol=1e-5), "cosines are exact"
    top = index.search(later[5], 1)
    assert top[0][0] == 3006 and top[0][1] == pytest.approx(1.0, abs=2e-3)  # float16 storage
    engine.dispose()


def test_migration_0010_moves_the_vectors_out_and_back(tmp_path: Path) -> None:
    """Vectors stored in ``search_videos`` before 0010 are in ``search_embeddings`` after it
    (the index finds them), and a downgrade puts them back."""
    url = f"sqlite:///{tmp_path}/m.db"
    migrate(url, "0009")
    engine = make_engine(url)
    vector = _vectors(1, np.random.default_rng(5))[0]
    with session_factory(engine).begin() as s:  # users and videos: unchanged since 0009
        s.add(User(id=1, username="u", email="u@x.io", password_hash="x"))
        s.flush()
        s.add(Video(id=7, owner_id=1, title="v", status=VideoStatus.READY, created_at=utcnow()))
    with engine.begin() as c:
        c.execute(text("INSERT INTO search_videos (video_id, owner_id, title, description, "
                       "tags, creator, created_at, embedding, indexed_at) VALUES (7, 1, 'v', "
                       "'', '', 'u', :now, :e, :now)"),
                  {"now": utcnow().isoformat(), "e": to_blob(vector)})
    migrate(url)
    index = SemanticIndex(session_factory(engine))
    assert index.refresh() == 1
    assert index.search(vector, 1)[0][0] == 7
    engine.dispose()
    downgrade(url, "0009")
    engine = make_engine(url)
    with engine.connect() as c:
        assert c.execute(text("SELECT embedding FROM search_videos")).scalar_one() == to_blob(
            vector)
    engine.dispose()


def test_a_document_without_an_encoder_has_no_vector(tmp_path: Path) -> None:
    """``sync_videos`` without an encoder (the search worker before MiniLM loads) still
    indexes the text, and drops a vector of older text rather than rank the new with it."""
    url = f"sqlite:///{tmp_path}/d.db"
    migrate(url)
    sessions = session_factory(make_engine(url))
    with sessions.begin() as s:
        s.add(User(id=1, username="u", email="u@x.io", password_hash="x"))
        s.flush()
        s.add(Video(id=3, owner_id=1, title="funny cat", status=VideoStatus.READY,
                    moderation=Moderation.APPROVED, visibility=Visibility.PUBLIC,
                    created_at=utcnow()))

    def vectors() -> int:
        with sessions() as s:
            return s.scalar(select(func.count()).select_from(SearchEmbedding)) or 0

    with sessions.begin() as s:
        assert sync_videos(s, [3], lambda texts: _vectors(len(texts), np.random.default_rng(1)))
    assert vectors() == 1
    with sessions.begin() as s:
        assert sync_videos(s, [3], None) == 1
    with sessions() as s:
        assert s.get(SearchVideo, 3).title == "funny cat"
    assert vectors() == 0
