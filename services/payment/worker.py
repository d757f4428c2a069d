"""Payment worker: consumes order-payments.fifo, relays the payment outbox, reconciles.

* ``order.status_changed`` to SHIPPED captures the authorization;
  ``order.cancelled`` voids it (or refunds a capture). The provider is called
  inside the message's inbox transaction with idempotency keys, so a failure
  (provider down: the breaker opens) rolls back and the message comes again.
* The reconciliation job (every ``PAYMENT_RECONCILE_INTERVAL_S``) asks Stripe
  about payments with no news for ``PAYMENT_RECONCILE_AFTER_S`` (their webhook
  never came) and finishes refunds whose provider call failed.

Run with ``python -m services.payment.worker``.
"""

from __future__ import annotations

import sys

from services.payment.app import gateway_for
from services.payment.handlers import order_event_handler
from services.payment.reconciliation import RECONCILE_BATCH, reconcile
from services.payment.settings import PaymentSettings, load
from shared.config import Settings
from shared.periodic import periodic
from shared.queues import queue
from shared.resilience import BreakerRegistry
from shared.worker import WorkerPlan, serve_worker


def build_plan(db, settings: Settings, own: PaymentSettings) -> WorkerPlan:
    """The order-events consumer and the reconciliation job, on one Stripe gateway."""
    gateway = gateway_for(own, BreakerRegistry(settings.env))
    order_payments = queue("order-payments.fifo")
    handler = order_event_handler(gateway)
    return WorkerPlan(
        consumers={order_payments: dict.fromkeys(order_payments.event_types, handler)},
        tasks=[periodic(lambda: reconcile(db, gateway, own.reconcile_after_s),
                        own.reconcile_interval_s, full_batch=RECONCILE_BATCH,
                        error_event="payment_reconcile_failed",
                        started_event="payment_reconcile_started",
                        interval_s=own.reconcile_interval_s)],
    )


def main() -> int:
    return serve_worker(load, build_plan)


if __name__ == "__main__":
    sys.exit(main())
