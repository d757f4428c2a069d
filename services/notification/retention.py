"""Periodic purge of finished notification history (a worker task).

Notifications, finished webhook deliveries (with their attempts) and finished
mails older than ``NOTIFICATION_RETENTION_DAYS`` are deleted in bounded
batches, so the tables stay the size of the window. The inbox and published
outbox rows are the messaging runtime's: the retention job every worker runs
(:mod:`shared.messaging.retention`, ``MESSAGING_RETENTION_DAYS``) purges them,
here as in every other service.
"""

from __future__ import annotations

from services.notification import repository as repo
from services.notification.settings import RetentionSettings
from shared.logging import get_logger
from shared.periodic import periodic

log = get_logger(__name__)

BATCH = 5000  # rows per table per transaction: short locks, bounded WAL bursts


def purge_once(db, settings: RetentionSettings) -> dict[str, int]:
    """Delete everything past the window; return rows deleted per table."""
    total: dict[str, int] = {}
    while True:
        with db.transaction() as cur:
            deleted = repo.purge_older_than(cur, settings.days, BATCH)
        for table, count in deleted.items():
            total[table] = total.get(table, 0) + count
        if max(deleted.values()) < BATCH:
            return total


def retention_task(db, settings: RetentionSettings):
    """A WorkerPlan task: purge at start, then every ``settings.every_s`` until stopped."""

    def purge() -> None:
        deleted = purge_once(db, settings)
        if any(deleted.values()):
            log.info("notification_history_purged", days=settings.days, **deleted)

    # purge_once drains every batch itself; a failure is retried next round.
    return periodic(purge, settings.every_s, error_event="notification_purge_failed")
