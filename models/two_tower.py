"""The two-tower retrieval model: a user tower and an item tower meeting in one vector space.

Both towers end L2-normalised, so a dot product is a cosine and the item vectors can go
straight into a FAISS inner-product index. The item tower reads the item's content and
features beside its id, so a video nobody has watched yet still lands near similar videos.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.content import ContentProjection
from models.embeddings import IdEmbedding, masked_mean, mlp


@dataclass
class TwoTowerConfig:
    """Shapes and switches of the towers (``content_dim`` / ``user_feature_dim`` 0: absent)."""

    dim: int = 64
    hidden: int = 256
    item_oov_buckets: int = 512
    user_oov_buckets: int = 512
    author_buckets: int = 4096
    tag_buckets: int = 2048
    item_numeric_dim: int = 3  # log duration, log age, log recent positives (feature code)
    content_dim: int = 0
    user_feature_dim: int = 0
    item_features: bool = True  # author, tags, numeric, content; False: id only
    # The user-id embedding overfits when users have few interactions (validation preferred it
    # off on KuaiRand and MicroLens); tuning still tries it, and long-lived users may want it.
    user_id: bool = False
    recent: int = 5  # the last N history items get a pool of their own
    id_dropout: float = 0.1
    dropout: float = 0.0
    # Spread of the initial id vectors: too small and every tower output starts out the same
    # direction (the MLP biases dominate), so the in-batch loss sits at log(batch) for epochs.
    embedding_std: float = 0.05
    # Skip connections around the MLP heads (item: its id vector; user: the mean of the
    # history's id vectors), so from the first step a score is also an item-item similarity
    # in the shared id space, which co-occurrence shapes quickly, instead of waiting for two
    # MLPs to break their symmetric start.
    residual: bool = True
    # "pooled": four masked means of the history; "sequential": self-attention over it with
    # action-type and time-gap embeddings (SASRec-style), read out by a query token.
    user_tower: str = "pooled"
    seq_layers: int = 1
    seq_heads: int = 2
    # The sequential tower attends over the last ``seq_window`` history items (SASRec's usual
    # 50); the history mean beside it reads all of ``history_len``. A cost cap, not a tuned
    # value: over 100 items a KuaiRand epoch took 220 s, about 30 minutes a fit.
    seq_window: int = 50
    # Content on both sides of the score (items with content only): an item's projected
    # content is added to its output, and the mean projected content of a user's history is
    # an input of the user head and added to its output. A score then starts out as a content
    # similarity, which places an item nobody has watched; without it a held-out item is only
    # as close to a user as the item head maps its content into the id space. On MicroLens'
    # cold-item validation (4k users, 2 seeds) it lifted Recall@50 from 0.205 to 0.257
    # (content-kNN: 0.224); tuning chooses it per data set.
    content_residual: bool = False
    # Rows for item ids unseen in training (and ids hidden by ``id_dropout``): hashed OOV
    # buckets, or none, so that such an item embeds its id as zeros and is its features alone.
    # A bucket row is learned from whichever dropped-out items hash there, which to a held-out
    # item is noise: on the synthetic world's cold items, zeroing the buckets after training
    # lifted validation Recall@20 from 0.51-0.71 to 0.67-0.78 (3 settings x 3 seeds).
    item_oov: bool = True


@dataclass
class ItemInputs:
    """One batch of items. Ids are raw (the model maps them); -1 marks padding / missing."""

    item_id: Tensor  # int64 [B]
    author_id: Tensor  # int64 [B]
    tags: Tensor  # int64 [B, T] hashed tag ids
    numeric: Tensor  # float [B, item_numeric_dim]
    content: Tensor | None = None  # float [B, content_dim]; all zeros = no content


@dataclass
class UserInputs:
    """One batch of users with their recent history, oldest left, newest right, -1 padded."""

    user_id: Tensor  # int64 [B]
    history: Tensor  # int64 [B, L] raw item ids
    long: Tensor  # bool [B, L] long-watched
    liked: Tensor  # bool [B, L]
    features: Tensor | None = None  # float [B, user_feature_dim]
    # int64 [B, L]: log2-hours bucket (1..GAP_BUCKETS-1) from each history item to the query
    # time; 0 when unknown (untimed history, padding). None: all unknown.
    gap: Tensor | None = None


GAP_BUCKETS = 18


def _head(width: int, cfg: TwoTowerConfig) -> nn.Sequential:
    """The tower's MLP; with ``residual`` its last layer starts at a tenth of its usual scale,
    so training starts near the plain id-space similarity and the MLP learns what to add to
    it (never exactly zero: every input, content included, moves the output from the start,
    and a user with no history and no features still gets a unit vector)."""
    head = mlp([width, cfg.hidden, cfg.dim], cfg.dropout)
    if cfg.residual:
        last = head[-1]
        assert isinstance(last, nn.Linear)
        with torch.no_grad():
            last.weight.mul_(0.1)
    return head


def _content_residual(cfg: TwoTowerConfig) -> bool:
    return cfg.content_residual and cfg.item_features and cfg.content_dim > 0


class ItemTower(nn.Module):
    def __init__(self, cfg: TwoTowerConfig, item_ids: Tensor) -> None:
        super().__init__()
        self.cfg = cfg
        self.ids = IdEmbedding(item_ids, cfg.dim, cfg.item_oov_buckets if cfg.item_oov else 0,
                               cfg.embedding_std)
        width = cfg.dim
        if cfg.item_features:
            self.author = IdEmbedding([], cfg.dim, cfg.author_buckets)
            self.tags = IdEmbedding([], cfg.dim, cfg.tag_buckets)
            self.numeric = nn.Linear(cfg.item_numeric_dim, cfg.dim)
            width += 3 * cfg.dim
            if cfg.content_dim:
                self.content = ContentProjection(cfg.content_dim, cfg.dim)
                width += cfg.dim
        self.head = _head(width, cfg)

    def forward(self, x: ItemInputs) -> Tensor:
        own = self.ids(x.item_id, self.cfg.id_dropout)
        parts, residual = [own], own
        if self.cfg.item_features:
            parts += [
                self.author(x.author_id),
                masked_mean(self.tags(x.tags), x.tags >= 0),
                self.numeric(x.numeric),
            ]
            if self.cfg.content_dim:
                if x.content is None:
                    raise ValueError("this item tower needs content embeddings")
                parts.append(self.content(x.content))
                if _content_residual(self.cfg):
                    residual = own + parts[-1]
        out = self.head(torch.cat(parts, -1))
        return F.normalize(out + residual if self.cfg.residual else out, dim=-1)


class HistoryContent(nn.Module):
    """The mean projected content of a user's history (``content_residual``): the item
    tower's projection over a frozen table of the known items' content embeddings, by the
    item id embedding's rows (unknown ids and padding have none)."""

    def __init__(self, item_embedding: IdEmbedding, projection: ContentProjection,
                 content_dim: int) -> None:
        super().__init__()
        self.items, self.projection = item_embedding, projection
        self.register_buffer("rows", torch.zeros(item_embedding.table.num_embeddings,
                                                 content_dim))

    def fill(self, item_ids: Tensor, content: Tensor) -> None:
        with torch.no_grad():
            self.rows[self.items.index(item_ids)] = content.to(self.rows.dtype)

    def forward(self, history: Tensor, valid: Tensor) -> Tensor:
        return masked_mean(self.projection(self.rows[self.items.index(history)]), valid)


