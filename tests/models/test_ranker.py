"""The ranker network: shapes, prediction ranges, the weighted final score, and that it learns."""

from __future__ import annotations

import copy

import pytest
import torch

from models.ranker import Ranker, RankerConfig, inference_dtype

TASKS = ("click", "like", "hate", "watch_ratio")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cfg(**kw: object) -> RankerConfig:
    base = dict(tasks=TASKS, ratio_tasks=("watch_ratio",), cardinalities=(50, 7), n_numeric=3,
                score_weights={"click": 1.0, "like": 2.0, "hate": -5.0, "watch_ratio": 0.5})
    return RankerConfig(**(base | kw))  # type: ignore[arg-type]


def _batch(n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    cat = torch.stack([torch.randint(0, 50, (n,), generator=g),
                       torch.randint(0, 7, (n,), generator=g)], 1)
    return cat, torch.randn(n, 3, generator=g)


@pytest.mark.parametrize("experts", [1, 3])
def test_predictions_and_weighted_score(experts: int) -> None:
    model = Ranker(_cfg(n_experts=experts))
    cat, num = _batch()
    assert model(cat, num).shape == (64, len(TASKS))
    score, preds = model.predict(cat, num)
    assert preds.shape == (64, len(TASKS)) and score.shape == (64,)
    assert ((preds[:, :3] > 0) & (preds[:, :3] < 1)).all(), "binary tasks are probabilities"
    assert ((preds[:, 3] >= 0) & (preds[:, 3] <= model.cfg.ratio_cap)).all()
    expected = preds[:, 0] + 2 * preds[:, 1] - 5 * preds[:, 2] + 0.5 * preds[:, 3]
    torch.testing.assert_close(score, expected)
    assert model.training, "predict restores the training mode"


def test_unknown_index_and_no_numeric_features() -> None:
    model = Ranker(_cfg(n_numeric=0))
    score, _ = model.predict(torch.zeros(4, 2, dtype=torch.int64), torch.zeros(4, 0))
    assert torch.isfinite(score).all()


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="ratio tasks"):
        RankerConfig(tasks=("click",), ratio_tasks=("watch_ratio",))
    with pytest.raises(ValueError, match="no input features"):
        Ranker(RankerConfig(tasks=("click",)))


def _cross_model() -> tuple[Ranker, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A ranker trained to click iff the two categorical fields match (only crosses of the
    embeddings can tell), and its training batch."""
    torch.manual_seed(0)
    cfg = RankerConfig(tasks=("click",), cardinalities=(6, 6), n_numeric=0, dropout=0.0,
                       emb_dim=8, expert_hidden=(32,), tower_hidden=(16,))
    model = Ranker(cfg)
    a, b = torch.randint(0, 6, (2000,)), torch.randint(0, 6, (2000,))
    b = torch.where(torch.rand(2000) < 0.4, a, b)
    cat, y = torch.stack([a, b], 1), (a == b).float().unsqueeze(1)
    none = torch.zeros(2000, 0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(cat, none), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, cat, none, y


def test_learns_a_feature_cross() -> None:
    model, cat, none, y = _cross_model()
    _, p = model.predict(cat, none)
    assert ((p > 0.5).float() == y).float().mean() > 0.95


def test_a_bfloat16_copy_predicts_like_float32() -> None:
    """Serving's bfloat16 network: float32 in and out, the same decisions, probabilities
    within bfloat16's rounding; the score's weights stay exact."""
    model, cat, none, y = _cross_model()
    half = copy.deepcopy(model).to(inference_dtype("bfloat16"))
    (_, p), (score_half, p_half) = model.predict(cat, none), half.predict(cat, none)
    assert p_half.dtype == score_half.dtype == torch.float32
    assert (p_half - p).abs().max() < 0.02
    assert ((p_half > 0.5).float() == y).float().mean() > 0.95
    torch.testing.assert_close(score_half, p_half[:, 0] * model.cfg.score_weights["click"])
    history = Ranker(_cfg(history_len=4, history_fields=(0,))).eval()
    hist = torch.randint(-1, 50, (1, 4, 1)).expand(64, -1, -1)
    _, p_hist = copy.deepcopy(history).to(torch.bfloat16).predict(*_batch(), hist)
    assert (p_hist - history.predict(*_batch(), hist)[1]).abs().max() < 0.02


def test_inference_dtype() -> None:
    assert inference_dtype("float32") == torch.float32
    assert inference_dtype("bfloat16") == torch.bfloat16
    assert inference_dtype("auto") in (torch.float32, torch.bfloat16)
    with pytest.raises(ValueError, match="precision"):
        inference_dtype("float16")
