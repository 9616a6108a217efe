"""A trained retrieval model with everything needed to use it, as one directory.

The bundle keeps the towers' weights and config, the items' features and item vectors,
and each training user's timeline (their history context, and the items to exclude when
recommending). It is what MLflow stores as the model's artifact and what ``recommend``,
``eval retrieval`` and ``index build`` load back.

In the registry (:mod:`training.registry`) the model is ``reelrank-retrieval``, a pyfunc
(:class:`RetrievalPyfunc`) whose input is a frame of ``user_id`` (and a ``k`` parameter) and
whose output is each user's top-k; its artifact is the bundle directory.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.models import infer_signature

from models.two_tower import TwoTower, TwoTowerConfig, UserInputs
from training import registry
from training.retrieval.inputs import (
    NUMERIC,
    IdSpace,
    ItemTable,
    TrainData,
    UserFeaturizer,
    item_table,
)
from training.retrieval.trainer import item_embeddings

MODEL_NAME = registry.MODELS["retrieval"]
EXPERIMENT = MODEL_NAME
_TIMELINE = ("indptr", "item", "long", "liked", "positive", "ts")


@dataclass
class Bundle:
    model: TwoTower
    data: TrainData
    history_len: int
    item_vectors: np.ndarray  # [n_items, dim], rows follow data.ids.item_ids
    meta: dict[str, Any]

    @property
    def item_ids(self) -> np.ndarray:
        return self.data.ids.item_ids

    @torch.no_grad()
    def user_vectors(self, user_ids: np.ndarray) -> torch.Tensor:
        """User-tower outputs; users unknown to training get an empty history and OOV id."""
        user_ids = np.asarray(user_ids, np.int64)
        idx = self.data.ids.user_index(user_ids)
        out = torch.zeros(len(user_ids), self.model.cfg.dim)
        known = idx >= 0
        self.model.eval()
        if known.any():
            out[torch.from_numpy(known)] = self.model.user(
                self.data.user_inputs(idx[known], self.history_len))
        if (~known).any():
            n, L = int((~known).sum()), self.history_len
            feats = self.data.ids.user_features
            out[torch.from_numpy(~known)] = self.model.user(UserInputs(
                user_id=torch.from_numpy(user_ids[~known]),
                history=torch.full((n, L), -1, dtype=torch.int64),
                long=torch.zeros(n, L, dtype=torch.bool),
                liked=torch.zeros(n, L, dtype=torch.bool),
                features=None if feats is None else torch.zeros(n, feats.shape[1]),
            ))
        return out

    def score(self, users: np.ndarray) -> torch.Tensor:
        """Catalog scores for user *indices* (the evaluation's interface)."""
        return self.user_vectors(self.data.ids.user_ids[users]) @ torch.from_numpy(
            self.item_vectors).T

    def recommend(self, user_ids: np.ndarray, k: int, batch_size: int = 1024) -> pd.DataFrame:
        """Top ``k`` items per user as (user_id, item_id, rank, score), rank 1 first, without
        the items the user interacted with in the model's training data."""
        user_ids = np.asarray(user_ids, np.int64)
        items = torch.from_numpy(self.item_vectors)
        k = min(k, len(self.item_ids))
        parts = []
        for s in range(0, len(user_ids), batch_size):
            ids = user_ids[s : s + batch_size]
            scores = self.user_vectors(ids) @ items.T
            idx = self.data.ids.user_index(ids)
            for row, u in enumerate(idx):
                if u >= 0:
                    seen = self.data.item[self.data.indptr[u] : self.data.indptr[u + 1]]
                    scores[row, torch.from_numpy(seen)] = -torch.inf
            top = torch.topk(scores, k, dim=1)
            parts.append(pd.DataFrame({
                "user_id": np.repeat(ids, k),
                "item_id": self.item_ids[top.indices.numpy()].ravel(),
                "rank": np.tile(np.arange(1, k + 1, dtype=np.int64), len(ids)),
                "score": top.values.numpy().ravel().astype(np.float32),
            }))
        out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
            columns=["user_id", "item_id", "rank", "score"])
        return out[np.isfinite(out["score"])].reset_index(drop=True)

    @torch.no_grad()
    def vectors_for_items(self, items: pd.DataFrame, content: np.ndarray | None = None,
                          now: pd.Timestamp | None = None) -> np.ndarray:
        """Item-tower vectors for items given as an items table (fresh uploads included)."""
        if self.model.cfg.content_dim and content is None:
            content = np.zeros((len(items), self.model.cfg.content_dim), np.float32)
        table = item_table(items, now or pd.Timestamp.now(tz="UTC"), content)
        return item_embeddings(self.model, table).numpy()

    def save(self, path: Path) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        torch.save(self.model.state_dict(), path / "model.pt")
        ids = self.data.ids
        arrays = {f"timeline_{k}": getattr(self.data, k) for k in _TIMELINE}
        arrays |= {f"items_{k}": v for k, v in self.data.items.arrays().items()}
        arrays |= {"user_ids": ids.user_ids, "item_ids": ids.item_ids,
                   "item_vectors": self.item_vectors}
        if ids.user_features is not None:
            arrays["user_features"] = ids.user_features
        np.savez(path / "arrays.npz", **arrays)
        config = {
            "model": asdict(self.model.cfg),
            "history_len": self.history_len,
            "featurizer": asdict(ids.featurizer),
            "now": None if self.data.now is None else self.data.now.isoformat(),
            "meta": self.meta,
        }
        (path / "config.json").write_text(json.dumps(config, indent=2, default=str))
        return path

    @classmethod
    def load(cls, path: Path) -> Bundle:
        config = json.loads((path / "config.json").read_text())
        a = dict(np.load(path / "arrays.npz"))
        items = ItemTable.from_arrays({k[6:]: v for k, v in a.items() if k.startswith("items_")})
        ids = IdSpace(
            user_ids=a["user_ids"], item_ids=a["item_ids"],
            items=pd.DataFrame({"item_id": a["item_ids"]}), content=items.content,
            user_features=a.get("user_features"),
            featurizer=UserFeaturizer(**config["featurizer"]),
        )
        now = pd.Timestamp(config["now"]) if config["now"] else None
        data = TrainData(ids, items, now=now,
                         **{k: a[f"timeline_{k}"] for k in _TIMELINE})
        state = torch.load(path / "model.pt", weights_only=True)
        # bundles written before the residual towers existed were trained without them
        cfg = TwoTowerConfig(**{"residual": False, **config["model"]})
        empty = torch.zeros(0, dtype=torch.int64)
        model = TwoTower(cfg, user_ids=state.get("user.ids.known", empty),
                         item_ids=state["item.ids.known"])
        model.load_state_dict(state)
        model.eval()
        return cls(model, data, config["history_len"], a["item_vectors"], config["meta"])


