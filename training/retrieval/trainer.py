"""Two-tower training: in-batch sampled softmax with log-Q correction, early stopping.

Each example is one positive (user, item) of a training timeline, with the user's history
*before* it as context, so the model learns to predict what comes next rather than to copy
an item out of its own input. The other targets of the batch are the negatives; since popular
items are in-batch negatives more often, their logits get ``log(B * q_item)`` subtracted
(Yi et al., RecSys 2019), and ``random_negatives`` uniform items (corrected by ``log(M / N)``)
can be mixed in to also push down the tail the batch rarely contains.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from models.two_tower import TwoTower, TwoTowerConfig
from training.retrieval.data import Fold
from training.retrieval.inputs import ItemTable, TrainData
from training.retrieval.metrics import evaluate

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Optimisation settings; ``epochs`` is the maximum when a validation fold is given."""

    epochs: int = 20
    batch_size: int = 1024
    lr: float = 2e-3
    embedding_lr_scale: float = 10.0  # chosen on validation of the synthetic world and MicroLens
    temperature: float = 0.05
    logq: float = 1.0  # weight of the log-Q correction (0: plain in-batch softmax)
    random_negatives: int = 0
    strong_targets: bool = False  # train only on long-viewed / liked positives (KuaiRand)
    log_repeat: int = 1  # examples from the timed log (not untimed history) per epoch
    history_len: int = 50
    patience: int = 2
    metric: str = "recall@50"
    valid_users: int | None = 10_000  # validation users sampled per epoch (speed)
    seed: int = 0
    threads: int | None = None
    progress: bool = True


@dataclass
class TrainResult:
    model: TwoTower
    best_epoch: int
    best_metric: float | None
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    examples_per_s: float = 0.0
    epoch_seconds: float = 0.0


def build_model(data: TrainData, cfg: TwoTowerConfig) -> TwoTower:
    """A model whose id vocabularies are what this fold trains on: any other id is OOV."""
    users = np.repeat(np.arange(data.n_users), np.diff(data.indptr))
    content = data.items.content
    feats = data.ids.user_features
    cfg = replace(
        cfg,
        content_dim=content.shape[1] if content is not None and cfg.item_features else 0,
        user_feature_dim=feats.shape[1] if feats is not None else 0,
    )
    trained = np.unique(data.item)
    return TwoTower(
        cfg,
        user_ids=torch.from_numpy(data.ids.user_ids[np.unique(users)]),
        item_ids=torch.from_numpy(data.ids.item_ids[trained]),
        item_content=None if content is None else torch.from_numpy(
            np.asarray(content[trained], np.float32)),
    )


@torch.no_grad()
def item_embeddings(model: TwoTower, items: ItemTable, batch_size: int = 8192) -> torch.Tensor:
    model.eval()
    return torch.cat([
        model.item(items.inputs(slice(s, s + batch_size)))
        for s in range(0, len(items), batch_size)
    ])


@torch.no_grad()
def user_embeddings(model: TwoTower, data: TrainData, users: np.ndarray, history_len: int,
                    batch_size: int = 8192) -> torch.Tensor:
    model.eval()
    return torch.cat([
        model.user(data.user_inputs(users[s : s + batch_size], history_len))
        for s in range(0, len(users), batch_size)
    ]) if len(users) else torch.zeros(0, model.cfg.dim)


def scorer(model: TwoTower, data: TrainData,
           history_len: int) -> Callable[[np.ndarray], torch.Tensor]:
    """Scores of users against every catalog item (item vectors computed once)."""
    items = item_embeddings(model, data.items)
    return lambda users: user_embeddings(model, data, users, history_len) @ items.T


