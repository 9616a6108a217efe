"""Data sets on disk: ``<data_dir>/<name>/`` with one parquet file per table and ``meta.json``.

Writes are all-or-nothing: every table is validated first, then written into a temporary
directory beside the target, which replaces the target by rename. A failed import therefore
leaves the previous data set (or nothing) in place, never a half-written one.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from core.clock import utcnow
from core.dataset_schema import FLAGS, IMPRESSION, DataError, validate

REQUIRED_TABLES = ("interactions", "items", "users")
OPTIONAL_TABLES = ("follows", "history")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class Dataset:
    """One data set's tables as DataFrames (``follows``/``history`` are None when absent).

    Plain pandas dtypes, as ``read_parquet`` gives them: an integer column with nulls (a
    KuaiRand duration, a MicroLens author) arrives as float64 with NaN.
    """

    name: str
    path: Path
    meta: dict[str, Any]
    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    follows: pd.DataFrame | None = None
    history: pd.DataFrame | None = None


def dataset_path(name: str, root: Path) -> Path:
    """Where data set ``name`` lives under ``root`` (the settings' ``data_dir``)."""
    if not _NAME.match(name):
        raise DataError(f"invalid data set name {name!r}: use letters, digits, '_', '-', '.'")
    return Path(root) / name


def write_dataset(
    name: str,
    tables: dict[str, pd.DataFrame | pa.Table],
    source: str,
    meta: dict[str, Any] | None = None,
    *,
    root: Path,
) -> Path:
    """Validate ``tables`` and write them as data set ``name``, replacing any previous one."""
    target = dataset_path(name, root)
    missing = [t for t in REQUIRED_TABLES if t not in tables]
    if missing:
        raise DataError(f"{source}: no '{missing[0]}' table was produced")
    checked = {t: validate(t, data, source) for t, data in tables.items() if data is not None}
    info = {
        "name": name,
        "source": source,
        "created_at": utcnow().isoformat(timespec="seconds"),
        "rows": {t: tbl.num_rows for t, tbl in checked.items()},
        **(meta or {}),
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=target.parent))
    old: Path | None = None
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the data set is not
        for t, tbl in checked.items():
            pq.write_table(tbl, tmp / f"{t}.parquet", compression="zstd")
        (tmp / "meta.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
        old = target.with_name(f".{name}.old") if target.exists() else None
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
        tmp.rename(target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.exists() and not target.exists():
            old.rename(target)  # put the previous data set back
        raise
    return target


def list_datasets(root: Path) -> list[str]:
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(
        p.name for p in root.iterdir() if _NAME.match(p.name) and (p / "meta.json").is_file()
    )


def load_dataset(name_or_path: str | Path, root: Path | None = None) -> Dataset:
    """A data set by directory path, or by name under ``root`` (the settings' ``data_dir``)."""
    path = Path(name_or_path)
    if not (path / "meta.json").is_file() and _NAME.match(str(name_or_path)):
        if root is None:
            raise DataError(f"no data set at {path} (give a directory, or a name and a root)")
        path = Path(root) / str(name_or_path)
    if not (path / "meta.json").is_file():
        have = ", ".join(list_datasets(path.parent)) or "none"
        raise DataError(f"no data set at {path} (data sets there: {have})")
    tables = {
        t: pd.read_parquet(path / f"{t}.parquet")
        for t in (*REQUIRED_TABLES, *OPTIONAL_TABLES)
        if (path / f"{t}.parquet").is_file()
    }
    return Dataset(
        name=path.name, path=path, meta=json.loads((path / "meta.json").read_text()), **tables
    )


def describe(ds: Dataset) -> dict[str, Any]:
    """Sizes, time range and event / label rates: what to check after an import."""
    inter = ds.interactions
    imp = inter[inter["event"] == IMPRESSION]
    ts = inter["ts"].dropna()
    out: dict[str, Any] = {
        "name": ds.name,
        "source": ds.meta.get("source"),
        "created_at": ds.meta.get("created_at"),
        "interactions": len(inter),
        "users": int(inter["user_id"].nunique()),
        "items": int(inter["item_id"].nunique()),
        "per_user_median": float(inter.groupby("user_id").size().median()) if len(inter) else 0.0,
        "ts_min": ts.min() if len(ts) else None,
        "ts_max": ts.max() if len(ts) else None,
        "ts_null": int(inter["ts"].isna().sum()),
        "events": inter["event"].value_counts().to_dict(),
        "label_rates": {
            f: float(imp[f].astype("float").mean()) for f in FLAGS if f in imp and len(imp)
        },
        "items_table": len(ds.items),
        "titled": float(ds.items["title"].notna().mean()) if len(ds.items) else 0.0,
        "users_table": len(ds.users),
    }
    if "watch_ms" in imp and "duration_ms" in imp and len(imp):
        ratio = imp["watch_ms"] / imp["duration_ms"].where(imp["duration_ms"] > 0)
        out["watch_ratio_median"] = float(ratio.median())
    for t in OPTIONAL_TABLES:
        df = getattr(ds, t)
        if df is not None:
            out[t] = len(df)
    return out


def format_description(d: dict[str, Any]) -> str:
    """``describe`` output as a few aligned lines for the terminal."""
    if d["ts_min"] is not None:
        span = f"{d['ts_min']:%Y-%m-%d %H:%M} .. {d['ts_max']:%Y-%m-%d %H:%M} UTC"
        if d["ts_null"]:
            span += f" ({d['ts_null']:,} rows without ts)"
    else:
        span = "no timestamps (ordered by seq)"
    lines = [
        f"{d['name']}  (source: {d['source']}; created {d['created_at']})",
        f"  interactions  {d['interactions']:,} rows, {d['users']:,} users, {d['items']:,} items,"
        f" median {d['per_user_median']:g} per user",
        f"  time          {span}",
        "  events        " + ", ".join(f"{k} {v:,}" for k, v in d["events"].items()),
    ]
    if d["label_rates"]:
        rates = ", ".join(f"{k} {v:.4g}" for k, v in d["label_rates"].items())
        if "watch_ratio_median" in d:
            rates += f"; median watch ratio {d['watch_ratio_median']:.3g}"
        lines.append(f"  impressions   {rates}")
    tables = f"items {d['items_table']:,} ({d['titled']:.0%} titled), users {d['users_table']:,}"
    for t in OPTIONAL_TABLES:
        if t in d:
            tables += f", {t} {d[t]:,}"
    lines.append(f"  tables        {tables}")
    return "\n".join(lines)
