"""Order worker: consumes delivery-status.fifo, relays the order outbox and purges
expired idempotency keys.

An idempotency key is kept for its time-to-live (``repository.IDEMPOTENCY_TTL``)
so a retried POST replays its first answer; after that the row is dead weight.
A periodic job deletes expired rows every ``ORDER_IDEMPOTENCY_PURGE_INTERVAL_S``
(default 10 minutes; expired keys are already ignored by the claim, so the
interval only bounds how long they take space).

Run with ``python -m services.order.worker``.
"""

from __future__ import annotations

import sys

from services.order.handlers import on_delivery_event
from services.order.repository import purge_expired_idempotency_keys
from shared.config import Settings, env_float
from shared.logging import get_logger
from shared.periodic import periodic
from shared.queues import queue
from shared.worker import WorkerPlan, serve_worker

log = get_logger(__name__)

SERVICE = "order"
DEFAULT_IDEMPOTENCY_PURGE_INTERVAL_S = 600.0
MIN_IDEMPOTENCY_PURGE_INTERVAL_S = 0.05


def idempotency_purge_interval(settings: Settings) -> float:
    """ORDER_IDEMPOTENCY_PURGE_INTERVAL_S (default 600 s)."""
    return env_float(settings.env, "ORDER_IDEMPOTENCY_PURGE_INTERVAL_S",
                     DEFAULT_IDEMPOTENCY_PURGE_INTERVAL_S, minimum=MIN_IDEMPOTENCY_PURGE_INTERVAL_S)


def purge_idempotency_keys(db) -> int:
    """Delete every expired idempotency key; return how many went."""
    with db.transaction() as cur:
        deleted = purge_expired_idempotency_keys(cur)
    if deleted:
        log.info("idempotency_keys_purged", deleted=deleted)
    return deleted


def build_plan(db, settings: Settings) -> WorkerPlan:
    """Handlers per queue for this service, plus the idempotency-key purge."""
    delivery_status = queue("delivery-status.fifo")
    interval_s = idempotency_purge_interval(settings)
    return WorkerPlan(
        consumers={delivery_status: {event_type: on_delivery_event
                                     for event_type in delivery_status.event_types}},
        tasks=[periodic(lambda: purge_idempotency_keys(db), interval_s,
                        error_event="idempotency_purge_failed",
                        started_event="idempotency_purge_started", interval_s=interval_s)],
    )


def main() -> int:
    return serve_worker(SERVICE, build_plan)


if __name__ == "__main__":
    sys.exit(main())
