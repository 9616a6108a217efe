"""Offline metrics of the ranker and its baselines: AUC, log-loss, GAUC, calibration.

- AUC: the probability that a random positive scores above a random negative (ties count
  half), from average ranks, so it equals scikit-learn's ``roc_auc_score``.
- GAUC: the per-user AUC averaged over users that have both a positive and a negative,
  weighted by each user's number of impressions (Zhou et al., DIN, KDD 2018). It is what a
  feed sees: a ranker only orders one user's candidates, so cross-user calibration offsets that
  lift the global AUC do nothing for it.
- Calibration: predictions cut into equal-count buckets; per bucket the mean prediction and the
  observed rate; ECE is their absolute gap averaged with bucket weights. Equal-count buckets
  keep rare tasks (follow: ~0.1 %) from leaving every bucket but one empty.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import rankdata

EPS = 1e-7


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC; NaN when ``y`` has a single class."""
    y = np.asarray(y, bool)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if not n_pos or not n_neg:
        return float("nan")
    ranks = rankdata(p)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def logloss(y: np.ndarray, p: np.ndarray) -> float:
    """Mean binary cross-entropy; ``y`` may be a soft label in [0, 1]."""
    y = np.asarray(y, np.float64)
    p = np.clip(np.asarray(p, np.float64), EPS, 1 - EPS)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def gauc(users: np.ndarray, y: np.ndarray, p: np.ndarray) -> tuple[float, int]:
    """Impression-weighted mean of per-user AUC over users with both classes; (GAUC, users)."""
    df = pd.DataFrame({"u": np.asarray(users), "y": np.asarray(y, bool), "p": np.asarray(p)})
    g = df.groupby("u")["y"]
    n_pos, n = g.transform("sum"), g.transform("size")
    df = df[(n_pos > 0) & (n_pos < n)]
    if df.empty:
        return float("nan"), 0
    df = df.assign(r=df.groupby("u")["p"].rank(method="average"))
    per = df.groupby("u").agg(n=("y", "size"), pos=("y", "sum"))
    per["rank_sum"] = df[df["y"]].groupby("u")["r"].sum()
    per["auc"] = (per["rank_sum"] - per["pos"] * (per["pos"] + 1) / 2) / (
        per["pos"] * (per["n"] - per["pos"])
    )
    return float(np.average(per["auc"], weights=per["n"])), len(per)


def calibration(y: np.ndarray, p: np.ndarray, buckets: int = 10) -> pd.DataFrame:
    """Per equal-count bucket of ``p``: count, mean prediction, observed mean of ``y``."""
    y, p = np.asarray(y, np.float64), np.asarray(p, np.float64)
    order = np.argsort(p, kind="stable")
    bucket = np.empty(len(p), np.int64)
    bucket[order] = np.arange(len(p)) * buckets // max(len(p), 1)
    df = pd.DataFrame({"bucket": bucket, "predicted": p, "observed": y})
    out = df.groupby("bucket").agg(
        n=("predicted", "size"), predicted=("predicted", "mean"), observed=("observed", "mean")
    )
    return out.reset_index()


def ece(y: np.ndarray, p: np.ndarray, buckets: int = 10) -> float:
    """Expected calibration error over equal-count buckets."""
    t = calibration(y, p, buckets)
    if t.empty:
        return float("nan")
    return float(np.average((t["predicted"] - t["observed"]).abs(), weights=t["n"]))


def task_metrics(
    task: str, y: np.ndarray, p: np.ndarray, users: np.ndarray, ratio: bool = False
) -> dict[str, float]:
    """The metrics of one task, keyed ``<task>_<metric>``.

    Binary tasks: auc, logloss, gauc (+ gauc_users), ece, and the mean prediction against the
    observed rate. Ratio tasks (a mean, not a probability): mae, rmse, and their ece. Rows
    with an unknown label (NaN) are left out.
    """
    y, p = np.asarray(y, np.float64), np.asarray(p, np.float64)
    known = np.isfinite(y)
    y, p, users = y[known], p[known], np.asarray(users)[known]
    out: dict[str, float] = {"mean_pred": float(p.mean()), "mean_obs": float(y.mean())}
    if ratio:
        out |= {"mae": float(np.abs(p - y).mean()), "rmse": float(np.sqrt(((p - y) ** 2).mean()))}
    else:
        g, n_users = gauc(users, y, p)
        out |= {"auc": auc(y, p), "logloss": logloss(y, p), "gauc": g, "gauc_users": n_users}
    out["ece"] = ece(y, p)
    return {f"{task}_{k}": v for k, v in out.items()}


def eval_row(model: str, task: str, metrics: dict[str, float]) -> dict[str, object]:
    """One row of an eval table (``format_metrics``): :func:`task_metrics`' values unprefixed."""
    return {"model": model, "task": task,
            **{k.removeprefix(f"{task}_"): v for k, v in metrics.items()}}


def logit(p: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), eps, 1 - eps)
    return np.log(p / (1 - p))


def platt(ab: list[float], p: np.ndarray) -> np.ndarray:
    """Calibrated probabilities ``sigmoid(a * logit(p) + b)`` (Platt scaling of a score that
    already is a probability; ``ab`` fitted on validation by :mod:`training.ranker.selection`)."""
    return (1 / (1 + np.exp(-(ab[0] * logit(p) + ab[1])))).astype(np.float32)