def optimizer(model: TwoTower, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam; the id tables learn at ``embedding_lr_scale`` x the rate: each row gets a
    gradient only in the few batches that contain its id, so at the MLPs' rate it barely
    moves in a short run."""
    tables = [p for n, p in model.named_parameters() if n.endswith("table.weight")]
    rest = [p for n, p in model.named_parameters() if not n.endswith("table.weight")]
    return torch.optim.Adam([{"params": rest},
                             {"params": tables, "lr": cfg.lr * cfg.embedding_lr_scale}],
                            lr=cfg.lr, fused=True)


def train(
    data: TrainData,
    model_cfg: TwoTowerConfig,
    cfg: TrainConfig,
    valid: Fold | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train for ``cfg.epochs`` (stopping early on ``valid``'s ``cfg.metric`` when given)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = build_model(data, model_cfg)
    opt = optimizer(model, cfg)

    keep = data.positive & (data.long | data.liked) if cfg.strong_targets else data.positive
    targets = np.flatnonzero(keep)
    if not len(targets):
        raise ValueError("no (strong) positive interactions to train on")
    example_user = np.repeat(np.arange(data.n_users), np.diff(data.indptr))[targets]
    # Recent behaviour can be weighted up against a long untimed pre-period history.
    order = np.repeat(np.arange(len(targets)),
                      np.where(np.isnan(data.ts[targets]), 1, max(cfg.log_repeat, 1)))
    counts = np.bincount(data.item[targets], minlength=data.n_items)
    log_q = torch.from_numpy(np.log(np.maximum(counts, 1) / len(targets))).float()
    known = np.unique(data.item)
    B, M = cfg.batch_size, cfg.random_negatives

    best = TrainResult(model=model, best_epoch=0, best_metric=None)
    best_state = copy.deepcopy(model.state_dict())
    started, train_seconds, stale = time.perf_counter(), 0.0, 0
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        t0, total = time.perf_counter(), 0.0
        perm = rng.permutation(order)
        steps = range(0, len(perm), B)
        for s in tqdm(steps, desc=f"epoch {epoch}", disable=not cfg.progress, leave=False):
            batch = perm[s : s + B]
            pos, users = targets[batch], example_user[batch]
            items = data.item[pos]
            neg = known[rng.integers(0, len(known), M)] if M else items[:0]
            all_items = np.concatenate([items, neg])
            u = model.user(data.context(users, pos, cfg.history_len))
            v = model.item(data.items.inputs(all_items))
            logits = (u @ v.T) / cfg.temperature
            if cfg.logq:
                correction = torch.cat([
                    log_q[items] + np.log(len(items)),
                    torch.full((len(neg),), float(np.log(max(M, 1) / len(known)))),
                ])
                logits = logits - cfg.logq * correction
            same = torch.from_numpy(items[:, None] == all_items[None, :])
            same[torch.arange(len(items)), torch.arange(len(items))] = False
            loss = F.cross_entropy(logits.masked_fill(same, -1e9), torch.arange(len(items)))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(items)
        seconds = time.perf_counter() - t0
        train_seconds += seconds
        row = {"loss": total / len(order), "epoch_seconds": seconds,
               "examples_per_s": len(order) / seconds}
        if valid is not None:
            metrics = evaluate(scorer(model, data, cfg.history_len), data, valid,
                               max_users=cfg.valid_users, seed=cfg.seed)
            row.update({f"valid_{k}": v for k, v in metrics.items() if k != "users"})
        best.history.append(row)
        if on_epoch:
            on_epoch(epoch, row)
        log.info("epoch %d: %s", epoch, ", ".join(f"{k} {v:.4g}" for k, v in row.items()))
        if valid is None:
            best.best_epoch, best_state = epoch, None
            continue
        value = row[f"valid_{cfg.metric}"]
        if best.best_metric is None or value > best.best_metric:
            best.best_metric, best.best_epoch, stale = value, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    best.seconds = time.perf_counter() - started
    best.epoch_seconds = train_seconds / len(best.history)
    best.examples_per_s = len(order) * len(best.history) / max(train_seconds, 1e-9)
    return best
