"""The one clock: aware UTC datetimes, epoch milliseconds, and the spans counted in them.

Everything the platform stores or sends is UTC; the bus, the feature windows, the catalog and
the candidate sources count in epoch milliseconds. One definition keeps them on one clock.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS


def utcnow() -> datetime:
    """Now as an aware UTC datetime (never a naive local one)."""
    return datetime.now(UTC)


def now_ms() -> int:
    """Now in epoch milliseconds."""
    return int(time.time() * 1000)
