"""The multi-task ranker: one network, one probability per engagement task, one final score.

Inputs are already encoded (by ``training.ranker.featurizer``): categorical fields as vocabulary
indices (0 = unknown) and numeric features standardised. Every field's embedding and the
numeric vector are concatenated, crossed explicitly by DCN-v2 layers (x_{l+1} = x0 * (W x_l + b)
+ x_l, which learns feature crosses a plain MLP needs many units for), and fed to a multi-gate
mixture of experts: each task mixes the shared experts with its own softmax gate, so rare tasks
(follow, share) borrow the representation the frequent ones (click, long view) learn without
being forced to share all of it. One expert is the classic shared bottom.

Binary tasks output a logit; "ratio" tasks (expected watch ratio) output a logit whose sigmoid,
times ``ratio_cap``, is the prediction (trained with soft-label cross-entropy on target / cap,
which makes the prediction the conditional mean). The final score is the weighted sum of the
task predictions (``score_weights``; negative for hate/skip).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

DEFAULT_WEIGHTS: dict[str, float] = {
    "click": 1.0,
    "long_view": 1.0,
    "like": 2.0,
    "follow": 4.0,
    "share": 3.0,
    "watch_ratio": 0.5,
    "hate": -5.0,
}

ATTENTION = ("din", "bilinear")
PRECISIONS = ("auto", "float32", "bfloat16")


def inference_dtype(precision: str = "auto") -> torch.dtype:
    """The dtype a network is served in. ``auto``: bfloat16 where the CPU multiplies it
    natively (AVX-512 BF16 or AMX, through oneDNN: 500 candidates scored in 4.2 ms instead of
    5.7 at one thread, validation GAUC unchanged, ``benchmarks/results/ranker.md``), float32
    elsewhere (emulated bfloat16 is slower)."""
    if precision not in PRECISIONS:
        raise ValueError(f"ranker precision {precision!r} (use {'|'.join(PRECISIONS)})")
    if precision != "auto":
        return getattr(torch, precision)
    try:
        native = (torch.backends.mkldnn.is_available()
                  and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a private probe: absent means "not known to work"
        native = False
    return torch.bfloat16 if native else torch.float32


@dataclass
class RankerConfig:
    """Shapes of the network and the weights of the final score."""

    tasks: tuple[str, ...] = ("click", "long_view", "like", "follow", "share", "hate")
    ratio_tasks: tuple[str, ...] = ()  # tasks predicting a mean in [0, ratio_cap], not a P()
    cardinalities: tuple[int, ...] = ()  # per categorical field, index 0 = unknown
    n_numeric: int = 0
    emb_dim: int = 16
    cross_layers: int = 2
    n_experts: int = 3  # 1 = shared bottom
    expert_hidden: tuple[int, ...] = (128, 64)
    tower_hidden: tuple[int, ...] = (32,)
    dropout: float = 0.1
    # Target attention (DIN) over the user's watch history: 0 = off; else the history length
    # and the categorical fields (by position) that describe a video, candidate and history.
    history_len: int = 0
    history_fields: tuple[int, ...] = ()
    # "din": DIN's MLP over (candidate, watched, difference, product), [B, L, 4D] x [4D, H]
    # per request; "bilinear": candidate^T W watched, [B, D] x [D, D] then one dot per entry.
    # On KuaiRand's validation day (3 seeds) they tie (click / long-view GAUC 0.6441 / 0.6459
    # bilinear, 0.6443 / 0.6474 DIN) and DIN's MLP tripled the 500-candidate scoring time
    # (5.5 -> 18 ms at one thread): bilinear is the default.
    attention: str = "bilinear"
    attention_hidden: int = 32
    ratio_cap: float = 2.0
    score_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))

    def __post_init__(self) -> None:
        self.tasks, self.ratio_tasks = tuple(self.tasks), tuple(self.ratio_tasks)
        self.cardinalities = tuple(int(c) for c in self.cardinalities)
        self.history_fields = tuple(int(f) for f in self.history_fields)
        if self.history_len and not self.history_fields:
            raise ValueError("ranker: a history needs history_fields")
        if self.attention not in ATTENTION:
            raise ValueError(f"ranker: attention {self.attention!r} (use {'|'.join(ATTENTION)})")
        self.expert_hidden, self.tower_hidden = tuple(self.expert_hidden), tuple(self.tower_hidden)
        if not self.tasks:
            raise ValueError("ranker: at least one task")
        if unknown := set(self.ratio_tasks) - set(self.tasks):
            raise ValueError(f"ranker: ratio tasks {sorted(unknown)} are not tasks")
        if self.n_experts < 1 or not self.expert_hidden:
            raise ValueError("ranker: n_experts >= 1 and a non-empty expert_hidden")

    @property
    def input_dim(self) -> int:
        pooled = len(self.history_fields) * self.emb_dim if self.history_len else 0
        return len(self.cardinalities) * self.emb_dim + self.n_numeric + pooled


class CrossLayer(nn.Module):
    """DCN-v2 full-rank cross: ``x0 * (W x + b) + x``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, dim)
        nn.init.zeros_(self.linear.bias)
        nn.init.normal_(self.linear.weight, std=dim**-0.5 * 0.1)

    def forward(self, x0: Tensor, x: Tensor) -> Tensor:
        return x0 * self.linear(x) + x


