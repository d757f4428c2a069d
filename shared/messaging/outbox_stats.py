"""Read-only SQL over the outbox table for monitoring: how much is waiting, and for how long.

The relay measures the lag itself while it runs (:mod:`shared.messaging.relay`);
the worker's gauge refresh (:mod:`shared.worker_gauges`) reads both figures
here on its own schedule, so they stay true when the relay is off in this
worker or has stopped, which is when an operator needs them.
"""

from __future__ import annotations

from typing import NamedTuple


class OutboxBacklog(NamedTuple):
    """Unpublished rows of one service's outbox."""

    pending: int
    oldest_age_s: float  # 0 when nothing is pending


def backlog(cur) -> OutboxBacklog:
    """Count the unpublished rows and the age of the oldest one; a dict cursor."""
    cur.execute("SELECT count(*) AS pending,"
                " COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0) AS oldest_age_s"
                " FROM outbox WHERE published_at IS NULL")
    row = cur.fetchone()
    return OutboxBacklog(int(row["pending"]), float(row["oldest_age_s"]))
