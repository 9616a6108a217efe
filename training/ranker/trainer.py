"""Training the ranker: masked multi-task cross-entropy, Adam, early stopping on validation.

Every task's loss is a binary cross-entropy on its logit (ratio tasks on ``min(y, cap) / cap``
as a soft label), averaged over the rows whose label is known and summed over tasks with
``loss_weights``. The validation loss (weighted alike) picks the epoch count; ``fit`` with
``epochs`` fixed and no validation is the refit on all training data that the pipeline does
afterwards.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from models.ranker import Ranker, RankerConfig
from training.ranker.data import Encoded

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    epochs: int = 12
    batch_size: int = 1024
    lr: float = 2e-3
    weight_decay: float = 1e-5
    # Evaluate and keep an exponential moving average of the weights (0: off; see EMA). On
    # KuaiRand it steadies the refit's calibration, which otherwise swings with the last batches,
    # and the GAUC: validation day, aux weight 0.1, 3 seeds, click / long view 0.6440 / 0.6434
    # with the old warm-up (its decay never passed ~0.94), 0.6525 / 0.6513 with EMA's warm-up
    # at 0.98 (long view's seed spread 0.628-0.654 -> 0.645-0.656); 0.995 and 0.998 tie with it.
    ema: float = 0.98
    patience: int = 2
    # Per-task loss weights (default 1). Adam scales every step by the summed gradient of all
    # tasks, so five auxiliary tasks at full weight can slow click and long view down. 0.3 is
    # only a starting value: ``training.ranker.selection`` picks the auxiliary weight (and the
    # learning rate) by validation GAUC in every pipeline run.
    loss_weights: dict[str, float] = field(default_factory=lambda: dict.fromkeys(
        ("like", "follow", "share", "hate", "watch_ratio"), 0.3))
    seed: int = 0


@dataclass
class TrainResult:
    model: Ranker
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def _targets(model: Ranker, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft targets in [0, 1] and the mask of known labels."""
    known = ~torch.isnan(y)
    y = torch.nan_to_num(y)
    cap = model.cfg.ratio_cap
    y = torch.where(model.is_ratio, y.clamp(0, cap) / cap, y)
    return y, known


def task_losses(model: Ranker, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy per task over its known labels, [tasks]."""
    target, known = _targets(model, y)
    loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none") * known
    return loss.sum(0) / known.sum(0).clamp(min=1)


def inputs(data: Encoded, rows: slice) -> tuple[torch.Tensor, ...]:
    """The network's inputs for ``rows`` of ``data``: categorical, numeric (, history)."""
    return tuple(torch.from_numpy(a[rows]) for a in
                 (data.categorical, data.numeric, data.history) if a is not None)


@torch.no_grad()
def predict(model: Ranker, data: Encoded, batch_size: int = 8192) -> np.ndarray:
    """Task predictions [N, tasks] (probabilities; ratio tasks as means)."""
    model.eval()
    out = [
        model.to_predictions(model(*inputs(data, slice(s, s + batch_size))))
        for s in range(0, len(data), batch_size)
    ]
    return torch.cat(out).numpy() if out else np.zeros((0, len(model.cfg.tasks)), np.float32)


@torch.no_grad()
def valid_loss(model: Ranker, data: Encoded, batch_size: int = 8192) -> np.ndarray:
    model.eval()
    total = np.zeros(len(model.cfg.tasks))
    counts = np.zeros(len(model.cfg.tasks))
    for s in range(0, len(data), batch_size):
        y = torch.from_numpy(data.labels[s : s + batch_size])
        logits = model(*inputs(data, slice(s, s + batch_size)))
        target, known = _targets(model, y)
        loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none") * known
        total += loss.sum(0).numpy()
        counts += known.sum(0).numpy()
    return total / np.maximum(counts, 1)


class EMA:
    """An exponential moving average of a model's weights, with warm-up.

    The decay at step t is ``min(decay, (1 + t) / (2 + t))`` (a plain running mean until it
    reaches ``decay``), so the initial weights (whose rare-task outputs sit near 0.5) weigh
    1 / (t + 2) after t steps instead of biasing the average upwards for hundreds. The warm-up
    used to be ``(1 + t) / (10 + t)``, which reaches 0.98 only after ~440 steps: a KuaiRand
    epoch is ~70 steps and the best epoch 2, so the average covered only the last ~15 steps.
    """

    def __init__(self, model: Ranker, decay: float) -> None:
        self.decay, self.steps = decay, 0
        self.model = copy.deepcopy(model)
        self.model.eval()

    @torch.no_grad()
    def update(self, model: Ranker) -> None:
        d = min(self.decay, (1 + self.steps) / (2 + self.steps))
        self.steps += 1
        for avg, p in zip(self.model.parameters(), model.parameters(), strict=True):
            avg.lerp_(p, 1 - d)


def fit(
    model_cfg: RankerConfig,
    train: Encoded,
    cfg: TrainConfig,
    valid: Encoded | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train for ``cfg.epochs`` (early-stopped on ``valid`` when given; best weights kept)."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    net = Ranker(model_cfg)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ema = EMA(net, cfg.ema) if cfg.ema else None
    model = net if ema is None else ema.model  # what is evaluated and returned
    x = [torch.from_numpy(a) for a in (train.categorical, train.numeric, train.history)
         if a is not None]
    y = torch.from_numpy(train.labels)
    weights = torch.tensor([cfg.loss_weights.get(t, 1.0) for t in model_cfg.tasks])
    started = time.perf_counter()
    history: list[dict[str, float]] = []
    best, best_epoch, best_state, waited = np.inf, cfg.epochs, None, 0
    for epoch in range(1, cfg.epochs + 1):
        net.train()
        order = torch.from_numpy(rng.permutation(len(train)))
        total = 0.0
        for s in range(0, len(order), cfg.batch_size):
            idx = order[s : s + cfg.batch_size]
            loss = task_losses(net, net(*(a[idx] for a in x)), y[idx]) @ weights
            opt.zero_grad()
            loss.backward()
            opt.step()
            if ema is not None:
                ema.update(net)
            total += loss.item() * len(idx)
        row = {"train_loss": total / max(len(train), 1)}
        if valid is not None and len(valid):
            losses = valid_loss(model, valid)
            row["valid_loss"] = float(losses @ weights.numpy())
            row |= {f"valid_loss_{t}": float(v)
                    for t, v in zip(model_cfg.tasks, losses, strict=True)}
        history.append(row)
        if on_epoch:  # the caller reports the epoch (the CLI prints it): not twice
            on_epoch(epoch, row)
        else:
            log.info("epoch %d: %s", epoch, {k: round(v, 5) for k, v in row.items()})
        if "valid_loss" not in row:
            continue
        if row["valid_loss"] < best - 1e-5:
            best, best_epoch, waited = row["valid_loss"], epoch, 0
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        else:
            waited += 1
            if waited >= cfg.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return TrainResult(model, best_epoch, history, time.perf_counter() - started)