class GroupedMLP(nn.Module):
    """``G`` independent MLPs applied in one batched matmul per layer: [B, G, in] -> [B, G, out].

    The experts (every group sees the same input) and the task towers (group t sees task t's
    mixture) are many small MLPs; batching them keeps a 500-candidate forward pass in a few
    milliseconds instead of paying a dozen small matmuls' overhead.
    """

    def __init__(self, groups: int, sizes: tuple[int, ...], dropout: float = 0.0,
                 last_relu: bool = False) -> None:
        super().__init__()
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for a, b in zip(sizes[:-1], sizes[1:], strict=True):
            bound = a**-0.5  # nn.Linear's default init, per group
            self.weights.append(nn.Parameter(torch.empty(groups, a, b).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(groups, b).uniform_(-bound, bound)))
        self.dropout = nn.Dropout(dropout)
        self.last_relu = last_relu

    def forward(self, x: Tensor) -> Tensor:
        n = len(self.weights)
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = torch.einsum("bgi,gio->bgo", x, w) + b
            if i < n - 1 or self.last_relu:
                x = self.dropout(torch.relu(x))
        return x


class TargetAttention(nn.Module):
    """Target attention (DIN, Zhou et al., KDD 2018): each watched video is weighted by its
    relevance to *this* candidate and the weighted sum is the user's interest in it. DIN's
    activation unit scores with an MLP of (candidate, watched, their difference and product);
    the bilinear form ``candidate^T W watched`` costs one [D, D] product per row instead of an
    MLP per (row, watched video). Weights are softmax-normalised over the non-padding entries;
    an empty history pools to zeros."""

    def __init__(self, dim: int, hidden: int, kind: str = "din") -> None:
        super().__init__()
        self.kind = kind
        if kind == "din":
            self.mlp = nn.Sequential(nn.Linear(4 * dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        else:
            self.proj = nn.Linear(dim, dim, bias=False)
            self.scale = dim**-0.5

    def forward(self, query: Tensor, keys: Tensor, mask: Tensor) -> Tensor:
        """``query`` [B, D]; ``keys`` [B, L, D] and ``mask`` [B, L], or [1, L, D] and [1, L]
        when every row has the same history (one request: scored without copying it B times).
        """
        shared = len(keys) == 1 and len(query) > 1
        if self.kind == "din":
            keys, mask = keys.expand(len(query), -1, -1), mask.expand(len(query), -1)
            q = query.unsqueeze(1).expand_as(keys)  # [B, L, D]
            scores = self.mlp(torch.cat([q, keys, q - keys, q * keys], -1)).squeeze(-1)
        elif shared:
            scores = self.proj(query) @ keys[0].T * self.scale  # [B, L]
        else:
            scores = (keys @ self.proj(query).unsqueeze(-1)).squeeze(-1) * self.scale
        scores = scores.masked_fill(~mask, -1e9)
        weights = scores.softmax(-1) * mask  # all-padding rows -> all zeros
        if shared and self.kind != "din":
            return weights @ keys[0]
        return (weights.unsqueeze(-1) * keys).sum(1)


class Ranker(nn.Module):
    """``forward(categorical, numeric) -> logits [B, tasks]``; ``predict`` -> predictions."""

    def __init__(self, cfg: RankerConfig) -> None:
        super().__init__()
        if not cfg.input_dim:
            raise ValueError("ranker: no input features (cardinalities / n_numeric)")
        self.cfg = cfg
        cards = torch.tensor((0, *cfg.cardinalities), dtype=torch.int64)
        self.register_buffer("offsets", cards.cumsum(0)[:-1], persistent=False)
        self.embedding = nn.Embedding(max(int(cards.sum()), 1), cfg.emb_dim)
        nn.init.normal_(self.embedding.weight, std=0.05)
        dim = cfg.input_dim
        self.attention = (TargetAttention(len(cfg.history_fields) * cfg.emb_dim,
                                          cfg.attention_hidden, cfg.attention)
                          if cfg.history_len else None)
        self.crosses = nn.ModuleList(CrossLayer(dim) for _ in range(cfg.cross_layers))
        hidden, n_tasks = cfg.expert_hidden, len(cfg.tasks)
        self.experts = GroupedMLP(cfg.n_experts, (dim, *hidden), cfg.dropout, last_relu=True)
        self.gates = nn.Linear(dim, n_tasks * cfg.n_experts) if cfg.n_experts > 1 else None
        self.towers = GroupedMLP(n_tasks, (hidden[-1], *cfg.tower_hidden, 1))
        ratio = torch.tensor([t in cfg.ratio_tasks for t in cfg.tasks])
        self.register_buffer("is_ratio", ratio, persistent=False)
        weights = torch.tensor([cfg.score_weights.get(t, 0.0) for t in cfg.tasks])
        self.register_buffer("weights", weights, persistent=False)

    def _pooled_history(self, fields: Tensor, history: Tensor | None) -> Tensor:
        """[B, F * emb] attention-pooled history (``history`` [B, L, F], -1 padding)."""
        idx = list(self.cfg.history_fields)
        query = fields[:, idx].flatten(1)
        if history is None or not bool((history[..., 0] >= 0).any()):
            return torch.zeros_like(query)  # what an all-padding history pools to
        history = history[:, : self.cfg.history_len]
        if len(history) > 1 and bool((history == history[:1]).all()):
            history = history[:1]  # one user's request: one history for every candidate
        mask = history[..., 0] >= 0
        keys = self.embedding(history.clamp(min=0) + self.offsets[idx]).flatten(2)
        return self.attention(query, keys, mask)

    def forward(self, categorical: Tensor, numeric: Tensor,
                history: Tensor | None = None) -> Tensor:
        """Logits [B, tasks]; ``history`` [B, L, fields] (-1 padding) when the config has one."""
        parts = []
        if self.cfg.cardinalities:
            fields = self.embedding(categorical + self.offsets)  # [B, F, emb]
            parts.append(fields.flatten(1))
            if self.attention is not None:
                parts.append(self._pooled_history(fields, history))
        if self.cfg.n_numeric:
            parts.append(numeric.to(self.embedding.weight.dtype))  # a bfloat16 copy: cast
        x0 = torch.cat(parts, 1)
        x = x0
        for cross in self.crosses:
            x = cross(x0, x)
        n, n_tasks = len(x), len(self.cfg.tasks)
        experts = self.experts(x.unsqueeze(1).expand(-1, self.cfg.n_experts, -1))  # [B, E, H]
        if self.gates is None:
            mixed = experts.expand(-1, n_tasks, -1)  # [B, T, H]
        else:
            # [B, E, T], softmax over experts (dim 1: much faster than over a last dim of 3)
            gates = self.gates(x).view(n, -1, n_tasks).softmax(1)
            mixed = gates.transpose(1, 2) @ experts
        return self.towers(mixed).squeeze(-1)  # [B, T]

    def to_predictions(self, logits: Tensor) -> Tensor:
        """Probabilities for binary tasks, means in [0, ratio_cap] for ratio tasks (float32
        whatever the network's precision: a bfloat16 probability has 2-3 significant digits)."""
        p = torch.sigmoid(logits.float())
        return torch.where(self.is_ratio, p * self.cfg.ratio_cap, p)

    def score(self, predictions: Tensor) -> Tensor:
        """The final ranking score: the weighted sum of the task predictions."""
        return predictions @ self.weights.to(predictions.dtype)

    @torch.inference_mode()
    def predict(self, categorical: Tensor, numeric: Tensor,
                history: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(score [B], predictions [B, tasks])`` in eval mode."""
        was = self.training
        if was:  # a served model is in eval mode already: no module walk per call (~0.5 ms)
            self.eval()
        preds = self.to_predictions(self(categorical, numeric, history))
        if was:
            self.train()
        return self.score(preds), preds