def make_bundle(model: TwoTower, data: TrainData, history_len: int,
                meta: dict[str, Any]) -> Bundle:
    vectors = item_embeddings(model, data.items).numpy()
    return Bundle(model, data, history_len, vectors, meta)


def feature_names(bundle: Bundle) -> list[str]:
    """What the towers read (the ``features`` tag of a registered version): the user tower's
    history and user columns, the item tower's id, side features and content embedding."""
    cfg, fz = bundle.model.cfg, bundle.data.ids.featurizer
    user = ["user.history", *(["user.user_id"] if cfg.user_id else []),
            *(f"user.{c}" for c in fz.numeric), *(f"user.{c}" for c in fz.categories)]
    item = ["item.item_id"]
    if cfg.item_features:
        item += ["item.author_id", "item.tags", *(f"item.{c}" for c in NUMERIC)]
        item += ["item.content"] if cfg.content_dim else []
    return user + item


class RetrievalPyfunc(registry.BundlePyfunc):
    """``predict(frame with user_id, params={"k": K})`` -> user_id, item_id, rank, score."""

    bundle_type = Bundle

    def predict(self, context: Any, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> pd.DataFrame:
        k = int((params or {}).get("k", 100))
        return self.bundle.recommend(model_input["user_id"].to_numpy(np.int64), k)


def log_bundle(bundle: Bundle, eval_table: pd.DataFrame) -> str:
    """Log the eval table, the item embeddings and the model into the active run; its URI."""
    if not eval_table.empty:
        mlflow.log_table(eval_table, artifact_file="eval/eval_table.json")
    with tempfile.TemporaryDirectory() as tmp:
        emb = pd.DataFrame({"item_id": bundle.item_ids, "embedding": list(bundle.item_vectors)})
        emb_path = Path(tmp) / "item_embeddings.parquet"
        emb.to_parquet(emb_path)
        mlflow.log_artifact(str(emb_path), artifact_path="embeddings")
    users = pd.DataFrame({"user_id": bundle.data.ids.user_ids[:3].astype(np.int64)})
    example = bundle.recommend(users["user_id"].to_numpy(), 3)
    signature = infer_signature(users, example, params={"k": 100})
    return registry.log_bundle(bundle, RetrievalPyfunc(), signature)
