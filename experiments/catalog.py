"""What an experiment may name: its metrics, the candidate sources a variant may re-weight and
the ranker tasks whose score weights it may change. One list each, checked at creation."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache


@dataclass(frozen=True)
class MetricDef:
    """``per_user``: one value per exposed user (tested across users); otherwise a page-level
    guardrail (latency, error rate) compared by its own test."""

    label: str
    unit: str
    higher_is_better: bool = True
    per_user: bool = True


METRICS: dict[str, MetricDef] = {
    "watch_time_per_user": MetricDef("Watch time per user", "min"),
    "completion_rate": MetricDef("Completion rate", "share of watches"),
    "likes_per_session": MetricDef("Likes per session", "likes"),
    "shares_per_session": MetricDef("Shares per session", "shares"),
    "follows_per_session": MetricDef("Follows per session", "follows"),
    "return_d1": MetricDef("D1 return rate", "share of users"),
    "topic_diversity": MetricDef("Topic diversity (Gini-Simpson)", "0..1"),
    "report_rate": MetricDef("Reports per user", "reports", higher_is_better=False),
    "latency_p99_ms": MetricDef("Feed latency p99", "ms", higher_is_better=False,
                                per_user=False),
    "error_rate": MetricDef("Degraded pages", "share of pages", higher_is_better=False,
                            per_user=False),
}
DEFAULT_PRIMARY = "watch_time_per_user"
DEFAULT_SECONDARY = ("completion_rate", "likes_per_session", "shares_per_session",
                     "follows_per_session", "return_d1", "topic_diversity")
DEFAULT_GUARDRAILS = ("latency_p99_ms", "error_rate", "report_rate")

# Sources whose share of the candidates a variant may set (``feed_quotas`` keys).
QUOTA_SOURCES = frozenset({"ann", "following", "trending", "fresh", "explore"})


@cache
def score_tasks() -> frozenset[str]:
    """Ranker tasks a variant may re-weight in the final score (imported on use: torch)."""
    from models.ranker import DEFAULT_WEIGHTS

    return frozenset(DEFAULT_WEIGHTS)
