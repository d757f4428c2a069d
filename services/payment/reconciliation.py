"""The reconciliation job: ask the provider about payments with no news, finish stuck refunds."""

from __future__ import annotations

from services.payment import repository as repo
from services.payment.domain import PaymentStatus
from services.payment.handlers import apply_intent
from services.payment.provider import ProviderRefused, ProviderUnavailable
from services.payment.refunds import finish_refund
from shared.logging import get_logger

log = get_logger(__name__)

RECONCILE_BATCH = 20


def reconcile(db, gateway, older_than_s: float, limit: int = RECONCILE_BATCH) -> int:
    """Ask the provider about payments with no news and finish refunds left PENDING.

    For orders whose webhook never came: a payment still REQUIRES_PAYMENT for
    longer than ``older_than_s`` is looked up and applied as the provider has
    it. Each payment is one transaction, taken with SKIP LOCKED so several
    workers share the work. Returns how many were looked at.
    """
    with db.transaction() as cur:
        order_ids = repo.unsettled(cur, older_than_s, limit)
        refund_ids = repo.pending_refunds(cur, older_than_s, limit)
    for order_id in order_ids:
        try:
            with db.transaction() as cur:
                payment = repo.try_lock_payment(cur, order_id)
                if payment is None or payment["status"] != PaymentStatus.REQUIRES_PAYMENT:
                    continue
                intent = gateway.retrieve(order_id, payment["intent_id"])
                outcome = apply_intent(cur, gateway, payment, intent, "reconcile")
            if outcome != "ignored":
                log.warning("payment_reconciled", order_id=str(order_id), outcome=outcome)
        except (ProviderUnavailable, ProviderRefused) as exc:
            log.warning("reconcile_failed", order_id=str(order_id), error=str(exc)[:300])
    for refund_id in refund_ids:
        try:
            finish_refund(db, gateway, refund_id)
        except (ProviderUnavailable, ProviderRefused) as exc:
            log.warning("refund_retry_failed", refund_id=str(refund_id), error=str(exc)[:300])
    return len(order_ids) + len(refund_ids)