class _UserTowerBase(nn.Module):
    """What both user towers add to their summary of the history: the history's content, the
    user id and features, the MLP head over all of it, and the residual around the head."""

    def __init__(self, cfg: TwoTowerConfig, user_ids: Tensor, item_embedding: IdEmbedding,
                 history_content: HistoryContent | None, summary_width: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.items = item_embedding
        self.history_content = history_content
        width = summary_width + (cfg.dim if history_content is not None else 0)
        if cfg.user_id:
            self.ids = IdEmbedding(user_ids, cfg.dim, cfg.user_oov_buckets)
            width += cfg.dim
        if cfg.user_feature_dim:
            self.features = nn.Linear(cfg.user_feature_dim, cfg.dim)
            width += cfg.dim
        self.head = _head(width, cfg)

    def _finish(self, x: UserInputs, valid: Tensor, parts: list[Tensor], residual: Tensor
                ) -> Tensor:
        """The unit user vector from ``parts`` (the history summary) and ``residual``."""
        if self.history_content is not None:
            parts.append(self.history_content(x.history, valid))
            residual = residual + parts[-1]
        if self.cfg.user_id:
            parts.append(self.ids(x.user_id, self.cfg.id_dropout))
        if self.cfg.user_feature_dim:
            if x.features is None:
                raise ValueError("this user tower needs user features")
            parts.append(self.features(x.features))
        out = self.head(torch.cat(parts, -1))
        return F.normalize(out + residual if self.cfg.residual else out, dim=-1)


class UserTower(_UserTowerBase):
    """Pools the history four ways (all, long-watched, liked, most recent) beside the user id
    and features; the history items share the item tower's id embedding, so what the model
    learns about an item as a target also describes users who watched it."""

    def __init__(self, cfg: TwoTowerConfig, user_ids: Tensor, item_embedding: IdEmbedding,
                 history_content: HistoryContent | None = None):
        super().__init__(cfg, user_ids, item_embedding, history_content, 4 * cfg.dim)

    def forward(self, x: UserInputs) -> Tensor:
        valid = x.history >= 0
        recent = torch.zeros_like(valid)
        recent[:, -self.cfg.recent :] = True
        masks = torch.stack([valid, valid & x.long, valid & x.liked, valid & recent], 1).float()
        weights = masks / masks.sum(-1, keepdim=True).clamp(min=1.0)  # [B, 4, L]: four means
        pooled = torch.bmm(weights, self.items(x.history))  # one batched matmul for all pools
        return self._finish(x, valid, list(pooled.unbind(1)), pooled[:, 0])


def query_output(layer: nn.TransformerEncoderLayer, x: Tensor, pad: Tensor) -> Tensor:
    """``layer(x, src_key_padding_mask=pad)[:, -1]`` for a pre-norm layer, computed for the
    last position only: the tower reads nothing else, and skipping the other positions' queries,
    attention rows and feed-forward makes the last layer about six times cheaper to train
    (history 100: a full layer held KuaiRand training to 1,600 examples/s)."""
    h = layer.norm1(x)
    attended = layer.self_attn(h[:, -1:], h, h, key_padding_mask=pad, need_weights=False)[0]
    y = x[:, -1] + layer.dropout1(attended[:, 0])
    hidden = layer.dropout(layer.activation(layer.linear1(layer.norm2(y))))
    return y + layer.dropout2(layer.linear2(hidden))


class SequentialUserTower(_UserTowerBase):
    """Self-attention over the history: each position is the item's id vector (shared with
    the item tower) plus embeddings of its action type (plain, long view, like, both), of
    its time gap to the query and of its position; a learned query token appended last
    attends over all of it and its output is the user's vector (plus the history mean, so the
    id-space similarity path stays as in the pooled tower)."""

    def __init__(self, cfg: TwoTowerConfig, user_ids: Tensor, item_embedding: IdEmbedding,
                 history_content: HistoryContent | None = None, max_len: int = 512):
        super().__init__(cfg, user_ids, item_embedding, history_content, cfg.dim)
        self.action = nn.Embedding(4, cfg.dim)
        self.gap = nn.Embedding(GAP_BUCKETS, cfg.dim)
        self.position = nn.Embedding(max_len + 1, cfg.dim)
        self.query = nn.Parameter(torch.zeros(cfg.dim))
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(cfg.dim, cfg.seq_heads, cfg.hidden, cfg.dropout,
                                       batch_first=True, norm_first=True)
            for _ in range(cfg.seq_layers))

    def forward(self, x: UserInputs) -> Tensor:
        valid = x.history >= 0
        items = self.items(x.history)
        w = slice(-self.cfg.seq_window, None)  # the attention's window: the latest items
        seen = valid[:, w]
        b, length = seen.shape
        action = x.long[:, w].long() + 2 * x.liked[:, w].long()
        gap = x.gap[:, w] if x.gap is not None else torch.zeros_like(seen, dtype=torch.long)
        start = self.position.num_embeddings - 1 - length  # right-aligned positions
        pos = torch.arange(start, start + length + 1, device=items.device)
        seq = items[:, w] + (self.action(action) + self.gap(gap)) * seen.unsqueeze(-1)
        seq = torch.cat([seq, self.query.expand(b, 1, -1)], 1) + self.position(pos)
        pad = torch.cat([~seen, seen.new_zeros(b, 1)], 1)  # the query token is never padding
        for layer in self.layers[:-1]:
            seq = layer(seq, src_key_padding_mask=pad)
        return self._finish(x, valid, [query_output(self.layers[-1], seq, pad)],
                            masked_mean(items, valid))


class TwoTower(nn.Module):
    """``user(x) @ item(y).T`` is the retrieval score; training adds temperature and log-Q."""

    def __init__(self, cfg: TwoTowerConfig, user_ids: Tensor, item_ids: Tensor,
                 item_content: Tensor | None = None) -> None:
        """``item_content``: the content embeddings of ``item_ids``, row for row (what the
        user tower's history reads with ``content_residual``; a loaded state brings its own)."""
        super().__init__()
        self.cfg = cfg
        self.item = ItemTower(cfg, item_ids)
        if cfg.user_tower not in ("pooled", "sequential"):
            raise ValueError(f"unknown user tower {cfg.user_tower!r} (use pooled|sequential)")
        history = None
        if _content_residual(cfg):
            history = HistoryContent(self.item.ids, self.item.content, cfg.content_dim)
            if item_content is not None:
                history.fill(item_ids, item_content)
        tower = SequentialUserTower if cfg.user_tower == "sequential" else UserTower
        self.user: UserTower | SequentialUserTower = tower(cfg, user_ids, self.item.ids,
                                                           history)

    def forward(self, users: UserInputs, items: ItemInputs) -> Tensor:
        return self.user(users) @ self.item(items).T
