"""Tasks and encoded splits: what the ranker learns from, as arrays.

Labels come with the point-in-time training set (``features.training_set``), one column per
task: the binary outcomes of an impression and the watch ratio (``watch_ms / duration``,
clipped to [0, 2]). A data set without an outcome (the synthetic world has no tabs, MicroLens
no impressions at all) simply has no such task: the trainer trains and reports the tasks whose
labels are present.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from training.ranker.featurizer import Featurizer
from training.ranker.history import HISTORY_COLUMN

BINARY_TASKS = ("click", "long_view", "like", "follow", "share", "hate")
RATIO_TASKS = ("watch_ratio",)
TASKS = (*BINARY_TASKS, *RATIO_TASKS)
MIN_POSITIVES = 5  # a binary task with fewer positives (or negatives) in training is left out


def trainable_tasks(frame: pd.DataFrame) -> list[str]:
    """Tasks with a label column in ``frame`` and, for binary ones, enough positives."""
    out = []
    for task in TASKS:
        if task not in frame:
            continue
        y = frame[task].to_numpy(np.float64)
        if task in RATIO_TASKS:
            if np.isfinite(y).any():
                out.append(task)
        elif np.nansum(y) >= MIN_POSITIVES and np.nansum(1 - y) >= MIN_POSITIVES:
            out.append(task)
    return out


@dataclass
class Encoded:
    """One split as arrays: model inputs, labels [N, tasks] (NaN = unknown), users, times."""

    categorical: np.ndarray
    numeric: np.ndarray
    labels: np.ndarray
    users: np.ndarray
    ts_ms: np.ndarray
    history: np.ndarray | None = None  # [N, L, fields] watched videos (-1 pad) or None

    def __len__(self) -> int:
        return len(self.users)


def encode(frame: pd.DataFrame, featurizer: Featurizer, tasks: list[str]) -> Encoded:
    cat, num = featurizer.encode(frame)
    y = np.full((len(frame), len(tasks)), np.nan, np.float32)
    for j, t in enumerate(tasks):
        if t in frame:
            y[:, j] = frame[t].to_numpy(np.float32)
    ts = pd.to_datetime(frame["ts"], utc=True).dt.as_unit("ms").astype("int64").to_numpy()
    history = None
    if featurizer.history_len:
        history = featurizer.encode_history(frame.get(HISTORY_COLUMN), len(frame))
    return Encoded(cat, num, y, frame["user_id"].to_numpy(np.int64), ts, history)


def split_at(frame: pd.DataFrame, end: pd.Timestamp) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows before ``end`` and rows at or after it (a temporal split; ``ts`` is UTC)."""
    before = pd.to_datetime(frame["ts"], utc=True) < end
    return frame[before.to_numpy()], frame[~before.to_numpy()]
