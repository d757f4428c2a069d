"""Retention of the messaging tables: published outbox rows and inbox rows do not grow forever.

Every worker process runs :func:`retention_task` (``shared.worker`` installs
it, whatever the service), a :func:`shared.periodic.periodic` job that:

* deletes outbox rows PUBLISHED more than ``days`` ago — an unpublished row
  is never deleted, however old, since the relay still owes it;
* deletes inbox rows RECEIVED more than ``days`` ago;
* works in batches of at most ``batch`` rows per table per transaction (short
  locks, bounded WAL bursts), runs again at once after a full batch, otherwise
  every ``interval_s``; workers running it at once skip each other's rows.

Why ``days`` is at least :data:`MIN_RETENTION_DAYS` (29) and 30 by default:
an inbox row is what turns a second delivery of its event into a no-op, so it
must outlive every way the event can come back. SQS keeps a message at most
14 days (its longest ``MessageRetentionPeriod``), so a lost delete is
redelivered within 14 days of the send. A copy our consumer dead-letters is a
NEW message in the DLQ, kept up to 14 days more (``DLQ_RETENTION_S``), and
``scripts/dlq replay`` can bring it back up to 28 days after the original
send. Past that no queue can hold the event. Published outbox rows are
needed by nothing after the send; they share the period so that an
operator can line up both tables over the same window.

Settings (declared in ``shared.config.WorkerSettings``, whose bounds use the
constants here): ``MESSAGING_RETENTION_DAYS`` (default 30, minimum 29) and
``MESSAGING_RETENTION_INTERVAL_S`` (default 3600, minimum 1).
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.logging import get_logger
from shared.messaging import inbox, outbox
from shared.periodic import Task, periodic

log = get_logger(__name__)

# The longest MessageRetentionPeriod SQS allows (AWS documentation).
MAX_SQS_RETENTION_DAYS = 14
# Queue, then DLQ (a dead letter is a new message, with its own retention), then one day's margin.
MIN_RETENTION_DAYS = 2 * MAX_SQS_RETENTION_DAYS + 1
DEFAULT_RETENTION_DAYS = 30
DEFAULT_INTERVAL_S = 3600.0
BATCH = 5000  # rows per table per transaction


@dataclass(frozen=True)
class RetentionSettings:
    """How long the messaging tables keep rows, and how often they are purged."""

    days: int = DEFAULT_RETENTION_DAYS
    interval_s: float = DEFAULT_INTERVAL_S
    batch: int = BATCH


def purge_batch(db, days: int, batch: int = BATCH) -> dict[str, int]:
    """One transaction: up to ``batch`` rows per table past ``days``; rows deleted per table."""
    with db.transaction() as cur:
        return {"outbox": outbox.purge_published(cur, days, batch),
                "inbox": inbox.purge_older_than(cur, days, batch)}


def purge_once(db, days: int, batch: int = BATCH) -> dict[str, int]:
    """Batch after batch until nothing is past ``days``; total rows deleted per table."""
    total = {"outbox": 0, "inbox": 0}
    while True:
        deleted = purge_batch(db, days, batch)
        for table, count in deleted.items():
            total[table] += count
        if max(deleted.values()) < batch:
            return total


def retention_task(db, settings: RetentionSettings) -> Task:
    """The worker task: a batch at start, again at once while batches are full, else every interval."""

    def purge() -> int:
        deleted = purge_batch(db, settings.days, settings.batch)
        if any(deleted.values()):
            log.info("messaging_history_purged", days=settings.days, **deleted)
        return max(deleted.values())

    return periodic(purge, settings.interval_s, error_event="messaging_purge_failed",
                    full_batch=settings.batch, started_event="messaging_retention_started",
                    days=settings.days, interval_s=settings.interval_s)
