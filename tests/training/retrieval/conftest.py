"""A small synthetic world shared by the retrieval tests (generated in well under a second)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training.datasets.store import Dataset
from training.datasets.synth import SynthConfig, generate


@pytest.fixture(scope="session", autouse=True)
def _two_threads() -> None:
    torch.set_num_threads(1)  # small ops: one thread is faster here


@pytest.fixture(scope="session")
def world() -> Dataset:
    tables = generate(SynthConfig(n_users=500, n_videos=1200, n_topics=10, days=6, seed=3,
                                  impressions_per_user=80))
    return Dataset(name="synth", path=Path("synth"), meta={}, **tables)
