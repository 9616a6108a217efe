"""A small synthetic world shared by the retrieval tests (generated in well under a second)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training.datasets.store import Dataset
from training.datasets.synth import SynthConfig, generate


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    """Tiny batches run fastest on one thread; CLI commands called in-process may change it."""
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def world() -> Dataset:
    tables = generate(SynthConfig(n_users=500, n_videos=1200, n_topics=10, days=6, seed=3,
                                  impressions_per_user=80))
    return Dataset(name="synth", path=Path("synth"), meta={}, **tables)
