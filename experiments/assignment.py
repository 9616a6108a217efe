"""The experiment-assignment hook of the for-you feed: which variant a user is in, and so which
model aliases serve them.

The feed calls :func:`assign` once per first page and logs the result with every exposure.
Until the experiments package defines live experiments, everyone gets the champions.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Assignment:
    experiment: str | None = None
    variant: str | None = None
    ranker_alias: str = "champion"
    retrieval_alias: str = "champion"


CONTROL = Assignment()


def assign(user_id: int) -> Assignment:
    """The user's assignment (deterministic per user); the experiments issue fills this in."""
    return CONTROL
