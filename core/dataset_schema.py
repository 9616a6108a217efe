"""Canonical table schemas for interaction data, and their validation.

Every data source (KuaiRand, MicroLens, the synthetic world, the app's own interaction log)
is turned into the same tables, so splits, samplers, trainers and features are written once.
A table is a pyarrow table: required columns first (in schema order), then the optional
columns that are present, then any extra columns, which are kept untouched.

:func:`validate` checks and casts a table; anything wrong raises :class:`DataError` with one
line naming the source and the column, so a bad import stops before anything is written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from core.events import Action

TS = pa.timestamp("ms", tz="UTC")

# Event kinds of an ``interactions`` row.
IMPRESSION = "impression"  # an exposure; its outcome is in the flag columns (clicked, liked...)
VIEW = "view"  # a consumption known without its exposure (MicroLens, KuaiRand history)
# Outcome events as rows of their own (KuaiRand history lists, the app's interaction log, whose
# actions keep their names: see ``core.events.Action``).
OUTCOME_EVENTS = frozenset({"click", "long_view", "hate"}) | frozenset(a.value for a in Action)
EVENTS: frozenset[str] = frozenset({IMPRESSION, VIEW}) | OUTCOME_EVENTS

# Outcome flags of an impression, in the order reports show them.
FLAGS = ("clicked", "long_view", "liked", "followed", "commented", "shared", "hated")


class DataError(ValueError):
    """Input data that does not fit a table; the message names the source and the column."""


@dataclass(frozen=True)
class TableSpec:
    """A canonical table: required and optional columns, its key, and enumerated columns."""

    name: str
    required: pa.Schema
    optional: pa.Schema
    key: tuple[str, ...] = ()
    enums: Mapping[str, frozenset[str]] = field(default_factory=dict)


def _schema(*fields: tuple[str, pa.DataType] | tuple[str, pa.DataType, bool]) -> pa.Schema:
    return pa.schema([pa.field(*f) for f in fields])


INTERACTIONS = TableSpec(
    "interactions",
    required=_schema(
        ("user_id", pa.int64(), False),
        ("item_id", pa.int64(), False),
        ("ts", TS),  # null where the source has no clock (MicroLens): order by ``seq`` instead
        ("event", pa.string(), False),
    ),
    optional=_schema(
        ("seq", pa.int32()),  # order within (user_id, event), oldest first, when ts is null
        ("watch_ms", pa.int64()),
        ("duration_ms", pa.int64()),
        *((flag, pa.bool_()) for flag in FLAGS),
        ("is_rand", pa.bool_()),  # exposed by a random policy: unbiased for evaluation
        ("tab", pa.int32()),  # the app surface (KuaiRand's tab id)
    ),
    enums={"event": EVENTS},
)

ITEMS = TableSpec(
    "items",
    required=_schema(
        ("item_id", pa.int64(), False),
        ("author_id", pa.int64()),
        ("title", pa.string()),
        ("duration_ms", pa.int64()),
        ("upload_ts", TS),
    ),
    optional=_schema(
        ("tags", pa.list_(pa.string())),
        ("category", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
    ),
    key=("item_id",),
)

USERS = TableSpec(
    "users",
    required=_schema(("user_id", pa.int64(), False)),
    optional=_schema(
        ("register_ts", TS),
        ("follow_count", pa.int64()),
        ("fan_count", pa.int64()),
        ("friend_count", pa.int64()),
        ("activity", pa.string()),
        ("region", pa.string()),
        ("device", pa.string()),
        ("is_creator", pa.bool_()),
    ),
    key=("user_id",),
)

FOLLOWS = TableSpec(
    "follows",
    required=_schema(
        ("user_id", pa.int64(), False),
        ("author_id", pa.int64(), False),
        ("ts", TS),
    ),
    optional=_schema(),
    key=("user_id", "author_id"),
)

TABLES: dict[str, TableSpec] = {s.name: s for s in (INTERACTIONS, ITEMS, USERS, FOLLOWS)}
# ``history`` (interactions before a data set's log window) shares the interactions schema.
TABLES["history"] = INTERACTIONS


def to_arrow(data: pd.DataFrame | pa.Table, source: str) -> pa.Table:
    """A pyarrow table from a DataFrame, converted column by column to name a bad one."""
    if isinstance(data, pa.Table):
        return data
    columns = {}
    for name in data.columns:
        try:
            columns[str(name)] = pa.Table.from_pandas(data[[name]], preserve_index=False).column(0)
        except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as exc:
            raise DataError(f"{source}: column '{name}': cannot convert ({exc})") from None
    return pa.table(columns)


def _compatible(src: pa.DataType, target: pa.DataType) -> bool:
    """Whether ``src`` values can become ``target`` values without changing their meaning."""
    t = pa.types
    if t.is_null(src):
        return True
    if t.is_integer(target) or t.is_floating(target) or t.is_boolean(target):
        return t.is_integer(src) or t.is_floating(src) or t.is_boolean(src)
    if t.is_string(target):
        return t.is_string(src) or t.is_large_string(src) or t.is_integer(src)
    if t.is_timestamp(target):
        return t.is_timestamp(src) or t.is_date(src)
    if t.is_list(target):
        return (t.is_list(src) or t.is_large_list(src)) and _compatible(
            src.value_type, target.value_type
        )
    return False


def _cast(col: pa.ChunkedArray, target: pa.DataType) -> pa.ChunkedArray:
    """Cast between compatible types only; raise ``TypeError(reason)`` otherwise."""
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    if col.type == target:
        return col
    if not _compatible(col.type, target):
        raise TypeError("incompatible type")
    if pa.types.is_boolean(target) and not pa.types.is_boolean(col.type):
        lo, hi = pc.min_max(col).values()
        if lo.is_valid and (lo.as_py() < 0 or hi.as_py() > 1):
            raise TypeError(f"values outside 0/1: min {lo.as_py()}, max {hi.as_py()}")
    try:
        # Timestamps may lose sub-millisecond precision; everything else must be exact.
        return col.cast(target, safe=not pa.types.is_timestamp(target))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise TypeError(str(exc).splitlines()[0]) from None


def conform(
    data: pd.DataFrame | pa.Table,
    required: pa.Schema,
    source: str,
    optional: pa.Schema | None = None,
) -> pa.Table:
    """Check required columns, cast known ones, reject nulls in non-nullable fields.

    Used both for canonical tables and for the raw columns an adapter reads, so a raw file's
    problems are reported with the file's own column names.
    """
    table = to_arrow(data, source)
    optional = optional or pa.schema([])
    missing = [f.name for f in required if f.name not in table.column_names]
    if missing:
        have = ", ".join(table.column_names[:12]) or "none"
        raise DataError(f"{source}: missing column '{missing[0]}' (has: {have})")
    known = [f for f in (*required, *optional) if f.name in table.column_names]
    names = {f.name for f in known}
    out: dict[str, pa.ChunkedArray] = {}
    for f in known:
        col = table.column(f.name)
        try:
            col = _cast(col, f.type)
        except TypeError as exc:
            raise DataError(
                f"{source}: column '{f.name}': expected {f.type}, got {col.type} ({exc})"
            ) from None
        if not f.nullable and col.null_count:
            raise DataError(f"{source}: column '{f.name}': {col.null_count} null values")
        out[f.name] = col
    for name in table.column_names:
        if name not in names:
            out[name] = table.column(name)
    return pa.table(out)


def validate(table_name: str, data: pd.DataFrame | pa.Table, source: str) -> pa.Table:
    """The canonical form of ``data`` as table ``table_name``, or :class:`DataError`."""
    if table_name not in TABLES:
        raise ValueError(f"unknown table {table_name!r} (known: {', '.join(TABLES)})")
    spec = TABLES[table_name]
    table = conform(data, spec.required, f"{source} ({table_name})", spec.optional)
    for column, allowed in spec.enums.items():
        values = set(pc.unique(table.column(column)).to_pylist()) - set(allowed)
        if values:
            raise DataError(
                f"{source} ({table_name}): column '{column}': unknown values "
                f"{sorted(map(str, values))[:5]} (allowed: {', '.join(sorted(allowed))})"
            )
    if spec.key and table.num_rows:
        keys = table.select(list(spec.key)).group_by(list(spec.key)).aggregate([])
        if keys.num_rows != table.num_rows:
            dupes = table.num_rows - keys.num_rows
            raise DataError(
                f"{source} ({table_name}): column '{'+'.join(spec.key)}': {dupes} duplicate keys"
            )
    return table
