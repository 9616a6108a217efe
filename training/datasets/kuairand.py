"""KuaiRand adapter: Kuaishou's short-video logs with real negatives.

KuaiRand (Gao et al., "KuaiRand: An Unbiased Sequential Recommendation Dataset with Randomly
Exposed Videos", CIKM 2022; https://kuairand.com) is licensed CC BY-SA 4.0: keep this
attribution wherever the data or anything derived from it is shown.

Files read from the data set's directory (``KuaiRand-Pure`` layout):

- ``standard_log_*.parquet`` (or the original ``log_*_pure.csv``): one row per exposure →
  ``interactions`` with ``event = impression`` and the outcome flags;
- ``video_features_basic_pure.csv[.gz]`` → ``items`` (no titles: KuaiRand has no text; ``tag``
  is a comma-separated list of category ids, the first one is the ``category``);
- ``user_features_pure.csv[.gz]`` → ``users`` (all feature columns kept);
- ``user_sequences.parquet`` (when present): each user's last ≤ 50 watched, long-watched and
  liked videos before the log → ``history`` rows ``view`` / ``long_view`` / ``like`` without
  timestamps, ``seq`` = position in the list (oldest first).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.dataset_schema import IMPRESSION, TS
from training.datasets.raw import find_file, read_raw

_FLAGS = {  # KuaiRand column -> canonical flag
    "is_click": "clicked",
    "long_view": "long_view",
    "is_like": "liked",
    "is_follow": "followed",
    "is_comment": "commented",
    "is_forward": "shared",
    "is_hate": "hated",
    "is_rand": "is_rand",
}
LOG = pa.schema(
    [
        pa.field("user_id", pa.int64(), False),
        pa.field("video_id", pa.int64(), False),
        pa.field("time_ms", pa.int64(), False),
        ("play_time_ms", pa.int64()),
        ("duration_ms", pa.int64()),
        ("tab", pa.int32()),
        *((name, pa.bool_()) for name in _FLAGS),
    ]
)
VIDEOS = pa.schema(
    [
        pa.field("video_id", pa.int64(), False),
        ("author_id", pa.int64()),
        ("video_duration", pa.int64()),
        ("upload_dt", TS),
        ("tag", pa.string()),
        ("server_width", pa.int32()),
        ("server_height", pa.int32()),
    ]
)
USERS = pa.schema(
    [
        pa.field("user_id", pa.int64(), False),
        ("user_active_degree", pa.string()),
        ("follow_user_num", pa.int64()),
        ("fans_user_num", pa.int64()),
        ("friend_user_num", pa.int64()),
        ("is_video_author", pa.bool_()),
    ]
)
SEQUENCES = pa.schema(
    [pa.field("user_id", pa.int64(), False)]
    + [(c, pa.list_(pa.int64())) for c in ("watch_seq", "long_watch_seq", "like_seq")]
)
_HISTORY_EVENTS = {"watch_seq": "view", "long_watch_seq": "long_view", "like_seq": "like"}


def _rename(table: pa.Table, names: dict[str, str]) -> pa.Table:
    return table.rename_columns([names.get(c, c) for c in table.column_names])


def read_interactions(root: Path) -> pa.Table:
    """The exposures of every log file in ``root``, or of the one log file ``root``."""
    logs = ("standard_log_*.parquet", "log_*_pure.csv*")
    files = [root] if root.is_file() else find_file(root, *logs)
    table = pa.concat_tables(read_raw(f, LOG).select(LOG.names) for f in files)
    table = _rename(table, {"video_id": "item_id", "play_time_ms": "watch_ms", **_FLAGS})
    ts = table.column("time_ms").cast(pa.timestamp("ms")).cast(TS)
    # The log writes 0 for the durations the video table does not know (1,665 rows): unknown.
    duration = table.column("duration_ms")
    table = table.set_column(
        table.column_names.index("duration_ms"),
        "duration_ms",
        pc.if_else(pc.equal(duration, 0), pa.scalar(None, pa.int64()), duration),
    )
    table = table.drop_columns("time_ms").add_column(2, "ts", ts)
    table = table.add_column(3, "event", pa.array(np.full(table.num_rows, IMPRESSION)))
    return table.sort_by([("ts", "ascending"), ("user_id", "ascending")])


def read_items(root: Path) -> pa.Table:
    table = read_raw(find_file(root, "video_features_basic_pure.csv*")[0], VIDEOS)
    tags = pc.split_pattern(table.column("tag"), ",")
    table = _rename(
        table.drop_columns("tag"),
        {
            "video_id": "item_id",
            "video_duration": "duration_ms",
            "upload_dt": "upload_ts",
            "server_width": "width",
            "server_height": "height",
        },
    )
    table = table.add_column(2, "title", pa.nulls(table.num_rows, pa.string()))
    table = table.append_column("tags", tags)
    return table.append_column("category", pc.list_element(tags, 0))


def read_users(root: Path) -> pa.Table:
    table = read_raw(find_file(root, "user_features_pure.csv*")[0], USERS)
    return _rename(
        table,
        {
            "user_active_degree": "activity",
            "follow_user_num": "follow_count",
            "fans_user_num": "fan_count",
            "friend_user_num": "friend_count",
            "is_video_author": "is_creator",
        },
    )


def read_history(root: Path) -> pa.Table | None:
    files = sorted(root.glob("user_sequences.parquet"))
    if not files:
        return None
    seqs = read_raw(files[0], SEQUENCES)
    users = seqs.column("user_id").to_numpy()
    parts = []
    for column, event in _HISTORY_EVENTS.items():
        lists = seqs.column(column).combine_chunks()
        lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy()
        starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
        parts.append(
            pa.table(
                {
                    "user_id": np.repeat(users, lengths),
                    "item_id": lists.flatten(),
                    "ts": pa.nulls(int(lengths.sum()), TS),
                    "event": np.full(int(lengths.sum()), event),
                    "seq": (np.arange(int(lengths.sum())) - starts).astype(np.int32),
                }
            )
        )
    keys = ("user_id", "event", "seq")
    return pa.concat_tables(parts).sort_by([(k, "ascending") for k in keys])


def load(root: Path) -> dict[str, pa.Table | None]:
    """The canonical tables of the KuaiRand data set in ``root``."""
    return {
        "interactions": read_interactions(root),
        "items": read_items(root),
        "users": read_users(root),
        "history": read_history(root),
    }
