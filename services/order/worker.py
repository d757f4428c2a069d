"""Order worker: consumes delivery-status.fifo and payment-events.fifo, relays the order
outbox, cancels unpaid orders and purges expired idempotency keys.

``payment.authorized`` moves an order from PENDING_PAYMENT to PENDING_SHIPMENT
(and emits ``order.paid`` for delivery). An order still unpaid
``ORDER_PAYMENT_TTL_S`` after it was placed (default 30 minutes) is cancelled
by a periodic job every ``ORDER_EXPIRY_INTERVAL_S``, exactly as a customer's
cancel would: stock released, payment voided, customer notified. With
``ORDER_STUCK_AUTO_REJECT`` on, orders left in PENDING_SHIPMENT longer than
``ORDER_STUCK_AFTER_S`` are cancelled the same way (``stuck_auto_rejected``),
after the delivery service has stopped their shipments (``DELIVERY_URL``, the
order service's own client ``ORDER_CLIENT_ID``).

An idempotency key is kept for its time-to-live (``repository.IDEMPOTENCY_TTL``)
so a retried POST replays its first answer; after that the row is dead weight.
A periodic job deletes expired rows every ``ORDER_IDEMPOTENCY_PURGE_INTERVAL_S``
(:class:`services.order.settings.OrderSettings`; default 10 minutes; expired
keys are already ignored by the claim, so the interval only bounds how long
they take space).

Run with ``python -m services.order.worker``.
"""

from __future__ import annotations

import sys

from services.order.cancellation import EXPIRY_BATCH, expire_unpaid, reject_stuck
from services.order.delivery import SCOPE as DELIVERY_SCOPE
from services.order.delivery import DeliveryClient, delivery_config
from services.order.handlers import on_delivery_event, on_payment_event
from services.order.repository import purge_expired_idempotency_keys
from services.order.settings import OrderSettings, load
from shared.config import Settings
from shared.logging import get_logger
from shared.periodic import periodic
from shared.queues import queue
from shared.resilience import BreakerRegistry
from shared.service_token import service_token_from
from shared.worker import WorkerPlan, serve_worker

log = get_logger(__name__)


def purge_idempotency_keys(db) -> int:
    """Delete every expired idempotency key; return how many went."""
    with db.transaction() as cur:
        deleted = purge_expired_idempotency_keys(cur)
    if deleted:
        log.info("idempotency_keys_purged", deleted=deleted)
    return deleted


def delivery_client(settings: Settings, own: OrderSettings) -> DeliveryClient:
    """The worker's own client of the delivery API (the stuck-order policy's cancels)."""
    breakers = BreakerRegistry(settings.env)
    return DeliveryClient(delivery_config(settings, own), breakers, service_token_from(
        settings, own.client_id, own.client_secret, DELIVERY_SCOPE, breakers))


def build_plan(db, settings: Settings, own: OrderSettings) -> WorkerPlan:
    """Handlers per queue for this service, plus the idempotency-key purge."""
    delivery_status = queue("delivery-status.fifo")
    payment_events = queue("payment-events.fifo")
    interval_s = own.idempotency_purge_interval_s
    plan = WorkerPlan(
        consumers={delivery_status: {event_type: on_delivery_event
                                     for event_type in delivery_status.event_types},
                   payment_events: dict.fromkeys(payment_events.event_types, on_payment_event)},
        tasks=[periodic(lambda: purge_idempotency_keys(db), interval_s,
                        error_event="idempotency_purge_failed",
                        started_event="idempotency_purge_started", interval_s=interval_s),
               periodic(lambda: expire_unpaid(db, own.payment_ttl_s), own.expiry_interval_s,
                        full_batch=EXPIRY_BATCH, error_event="unpaid_expiry_failed",
                        started_event="unpaid_expiry_started", ttl_s=own.payment_ttl_s)],
    )
    if own.stuck_auto_reject:
        # Like a customer's cancel, the policy asks delivery first (ORDER_CLIENT_ID is needed).
        delivery = delivery_client(settings, own)
        plan.tasks.append(periodic(lambda: reject_stuck(db, delivery, own.stuck_after_s),
                                   own.expiry_interval_s,
                                   full_batch=EXPIRY_BATCH, error_event="stuck_reject_failed",
                                   started_event="stuck_reject_started",
                                   older_than_s=own.stuck_after_s))
    return plan


def main() -> int:
    return serve_worker(load, build_plan)


if __name__ == "__main__":
    sys.exit(main())
