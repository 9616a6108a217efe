"""The one offline evaluation every retrieval model and baseline goes through.

Per evaluated user (one with at least one held-out positive not already in their training
timeline): items of the training timeline are removed from the ranking, the top 500 of the
allowed catalog are taken, and

- Recall@K = hits in the top K / the user's held-out positives;
- NDCG@K with binary gains, ideal DCG over min(K, positives);
- HitRate@50 = share of users with at least one hit in the top 50;
- Coverage@50 = distinct items in anyone's top 50 / allowed catalog size;
- ColdRecall@K = Recall@K counting only positives on items with no training interaction
  (reported when there are any; the cold-item protocol makes all of them cold).

Metrics are means over users. Held-out positives already seen in training are dropped (they
cannot be recommended, so they would only add a constant loss to every model).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from training.retrieval.data import Fold
from training.retrieval.inputs import TrainData

RECALL_KS = (20, 50, 100, 500)
NDCG_KS = (10, 50)
HIT_K = COVERAGE_K = 50
COLD_KS = (50, 100)
METRICS = (
    *(f"recall@{k}" for k in RECALL_KS),
    *(f"ndcg@{k}" for k in NDCG_KS),
    f"hit@{HIT_K}",
    f"coverage@{COVERAGE_K}",
    *(f"cold_recall@{k}" for k in COLD_KS),
)

HEADLINE = ("recall@50", "ndcg@10")  # kept per user on request, for paired intervals
ScoreFn = Callable[[np.ndarray], np.ndarray | torch.Tensor]  # user indices -> [b, n_items]


def _targets(data: TrainData, fold: Fold) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted unique (user, item) index pairs of held-out positives not seen in training."""
    ids = data.ids
    users = ids.user_index(fold.test["user_id"].to_numpy())
    items = ids.item_index(fold.test["item_id"].to_numpy())
    ok = (users >= 0) & (items >= 0)
    users, items = users[ok], items[ok]
    seen_keys = np.repeat(np.arange(data.n_users), np.diff(data.indptr)) * data.n_items + data.item
    keys = np.unique(users * data.n_items + items)
    keys = keys[~np.isin(keys, seen_keys)]
    u, i = keys // data.n_items, keys % data.n_items
    starts = np.searchsorted(u, np.unique(u))
    return np.unique(u), np.append(starts, len(u)), i


def evaluate(
    score: ScoreFn,
    data: TrainData,
    fold: Fold,
    max_users: int | None = None,
    seed: int = 0,
    batch_size: int = 512,
    per_user: dict[str, np.ndarray] | None = None,
) -> dict[str, float]:
    """Ranking metrics of ``score`` on ``fold.test``, excluding each user's training items.

    ``per_user``, when given, is filled with the evaluated user indices ("user") and each
    :data:`HEADLINE` metric per user, so two models can be compared user by user."""
    users, bounds, target_items = _targets(data, fold)
    picked = np.arange(len(users))
    if max_users is not None and len(users) > max_users:
        picked = np.sort(np.random.default_rng(seed).choice(len(users), max_users, replace=False))
    allowed = np.zeros(data.n_items, bool)
    if fold.catalog is None:
        allowed[:] = True
    else:
        idx = data.ids.item_index(np.asarray(fold.catalog))
        allowed[idx[idx >= 0]] = True
    n_allowed = int(allowed.sum())
    k_max = min(max(RECALL_KS), n_allowed)
    cold = data.item_counts(positive_only=False) == 0
    blocked = torch.from_numpy(~allowed)
    discounts = 1.0 / np.log2(np.arange(2, k_max + 2))

    sums = dict.fromkeys(METRICS, 0.0)
    n_cold_users = 0
    covered = np.zeros(data.n_items, bool)
    each = {m: np.zeros(len(picked)) for m in HEADLINE}
    for s in range(0, len(picked), batch_size):
        chunk = picked[s : s + batch_size]
        u = users[chunk]
        raw = score(u)
        if isinstance(raw, torch.Tensor):
            scores = raw.detach().float().clone()
        else:
            scores = torch.from_numpy(np.array(raw, np.float32))
        scores[:, blocked] = -torch.inf
        rows = np.repeat(np.arange(len(u)), data.indptr[u + 1] - data.indptr[u])
        seen = np.concatenate([data.item[data.indptr[x] : data.indptr[x + 1]] for x in u])
        scores[torch.from_numpy(rows), torch.from_numpy(seen)] = -torch.inf
        top = torch.topk(scores, k_max, dim=1).indices.numpy()
        for row, j in enumerate(chunk):
            targets = target_items[bounds[j] : bounds[j + 1]]
            hit = np.isin(top[row], targets)
            cum = np.cumsum(hit)
            n = len(targets)
            user: dict[str, float] = {}
            for k in RECALL_KS:
                user[f"recall@{k}"] = cum[min(k, k_max) - 1] / n
            for k in NDCG_KS:
                kk = min(k, k_max)
                ideal = discounts[: min(n, kk)].sum()
                user[f"ndcg@{k}"] = (hit[:kk] * discounts[:kk]).sum() / ideal
            for m, v in user.items():
                sums[m] += v
            for m in HEADLINE:
                each[m][s + row] = user[m]
            sums[f"hit@{HIT_K}"] += float(cum[min(HIT_K, k_max) - 1] > 0)
            covered[top[row, : min(COVERAGE_K, k_max)]] = True
            cold_targets = targets[cold[targets]]
            if len(cold_targets):
                n_cold_users += 1
                cold_hit = np.cumsum(np.isin(top[row], cold_targets))
                for k in COLD_KS:
                    sums[f"cold_recall@{k}"] += cold_hit[min(k, k_max) - 1] / len(cold_targets)
    n_users = max(len(picked), 1)
    out = {m: v / n_users for m, v in sums.items() if not m.startswith("cold_")}
    out[f"coverage@{COVERAGE_K}"] = float(covered[allowed].sum() / max(n_allowed, 1))
    if n_cold_users:
        out.update({f"cold_recall@{k}": sums[f"cold_recall@{k}"] / n_cold_users for k in COLD_KS})
    out["users"] = float(len(picked))
    if per_user is not None:
        per_user.update(user=users[picked], **each)
    return out
