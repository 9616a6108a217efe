"""The Feast repo's definitions: entities, batch and push feature views, as data.

Every feature view is declared once in :data:`VIEWS` (fields, types, defaults) and turned into
Feast objects by :func:`definitions`; the online read path and the training-set builder read
the same declarations, so a new field needs one line here and nowhere else.

Batch views read parquet files that :mod:`features.batch` writes under ``<repo>/data/``
(daily snapshots of the interaction log, one ``event_timestamp`` per row); push views are fed
by :mod:`features.stream` through Feast push sources. Paths are relative to the repo, so the
registry stays valid wherever ``var/`` lives.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

PROJECT = "reelrank"
TS_FIELD = "event_timestamp"
# Entity name -> join key. user x creator views use both user and creator.
ENTITIES: dict[str, str] = {"user": "user_id", "video": "video_id", "creator": "creator_id"}
PRIOR = object()  # default marker: the global rate written by the batch job (meta.json)

# Field kinds: Feast type name, pyarrow type.
_KINDS: dict[str, tuple[str, pa.DataType]] = {
    "int": ("Int64", pa.int64()),
    "float": ("Float32", pa.float32()),
    "str": ("String", pa.string()),
    "ints": ("Array(Int64)", pa.list_(pa.int64())),
    "floats": ("Array(Float32)", pa.list_(pa.float32())),
    "strs": ("Array(String)", pa.list_(pa.string())),
    "bytes": ("Bytes", pa.binary()),
}


@dataclass(frozen=True)
class Field:
    name: str
    kind: str  # a key of _KINDS
    default: Any = 0

    @property
    def arrow(self) -> pa.DataType:
        return _KINDS[self.kind][1]


@dataclass(frozen=True)
class View:
    name: str
    entities: tuple[str, ...]
    fields: tuple[Field, ...]
    ttl: timedelta = timedelta(0)  # 0: no limit (offline point-in-time joins only)
    push: bool = False
    doc: str = ""

    @property
    def join_keys(self) -> list[str]:
        return [ENTITIES[e] for e in self.entities]

    @property
    def path(self) -> str:
        return f"data/{self.name}.parquet"

    @property
    def push_source(self) -> str:
        return f"{self.name}_push"

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    def arrow_schema(self) -> pa.Schema:
        keys = [pa.field(k, pa.int64()) for k in self.join_keys]
        ts = pa.field(TS_FIELD, pa.timestamp("us", tz="UTC"))
        return pa.schema([*keys, ts, *(pa.field(f.name, f.arrow) for f in self.fields)])


def _f(spec: str, default: Any = 0) -> tuple[Field, ...]:
    """``"a b c:kind"`` -> fields a, b, c of one kind and default (compact declarations)."""
    names, kind = spec.rsplit(":", 1)
    return tuple(Field(n, kind, default) for n in names.split())


SNAPSHOT_TTL = timedelta(days=2)  # daily snapshots: one missed build still finds yesterday's

VIEWS: tuple[View, ...] = (
    View(
        "user_profile",
        ("user",),
        (
            Field("register_ts_s", "int", -1),
            Field("activity_level", "int", -1),
            *_f("impressions_7d impressions_30d clicks_7d follow_count fan_count:int"),
            *_f("click_rate_30d watch_ratio_7d watch_ratio_30d:float", PRIOR),
            Field("topic_affinity", "floats", ()),
        ),
        SNAPSHOT_TTL,
        doc="activity, tenure, follows, watch ratios and topic affinity as of each snapshot",
    ),
    View(
        "video_stats",
        ("video",),
        (
            Field("creator_id", "int", -1),
            Field("duration_ms", "int", 0),
            Field("upload_ts_s", "int", -1),
            Field("topic", "str", ""),
            Field("topic_id", "int", -1),
            *_f("views_1h views_24h views_7d:int"),
            *_f("click_rate like_rate long_view_rate share_rate watch_ratio_30d:float", PRIOR),
        ),
        SNAPSHOT_TTL,
        doc="metadata, exposure counts and smoothed engagement rates (30 days)",
    ),
    View(
        "creator_stats",
        ("creator",),
        (
            *_f("follower_count videos_30d impressions_30d:int"),
            *_f("posting_rate_30d:float"),
            *_f("completion_30d:float", PRIOR),
        ),
        SNAPSHOT_TTL,
        doc="audience, output and average completion of a creator's videos",
    ),
    View(
        "user_creator",
        ("user", "creator"),
        _f("has_followed impressions clicks likes:int"),
        doc="cumulative user x creator history; a row only when it changed, so no TTL",
    ),
    View(
        "video_realtime",
        ("video",),
        (*_f("view_buckets like_buckets:bytes", b""), Field("head_minute", "int", 0)),
        push=True,
        doc="per-minute views and likes of the last hour, newest first, packed int32 "
        "(features.windows)",
    ),
    View(
        "user_realtime",
        ("user",),
        (
            *_f("last_watched seen:ints", ()),
            Field("session_topics", "strs", ()),
            *_f("session_start_s session_events last_event_s:int"),
        ),
        push=True,
        doc="last watched videos, seen set and the current session, from the event stream",
    ),
    View(
        "video_fresh",
        ("video",),
        (
            Field("creator_id", "int", -1),
            *_f("duration_ms ready:int"),
            Field("upload_ts_s", "int", -1),
        ),
        push=True,
        doc="a new upload's metadata from video.processed, before any batch snapshot has it",
    ),
)
VIEW_BY_NAME: dict[str, View] = {v.name: v for v in VIEWS}
BATCH_VIEWS = tuple(v for v in VIEWS if not v.push)
PUSH_VIEWS = tuple(v for v in VIEWS if v.push)


def definitions() -> list[Any]:
    """The Feast objects of the repo (imports Feast, which takes seconds: only when needed)."""
    from feast import Entity, FeatureView, FileSource, PushSource, ValueType
    from feast import Field as FeastField
    from feast.types import Array, Bytes, Float32, Int64, String

    types = {
        "bytes": Bytes,
        "int": Int64,
        "float": Float32,
        "str": String,
        "ints": Array(Int64),
        "floats": Array(Float32),
        "strs": Array(String),
    }
    entities = {
        name: Entity(name=name, join_keys=[key], value_type=ValueType.INT64)
        for name, key in ENTITIES.items()
    }
    objects: list[Any] = list(entities.values())
    for view in VIEWS:
        source: Any = FileSource(name=f"{view.name}_file", path=view.path, timestamp_field=TS_FIELD)
        if view.push:
            source = PushSource(name=view.push_source, batch_source=source)
        objects.append(source)
        objects.append(
            FeatureView(
                name=view.name,
                entities=[entities[e] for e in view.entities],
                ttl=view.ttl,
                schema=[
                    *(FeastField(name=k, dtype=Int64) for k in view.join_keys),
                    *(FeastField(name=f.name, dtype=types[f.kind]) for f in view.fields),
                ],
                source=source,
                online=True,
                description=view.doc,
            )
        )
    return objects


def write_empty_sources(repo: Path, overwrite: bool = False) -> None:
    """An empty parquet file per view with its schema, so every source exists before a build."""
    for view in VIEWS:
        path = repo / view.path
        if overwrite or not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(view.arrow_schema().empty_table(), path)
