"""Settings isolated to one test or module: only the values given, no ``REELRANK_*`` variable
of the shell and no ``.env`` file."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import pytest

from core.config import Settings, get_settings


@contextmanager
def env_settings(values: Mapping[str, str]) -> Iterator[Settings]:
    """Settings from ``values`` (by field name, set as ``REELRANK_<NAME>`` so that child
    processes see them too); ``get_settings()`` returns them until the block ends."""
    with pytest.MonkeyPatch.context() as mp:
        for name in [n for n in os.environ if n.startswith("REELRANK_")]:
            mp.delenv(name)
        mp.setitem(Settings.model_config, "env_file", None)
        for name, value in values.items():
            mp.setenv(f"REELRANK_{name.upper()}", value)
        get_settings.cache_clear()
        try:
            yield get_settings()
        finally:
            get_settings.cache_clear()
