"""Cancelling orders: the customer's cancel, unpaid orders' expiry, the stuck-order policy.

A paid order is cancelled only after the delivery service has stopped its
shipment (:func:`stop_shipment`), so a cancel never crosses the carrier's
pick-up (docs/architecture.md, "Cancelling a paid order"). The cancel itself
(status, history, events) is :func:`services.order.lifecycle.cancel`.
"""

from __future__ import annotations

import uuid

from services.order import repository as repo
from services.order.delivery import ShipmentUnderway
from services.order.domain import CANCELLABLE, NON_TERMINAL, OrderNotCancellable, OrderStatus
from services.order.lifecycle import cancel, not_found, visible
from services.order.peer import PeerUnavailable
from shared.auth import Principal
from shared.logging import get_logger

log = get_logger(__name__)

EXPIRY_BATCH = 100
PAYMENT_EXPIRED = "payment_expired"


def cancel_order(db, delivery, principal: Principal, order_id: uuid.UUID, reason: str | None,
                 correlation_id: str | None) -> dict:
    """Cancel before shipping; emits ``order.cancelled`` and ``order.status_changed``.

    A paid (PENDING_SHIPMENT) order is cancelled only after the delivery
    service has stopped its shipment (:func:`stop_shipment`): it answers under
    the same lock as the carrier's pick-up, so a cancel can no longer cross
    it. That call is not made under the order's row lock (no lock is held
    across the network); the status is re-checked under the lock afterwards.
    An unpaid order needs no call: no ``order.paid`` has been sent, and
    ``payment.authorized`` takes the same row lock, so it either finds the
    order CANCELLED (and is ignored) or pays it first — then this sees
    PENDING_SHIPMENT on its next pass and asks delivery.
    """
    shipment_stopped = False
    while True:
        with db.transaction() as cur:
            order = repo.lock_order(cur, order_id)
            if order is None or not visible(principal, order):
                raise not_found()
            current = OrderStatus(order["status"])
            if current == OrderStatus.CANCELLED:
                return repo.get_order(cur, order_id)  # cancelling twice is harmless
            if current not in CANCELLABLE:
                raise OrderNotCancellable(
                    f"Orders can be cancelled only before they ship; this one is {current}.",
                    status_now=current.value)
            if current != OrderStatus.PENDING_SHIPMENT or shipment_stopped:
                cancel(cur, order, reason, correlation_id)
                updated = repo.get_order(cur, order_id)
                break
        stop_shipment(delivery, order_id, reason, correlation_id)
        shipment_stopped = True
    log.info("order_cancelled", order_id=str(order_id))
    return updated


# Shipment statuses past the pick-up, as the order will show them once delivery's event arrives.
SHIPMENT_TO_ORDER_STATUS = {"SHIPPED": OrderStatus.SHIPPED, "IN_TRANSIT": OrderStatus.SHIPPED,
                            "OUT_FOR_DELIVERY": OrderStatus.SHIPPED,
                            "DELIVERED": OrderStatus.DELIVERED,
                            "FAILED": OrderStatus.DELIVERY_FAILED}


def stop_shipment(delivery, order_id: uuid.UUID, reason: str | None,
                  correlation_id: str | None) -> None:
    """Have delivery stop the order's shipment, or raise why the order cannot be cancelled.

    :class:`OrderNotCancellable` (409) when the carrier has the parcel: the
    order itself is unchanged, and delivery's event will move it on.
    ``DeliveryUnavailable`` (503 + Retry-After) passes through: nothing changed.
    """
    try:
        delivery.stop_shipment(order_id, reason, correlation_id)
    except ShipmentUnderway as exc:
        shown = SHIPMENT_TO_ORDER_STATUS.get(exc.status_now, OrderStatus.SHIPPED)
        log.info("cancel_refused_shipment_underway", order_id=str(order_id),
                 shipment_status=exc.status_now)
        raise OrderNotCancellable(
            f"Orders can be cancelled only before they ship; this one is already {shown} "
            f"(the carrier has it).", status_now=shown.value,
            shipment_status=exc.status_now) from None


def expire_unpaid(db, ttl_s: float, limit: int = EXPIRY_BATCH) -> int:
    """Cancel orders still unpaid ``ttl_s`` after they were placed; returns how many.

    Claimed with ``FOR UPDATE SKIP LOCKED`` (several workers may run it); each
    is cancelled as a customer's cancel would be, with reason ``payment_expired``.
    """
    with db.transaction() as cur:
        expired = repo.claim_unpaid(cur, ttl_s, limit)
        for order in expired:
            cancel(cur, order, PAYMENT_EXPIRED, None, cause="order.payment_expired")
    if expired:
        log.info("unpaid_orders_expired", count=len(expired),
                 order_ids=[str(o["id"]) for o in expired][:20])
    return len(expired)


STUCK_REJECTED = "stuck_auto_rejected"


def reject_stuck(db, delivery, older_than_s: float, limit: int = EXPIRY_BATCH) -> int:
    """The ORDER_STUCK_AUTO_REJECT policy: cancel orders paid but not shipped for too long.

    A paid order nobody ships (a warehouse that never picked it) keeps money
    held on the customer's card; cancelling it voids the authorization (the
    payment service, on ``order.cancelled``), releases the stock and tells
    the customer. Like a customer's cancel, each goes through delivery first
    (:func:`stop_shipment`): one the carrier picked up meanwhile is left to
    ship; when delivery is unavailable the rest wait for the next run.
    Candidates are read with ``FOR UPDATE SKIP LOCKED`` (one being cancelled
    right now is skipped) and each is re-checked under its lock; returns how
    many were cancelled.
    """
    with db.transaction() as cur:
        stuck = repo.claim_stuck(cur, OrderStatus.PENDING_SHIPMENT.value, older_than_s, limit)
    rejected = []
    for candidate in stuck:
        try:
            stop_shipment(delivery, candidate["id"], STUCK_REJECTED, None)
        except OrderNotCancellable:
            continue  # picked up after all: its delivery events move it on
        except PeerUnavailable as exc:
            log.warning("stuck_reject_deferred", reason=exc.reason, left=len(stuck) - len(rejected))
            break
        with db.transaction() as cur:
            order = repo.lock_order(cur, candidate["id"])
            if order is not None and order["status"] == OrderStatus.PENDING_SHIPMENT.value:
                cancel(cur, order, STUCK_REJECTED, None, cause="order.stuck_rejected")
                rejected.append(order["id"])
    if rejected:
        log.warning("stuck_orders_rejected", count=len(rejected),
                    order_ids=[str(o) for o in rejected][:20])
    return len(rejected)


def list_stuck(db, older_than_s: float, limit: int) -> list[dict]:
    """Orders in a non-terminal status that have not moved for ``older_than_s`` (operators)."""
    with db.transaction() as cur:
        return repo.list_stuck(cur, sorted(s.value for s in NON_TERMINAL), older_than_s, limit)
