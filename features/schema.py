"""The ranker's feature columns, and the one function that makes them from raw view values.

Serving (:mod:`features.online`) and training (:mod:`features.training_set`) both collect raw
values per ``"view:field"`` (defaults already filled in) plus each row's request time, then
call :func:`assemble`. Derived features (tenure and age from timestamps, hour and weekday,
the user's affinity for the video's topic) are computed here only, as of the row's own time,
so the two paths cannot drift apart.

Columns: ``u_*`` user, ``ctx_*`` request context, ``v_*`` video, ``c_*`` creator, ``uc_*`` user
x creator, ``uv_*`` user x video. :data:`USER_COLUMNS` and :data:`ITEM_COLUMNS` are scalar
numeric/string columns the ranker uses; :data:`USER_LISTS` (affinity vector, last watched,
seen set, session topics) are lists for the user tower and the candidate filters.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from features.repo import VIEW_BY_NAME
from features.windows import SESSION_GAP_S

# (output column, "view:field") for values taken as they are.
_USER_DIRECT = [
    ("u_activity_level", "user_profile:activity_level"),
    ("u_impressions_7d", "user_profile:impressions_7d"),
    ("u_impressions_30d", "user_profile:impressions_30d"),
    ("u_clicks_7d", "user_profile:clicks_7d"),
    ("u_click_rate_30d", "user_profile:click_rate_30d"),
    ("u_follow_count", "user_profile:follow_count"),
    ("u_fan_count", "user_profile:fan_count"),
    ("u_watch_ratio_7d", "user_profile:watch_ratio_7d"),
    ("u_watch_ratio_30d", "user_profile:watch_ratio_30d"),
]
_ITEM_DIRECT = [
    ("v_topic", "video_stats:topic"),
    ("v_topic_id", "video_stats:topic_id"),
    ("v_views_1h", "video_stats:views_1h"),
    ("v_views_24h", "video_stats:views_24h"),
    ("v_views_7d", "video_stats:views_7d"),
    ("v_click_rate", "video_stats:click_rate"),
    ("v_like_rate", "video_stats:like_rate"),
    ("v_long_view_rate", "video_stats:long_view_rate"),
    ("v_share_rate", "video_stats:share_rate"),
    ("v_watch_ratio_30d", "video_stats:watch_ratio_30d"),
    ("c_follower_count", "creator_stats:follower_count"),
    ("c_videos_30d", "creator_stats:videos_30d"),
    ("c_impressions_30d", "creator_stats:impressions_30d"),
    ("c_posting_rate_30d", "creator_stats:posting_rate_30d"),
    ("c_completion_30d", "creator_stats:completion_30d"),
    ("uc_has_followed", "user_creator:has_followed"),
    ("uc_impressions", "user_creator:impressions"),
    ("uc_clicks", "user_creator:clicks"),
    ("uc_likes", "user_creator:likes"),
]
REALTIME_COLUMNS = ["v_rt_views_5m", "v_rt_views_1h", "v_rt_likes_5m", "v_rt_likes_1h"]
USER_COLUMNS = [
    "u_tenure_days",
    *(c for c, _ in _USER_DIRECT),
    "u_session_events",
    "ctx_hour",
    "ctx_weekday",
]
ITEM_COLUMNS = [
    "v_creator_id",
    "v_duration_ms",
    "v_age_hours",
    "v_is_new",
    *(c for c, _ in _ITEM_DIRECT),
    *REALTIME_COLUMNS,
    "uv_topic_affinity",
]
# The user's watch history (newest first) as the ranker's attention reads it, in training and
# in serving: one name for both.
HISTORY = "u_last_watched"
USER_LISTS = {
    "u_topic_affinity": "user_profile:topic_affinity",
    HISTORY: "user_realtime:last_watched",
    "u_seen": "user_realtime:seen",
    "u_session_topics": "user_realtime:session_topics",
}
# The view fields each side reads (what the online path asks the store for).
USER_REFS = sorted(
    {ref for _, ref in _USER_DIRECT}
    | set(USER_LISTS.values())
    | {
        "user_profile:register_ts_s",
        "user_realtime:session_events",
        "user_realtime:last_event_s",
    }
)
VIDEO_BATCH_REFS = [f"video_stats:{f.name}" for f in VIEW_BY_NAME["video_stats"].fields]
# Upload metadata (read for videos newer than the batch snapshot) and real-time counters.
VIDEO_FRESH_REFS = [f"video_fresh:{f.name}" for f in VIEW_BY_NAME["video_fresh"].fields]
VIDEO_REALTIME_REFS = [f"video_realtime:{f.name}" for f in VIEW_BY_NAME["video_realtime"].fields]
VIDEO_LIVE_REFS = VIDEO_FRESH_REFS + VIDEO_REALTIME_REFS
CREATOR_REFS = [f"creator_stats:{f.name}" for f in VIEW_BY_NAME["creator_stats"].fields]
PAIR_REFS = [f"user_creator:{f.name}" for f in VIEW_BY_NAME["user_creator"].fields]


def in_snapshot(raw: Mapping[str, Any]) -> np.ndarray:
    """Mask of the rows whose video the batch snapshot has (``video_stats``); the others are
    uploads too new for it, described by their ``video_fresh`` upload metadata."""
    return np.asarray(raw["video_stats:creator_id"]) >= 0


def assemble(raw: Mapping[str, Any], at_ms: np.ndarray) -> dict[str, Any]:
    """Feature columns (arrays of ``len(at_ms)``) from raw values as of each row's time.

    ``raw`` maps ``"view:field"`` to arrays (or lists, for list fields) with defaults filled,
    and the four :data:`REALTIME_COLUMNS` to counts already windowed as of ``at_ms``.
    """
    at_ms = np.asarray(at_ms, dtype=np.int64)
    at_s = at_ms / 1000.0
    out: dict[str, Any] = {}
    register = np.asarray(raw["user_profile:register_ts_s"], dtype=np.float64)
    out["u_tenure_days"] = np.where(register >= 0, (at_s - register) / 86_400.0, -1.0)
    for col, ref in _USER_DIRECT:
        out[col] = np.asarray(raw[ref])
    # The session pushed with the user's last event is over once the user has been idle.
    idle_s = at_s - np.asarray(raw["user_realtime:last_event_s"], dtype=np.float64)
    events = np.asarray(raw["user_realtime:session_events"], dtype=np.int64)
    out["u_session_events"] = np.where(idle_s <= SESSION_GAP_S, events, 0)
    when = at_ms.astype("datetime64[ms]")
    out["ctx_hour"] = (when.astype("datetime64[h]").astype(np.int64) % 24).astype(np.int64)
    out["ctx_weekday"] = ((when.astype("datetime64[D]").astype(np.int64) + 3) % 7).astype(np.int64)

    # Batch metadata first; a video too new for a snapshot falls back to its upload event.
    known = in_snapshot(raw)
    for col, field in (("v_creator_id", "creator_id"), ("v_duration_ms", "duration_ms")):
        out[col] = np.where(known, raw[f"video_stats:{field}"], raw[f"video_fresh:{field}"])
    upload = np.where(known, raw["video_stats:upload_ts_s"], raw["video_fresh:upload_ts_s"])
    upload = upload.astype(np.float64)
    out["v_age_hours"] = np.where(upload >= 0, np.maximum(0.0, at_s - upload) / 3600.0, -1.0)
    out["v_is_new"] = (~known).astype(np.int64)
    for col, ref in _ITEM_DIRECT:
        out[col] = np.asarray(raw[ref])
    for col in REALTIME_COLUMNS:
        out[col] = np.asarray(raw[col], dtype=np.int64)
    out["uv_topic_affinity"] = _topic_affinity(
        raw["user_profile:topic_affinity"], np.asarray(raw["video_stats:topic_id"])
    )
    return out


def _topic_affinity(affinity: Any, topic_id: np.ndarray) -> np.ndarray:
    """The user's affinity for each row's video topic; 0 when either is unknown."""
    out = np.zeros(len(topic_id), dtype=np.float32)
    if not len(topic_id):
        return out
    if all(v is affinity[0] for v in affinity):  # serving: one user for every row
        vec = np.asarray(affinity[0], dtype=np.float32)
        ok = (topic_id >= 0) & (topic_id < len(vec))
        out[ok] = vec[topic_id[ok]]
        return out
    for i, (vec, t) in enumerate(zip(affinity, topic_id, strict=True)):
        if 0 <= t < len(vec):
            out[i] = vec[t]
    return out
