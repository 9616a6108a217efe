"""MicroLens adapter: short-video watch sequences with English titles.

MicroLens (Ni et al., "A Content-Driven Micro-Video Recommendation Dataset at Scale", 2023;
https://github.com/westlake-repl/MicroLens) is for research use; its authors ask that
modified copies are not redistributed, so data sets built from it stay local.

- ``MicroLens-50k_pairs.tsv[.gz]``: ``user<TAB>item item ...`` per line (CRLF), in
  chronological order, no clock → ``interactions`` with ``event = view``, ``ts`` null and
  ``seq`` = position in the user's line;
- ``MicroLens-50k_titles.csv[.gz]``: ``item,title`` → ``items`` with ``tags`` = the title's
  hashtags. Items watched but missing from the titles file get a row without a title.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.dataset_schema import TS, VIEW, DataError
from training.datasets.raw import find_file, read_raw

TITLES = pa.schema([pa.field("item", pa.int64(), False), ("title", pa.string())])
_TAG_END = re.compile(r"[!?。！？,，;；]")
_MAX_TAG_WORDS = 6


def hashtags(title: str) -> list[str]:
    """The ``# tag`` phrases of a title, lower-cased, in order, without duplicates.

    Titles are machine-translated, so a tag runs to the next ``#`` or sentence punctuation;
    longer runs (more than six words) are prose that followed a tag, not a tag.
    """
    tags: list[str] = []
    for segment in title.split("#")[1:]:
        tag = " ".join(_TAG_END.split(segment, maxsplit=1)[0].split()).lower()
        if tag and len(tag.split()) <= _MAX_TAG_WORDS and tag not in tags:
            tags.append(tag)
    return tags


def read_pairs(path: Path) -> pa.Table:
    """The pairs file as interactions; a malformed line is reported with its number."""
    try:
        with gzip.open(path, "rt") if path.suffix == ".gz" else path.open() as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise DataError(f"{path}: unreadable ({exc})") from None
    users, counts, items = [], [], []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        user, tab, rest = line.partition("\t")
        seq = rest.split()
        try:
            if not tab or not seq:
                raise ValueError
            users.append(int(user))
            items.extend(int(i) for i in seq)
        except ValueError:
            raise DataError(
                f"{path}: line {number}: column 'user'/'items': expected 'user<TAB>item item ...'"
                f" with integer ids, got {line[:60]!r}"
            ) from None
        counts.append(len(seq))
    lengths = np.asarray(counts, dtype=np.int64)
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    n = int(lengths.sum())
    return pa.table(
        {
            "user_id": np.repeat(np.asarray(users, dtype=np.int64), lengths),
            "item_id": np.asarray(items, dtype=np.int64),
            "ts": pa.nulls(n, TS),
            "event": np.full(n, VIEW),
            "seq": (np.arange(n) - starts).astype(np.int32),
        }
    )


def read_items(path: Path, watched: pa.ChunkedArray) -> pa.Table:
    titles = read_raw(path, TITLES)
    ids = titles.column("item")
    unseen = pc.unique(pc.filter(watched, pc.invert(pc.is_in(watched, ids))))
    item_ids = pa.concat_arrays([ids.combine_chunks(), unseen])
    title = pa.concat_arrays(
        [titles.column("title").combine_chunks(), pa.nulls(len(unseen), pa.string())]
    )
    tags = [None if t is None else hashtags(t) for t in title.to_pylist()]
    none = pa.nulls(len(item_ids), pa.int64())
    return pa.table(
        {
            "item_id": item_ids,
            "author_id": none,
            "title": title,
            "duration_ms": none,
            "upload_ts": pa.nulls(len(item_ids), TS),
            "tags": pa.array(tags, pa.list_(pa.string())),
        }
    )


def load(root: Path) -> dict[str, pa.Table]:
    """The canonical tables of the MicroLens data set in ``root``."""
    interactions = read_pairs(find_file(root, "MicroLens-*_pairs.tsv*")[0])
    items = read_items(find_file(root, "MicroLens-*_titles.csv*")[0], interactions["item_id"])
    users = pa.table({"user_id": pc.unique(interactions["user_id"])})
    return {"interactions": interactions, "items": items, "users": users}
