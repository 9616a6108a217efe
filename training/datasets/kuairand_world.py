"""KuaiRand as a world the platform can load: ``reelrank demo --data kuairand PATH``.

The platform needs every creator to be a user and a recent clock; KuaiRand's authors are ids
of their own and its log is from April 2022. So the world is the imported data set with:
- at most ``max_users`` log users (a seeded sample; their whole log and history), and the
  videos they were shown;
- each author as a user of their own, ``author_id + offset`` (offset above every user id);
- follows from the log's ``followed`` impressions (viewer -> the video's author);
- every timestamp moved by whole days so the log's last day is today (the weekday pattern
  moves with it; the trending windows and the fresh source see a live platform).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from core.clock import utcnow
from training.datasets import kuairand
from training.datasets.store import write_dataset

SOURCE = "KuaiRand-Pure, Gao et al. CIKM 2022, CC BY-SA 4.0 (demo world: sampled, time-shifted)"


def _frame(table: object) -> pd.DataFrame | None:
    return None if table is None else table.to_pandas()  # type: ignore[attr-defined]


def world_tables(tables: dict, max_users: int, seed: int = 0) -> tuple[dict, dict]:
    """The world's tables from KuaiRand's canonical ones, and what was done (for meta)."""
    inter, items, users = (_frame(tables[t]) for t in ("interactions", "items", "users"))
    history = _frame(tables.get("history"))
    assert inter is not None and items is not None and users is not None
    log_users = np.sort(inter["user_id"].unique())
    if len(log_users) > max_users:
        log_users = np.sort(np.random.default_rng(seed).choice(log_users, max_users,
                                                               replace=False))
    inter = inter[inter["user_id"].isin(log_users)]
    items = items[items["item_id"].isin(inter["item_id"].unique())].copy()
    users = users[users["user_id"].isin(log_users)].copy()
    offset = int(max(users["user_id"].max(), inter["user_id"].max())) + 1
    items["author_id"] = pd.to_numeric(items["author_id"], errors="coerce")
    items = items[items["author_id"].notna()]
    inter = inter[inter["item_id"].isin(items["item_id"])]
    items["author_id"] = items["author_id"].astype(np.int64) + offset
    shift = pd.Timestamp(utcnow()).normalize() - inter["ts"].max().normalize()
    shift = pd.Timedelta(days=shift.days)
    for frame, col in ((inter, "ts"), (items, "upload_ts"), (users, "register_ts")):
        if col in frame:
            frame[col] = frame[col] + shift
    creators = pd.DataFrame({"user_id": np.sort(items["author_id"].unique()),
                             "is_creator": True})
    users = pd.concat([users, creators], ignore_index=True)
    author = items.set_index("item_id")["author_id"]
    followed = inter[inter.get("followed", pd.Series(False, index=inter.index))
                     .fillna(False).astype(bool)]
    follows = (pd.DataFrame({"user_id": followed["user_id"].to_numpy(np.int64),
                             "author_id": followed["item_id"].map(author).to_numpy(np.int64),
                             "ts": followed["ts"].to_numpy()})
               .sort_values("ts").drop_duplicates(["user_id", "author_id"]))
    out = {"interactions": inter, "items": items, "users": users, "follows": follows}
    if history is not None:
        history = history[history["user_id"].isin(log_users)
                          & history["item_id"].isin(items["item_id"])]
        if "ts" in history:
            history = history.assign(ts=history["ts"] + shift)
        out["history"] = history
    meta = {"log_users": len(log_users), "creator_offset": offset,
            "shift_days": int(shift.days), "max_users": max_users, "seed": seed}
    return out, meta


def build(path: Path, name: str, root: Path, max_users: int, seed: int = 0) -> dict:
    """Read KuaiRand from ``path``, write the world as data set ``name``; its meta."""
    tables, meta = world_tables(kuairand.load(Path(path)), max_users, seed)
    write_dataset(name, tables, SOURCE, meta, root=root)
    rows = {t: len(f) for t, f in tables.items()}
    return meta | {"rows": rows}
