"""The sequential user tower: unit vectors for any history (even all padding), order and time
gaps matter, and the time-gap buckets are computed as documented."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.two_tower import (
    GAP_BUCKETS,
    SequentialUserTower,
    TwoTower,
    TwoTowerConfig,
    UserInputs,
    query_output,
)
from training.retrieval.inputs import gap_buckets


def model() -> TwoTower:
    torch.manual_seed(0)
    cfg = TwoTowerConfig(dim=16, hidden=32, item_features=False, user_tower="sequential",
                         residual=False)
    m = TwoTower(cfg, user_ids=torch.arange(5), item_ids=torch.arange(100))
    return m.eval()


def test_sequential_tower_reads_order_actions_and_gaps() -> None:
    m = model()
    h = torch.tensor([[-1, -1, -1, -1], [-1, 3, 4, 5], [-1, 5, 4, 3]])
    x = UserInputs(user_id=torch.tensor([0, 1, 2]), history=h, long=h >= 0,
                   liked=torch.zeros_like(h, dtype=torch.bool),
                   gap=torch.tensor([[0, 0, 0, 0], [0, 3, 2, 1], [0, 3, 2, 1]]))
    out = m.user(x)
    assert out.shape == (3, 16) and torch.isfinite(out).all()
    assert torch.allclose(out.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert not torch.allclose(out[1], out[2], atol=1e-4)  # same items, other order
    later = UserInputs(user_id=x.user_id, history=h, long=h >= 0, liked=x.liked,
                       gap=torch.tensor([[0, 0, 0, 0], [0, 9, 8, 7], [0, 3, 2, 1]]))
    assert not torch.allclose(m.user(later)[1], out[1], atol=1e-4)
    no_gaps = UserInputs(user_id=x.user_id, history=h, long=h >= 0, liked=x.liked)
    assert torch.isfinite(m.user(no_gaps)).all()
    with pytest.raises(ValueError, match="user tower"):
        TwoTower(TwoTowerConfig(user_tower="rnn"), torch.arange(2), torch.arange(2))


def test_gap_buckets() -> None:
    hour = 3.6e6
    hist = np.array([[np.nan, 0.0, 23 * hour, 24 * hour]])
    out = gap_buckets(hist, np.array([24 * hour]))
    # unknown -> 0; 24 h -> 1 + floor(log2 25) = 5; 1 h -> 2; 0 h -> 1
    assert out.tolist() == [[0, 5, 2, 1]]
    assert gap_buckets(np.array([[0.0]]), np.array([1e6 * hour])).max() == GAP_BUCKETS - 1
    assert gap_buckets(np.array([[0.0]]), np.array([np.nan])).tolist() == [[0]]


@pytest.mark.parametrize("layers", [1, 2])
def test_the_query_readout_is_the_full_encoder_at_the_last_position(layers: int) -> None:
    """The tower computes only the query token's output of its last layer; that is exactly
    what a full pass of the same layers gives at that position, padding included."""
    torch.manual_seed(0)
    cfg = TwoTowerConfig(dim=16, hidden=32, seq_layers=layers, user_tower="sequential")
    tower = TwoTower(cfg, torch.arange(5), torch.arange(100)).user.eval()
    assert isinstance(tower, SequentialUserTower)
    x = torch.randn(3, 6, 16)
    pad = torch.tensor([[True] * 5 + [False], [True, True] + [False] * 4, [False] * 6])
    full = x
    for layer in tower.layers:
        full = layer(full, src_key_padding_mask=pad)
    for layer in tower.layers[:-1]:
        x = layer(x, src_key_padding_mask=pad)
    assert torch.allclose(query_output(tower.layers[-1], x, pad), full[:, -1], atol=1e-5)


def test_attention_reads_the_latest_window_and_the_mean_reads_all() -> None:
    """``seq_window`` caps what self-attention reads (the latest items); the history mean
    around the head (``residual``) still reads the whole history."""
    def user_vectors(residual: bool, history: list[list[int]]) -> torch.Tensor:
        torch.manual_seed(0)
        cfg = TwoTowerConfig(dim=16, hidden=32, item_features=False, user_tower="sequential",
                             residual=residual, seq_window=3)
        m = TwoTower(cfg, user_ids=torch.arange(5), item_ids=torch.arange(100)).eval()
        h = torch.tensor(history)
        return m.user(UserInputs(user_id=torch.zeros(len(h), dtype=torch.long), history=h,
                                 long=h >= 0, liked=torch.zeros_like(h, dtype=torch.bool)))

    rows = [[1, 2, 3, 4, 5, 6], [9, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 9]]
    attention_only = user_vectors(False, rows)
    assert torch.allclose(attention_only[0], attention_only[1], atol=1e-6)  # outside the window
    assert not torch.allclose(attention_only[0], attention_only[2], atol=1e-4)
    with_mean = user_vectors(True, rows)
    assert not torch.allclose(with_mean[0], with_mean[1], atol=1e-4)
