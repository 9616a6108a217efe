"""Batch item features held in the serving process, as arrays indexed by entity id.

``video_stats`` (by video id, the catalog's dense index) and ``creator_stats`` (by creator id)
change only when a snapshot is materialized, so asking the online store for them on every
request moves the same bytes again and again. :class:`ItemTable` reads them from the online
store (the source of truth; the same raw reads and defaults as
:class:`features.online.FeatureReader`) into one array per field, reloads everything when a
new snapshot is materialized (:func:`features.store.materialized_mark` changes) and reads only
the ids it has not seen yet otherwise (new uploads, new creators). A request then gathers its
candidates' rows with one fancy-index per field.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.metrics import cache_lookups
from features import schema
from features.online import OnlineBackend, Raw
from features.repo import VIEW_BY_NAME

log = logging.getLogger(__name__)
CHUNK = 20_000  # entities per read while loading (one pipelined batch each)
_DTYPES = {"int": np.int64, "float": np.float64, "str": object, "bytes": object}


@dataclass(frozen=True)
class Block:
    """One view's fields for entity ids ``0 .. size - 1``; ``found``: the store had a row."""

    values: dict[str, np.ndarray]  # "view:field" -> values by id, defaults where not found
    found: np.ndarray  # bool by id
    loaded: np.ndarray  # bool by id: asked the store already

    @property
    def size(self) -> int:
        return len(self.found)


def _empty(view: str, defaults: dict[str, Any], size: int) -> Block:
    values = {}
    for f in VIEW_BY_NAME[view].fields:
        ref = f"{view}:{f.name}"
        values[ref] = np.full(size, defaults[ref], _DTYPES[f.kind])
    return Block(values, np.zeros(size, bool), np.zeros(size, bool))


def _grown(block: Block, view: str, defaults: dict[str, Any], size: int) -> Block:
    if size <= block.size:
        return block
    out = _empty(view, defaults, max(size, int(block.size * 1.25) + 64))
    for ref, v in block.values.items():
        out.values[ref][: block.size] = v
    out.found[: block.size] = block.found
    out.loaded[: block.size] = block.loaded
    return out


class ItemTable:
    """``gather(video_ids, creator_ids)`` -> raw batch values of the candidates' rows."""

    VIEWS = (("video_stats", "video_id", schema.VIDEO_BATCH_REFS),
             ("creator_stats", "creator_id", schema.CREATOR_REFS))

    def __init__(self, backend: OnlineBackend, defaults: Callable[[], dict[str, Any]]) -> None:
        self.backend, self.defaults = backend, defaults
        d = defaults()
        self.blocks = {view: _empty(view, d, 0) for view, _, _ in self.VIEWS}
        self.mark: object = None  # the materialization the table was loaded from
        self._lock = threading.Lock()  # one loader at a time; readers never wait

    def sync(self, mark: object, ids: dict[str, np.ndarray]) -> int:
        """Bring the table in step: everything again when ``mark`` (the materialization)
        changed, else only ids not asked for yet. ``ids``: view name -> entity ids now in use.
        Returns how many entities were read."""
        with self._lock:
            fresh = mark != self.mark
            d = self.defaults()
            read = 0
            blocks = dict(self.blocks)
            for view, key, refs in self.VIEWS:
                want = np.unique(np.asarray(ids.get(view, []), np.int64))
                want = want[want >= 0]
                block = _empty(view, d, 0) if fresh else blocks[view]
                block = _grown(block, view, d, int(want[-1]) + 1 if len(want) else 0)
                todo = want[~block.loaded[want]]
                for start in range(0, len(todo), CHUNK):
                    part = todo[start : start + CHUNK]
                    (raw,) = self.backend.read([(refs, {key: part.tolist()})])
                    _fill(block, raw, part, d)
                read += len(todo)
                blocks[view] = block
            self.blocks = blocks  # readers see the old or the new tables, never half of one
            self.mark = mark
            return read

    def gather(self, video_ids: np.ndarray, creator_ids: np.ndarray) -> tuple[dict[str, Any],
                                                                             np.ndarray]:
        """``({"view:field": values per row}, video found mask)`` for the candidates; ids the
        table has not loaded get the defaults (what the store answers for an unknown entity)."""
        out: dict[str, Any] = {}
        found = np.zeros(len(video_ids), bool)
        defaults = self.defaults()
        for view, _, _ in self.VIEWS:
            block = self.blocks[view]
            ids = np.asarray(video_ids if view == "video_stats" else creator_ids, np.int64)
            inside = (ids >= 0) & (ids < block.size)
            every = bool(inside.all())
            pos = ids if every else np.where(inside, ids, 0)
            for ref, values in block.values.items():
                if not block.size:
                    out[ref] = np.full(len(ids), defaults[ref], values.dtype)
                    continue
                col = values[pos]  # a copy: fancy indexing
                if not every:
                    col[~inside] = defaults[ref]
                out[ref] = col
            if view == "video_stats" and block.size:
                found = block.found[pos] & inside
            hits = int(np.count_nonzero(block.loaded[pos] & inside)) if block.size else 0
            cache_lookups(f"item_features:{view}", hits, len(ids) - hits)
        return out, found


def _fill(block: Block, raw: Raw, ids: np.ndarray, defaults: dict[str, Any]) -> None:
    """Write one read's values (``None``: the store has no row) into the block."""
    block.loaded[ids] = True
    present = np.zeros(len(ids), bool)
    for ref, values in raw.items():
        have = np.fromiter((v is not None for v in values), bool, len(values))
        present |= have
        arr = block.values[ref]
        col = np.asarray([defaults[ref] if v is None else v for v in values], arr.dtype) \
            if arr.dtype != object else _objects(values, defaults[ref])
        arr[ids] = col
    block.found[ids] = present


def _objects(values: list[Any], default: Any) -> np.ndarray:
    out = np.empty(len(values), object)
    out[:] = [default if v is None else v for v in values]
    return out
