"""Order commands and event handlers: one function each, dependencies as arguments.

Checkout reserves the stock, opens the payment (a PaymentIntent the
storefront confirms) and commits the order in PENDING_PAYMENT; only
``payment.authorized`` makes it PENDING_SHIPMENT and emits ``order.paid``, on
which delivery creates the shipment. Unpaid orders are cancelled after
``ORDER_PAYMENT_TTL_S`` (:func:`expire_unpaid`).

Every state change and the events it causes are written in ONE transaction
(the outbox); nothing here talks to SQS. Commands return orders (rows) and
raise the refusals of :mod:`services.order.domain`; turning those into HTTP
responses and problems is the views' job (``services/order/api.py``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from services.order import repository as repo
from services.order.delivery import ShipmentUnderway
from services.order.domain import (
    CANCELLABLE,
    NON_TERMINAL,
    InsufficientStock,
    Item,
    ItemsRefused,
    Line,
    OrderNotCancellable,
    OrderStatus,
    PaymentUnavailable,
    ReservationReleased,
    decide,
    order_total,
)
from services.order.inventory import InventoryRefused, Reservation
from services.order.payments import OpenedPayment, PaymentServiceUnavailable
from services.order.peer import PeerUnavailable
from shared.auth import Principal
from shared.contracts import event_data, load_data
from shared.errors import NotFound
from shared.logging import get_logger
from shared.messaging.consumer import PermanentError
from shared.messaging.envelope import Envelope
from shared.queues import add_event

log = get_logger(__name__)

SERVICE = "order"
PRODUCER = "order-service"
T = TypeVar("T")
# What on_delivery_event cannot do without; carrier and tracking number may be absent.
DELIVERY_EVENT_NEEDS = ("shipment_id", "order_id", "status", "occurred_at")
PAYMENT_AUTHORIZED_NEEDS = ("order_id",)
EXPIRY_BATCH = 100
PAYMENT_EXPIRED = "payment_expired"
SHIPMENT_CANCELLED = "delivery.shipment_cancelled"
SHIPMENT_CANCELLED_REASON = "shipment_cancelled"


@dataclass(frozen=True)
class PlaceOrder:
    customer_id: str
    customer_email: str
    shipping_address: dict
    items: list[Item]


def _the_order(_cur, order: dict) -> dict:
    return order


def place_order(db, inventory, payments, command: PlaceOrder, correlation_id: str | None,
                order_id: uuid.UUID | None = None,
                within: Callable[[Any, dict], T] = _the_order) -> T:
    """Reserve the stock, open the payment, then create the order (PENDING_PAYMENT) in one transaction.

    ``order_id`` (default: a new one) exists before the reservation (it is
    the reservation's and the payment's key); the idempotency layer passes the
    id of an earlier attempt, so a retry finds both again. ``within(cur,
    order)`` runs inside the order's transaction and its result is returned
    (default: the order); the idempotency layer stores its response there.
    When the payment cannot be opened the reservation is given back and
    :class:`PaymentUnavailable` raised: no order, no stock held. When the
    commit fails after the reservation, nothing is undone here: the
    reservation stays HELD until inventory's sweeper releases it (undoing it
    from here could release stock of an order whose commit did succeed).
    """
    order_id = order_id or uuid.uuid4()
    reservation = reserve_stock(inventory, order_id, command.items, correlation_id)
    lines = [Line(line.sku, line.quantity, line.unit_price) for line in reservation.lines]
    total = order_total(lines)
    payment = open_payment(inventory, payments, order_id, command.customer_id,
                           reservation.currency, lines, correlation_id)
    with db.transaction() as cur:
        order = repo.insert_order(cur, order_id, command.customer_id, command.customer_email,
                                  reservation.currency, total, command.shipping_address, lines,
                                  payment)
        add_event(cur, SERVICE, Envelope(
            event_type="order.created", aggregate_id=str(order_id), producer=PRODUCER,
            correlation_id=correlation_id, data=_created_data(order)))
        result = within(cur, order)
    log.info("order_placed", order_id=str(order_id), lines=len(lines), total=str(total),
             currency=reservation.currency)
    return result


def open_payment(inventory, payments, order_id: uuid.UUID, customer_id: str, currency: str,
                 lines: list[Line], correlation_id: str | None) -> OpenedPayment:
    """The order's PaymentIntent; if it cannot be opened the stock goes back and PaymentUnavailable."""
    try:
        return payments.open(order_id, customer_id, currency, lines, correlation_id)
    except PaymentServiceUnavailable as exc:
        inventory.release(order_id, correlation_id)
        raise PaymentUnavailable("Payments cannot be taken right now, so nothing was ordered; "
                                 "retry later.", exc.retry_after_s) from None


def reserve_stock(inventory, order_id: uuid.UUID, items: list[Item],
                  correlation_id: str | None) -> Reservation:
    """Hold the items' stock in inventory; its refusals are restated in terms of ``items``.

    ``InventoryUnavailable`` (down, slow, breaker open) passes through as it is.
    """
    try:
        reservation = inventory.reserve(order_id, items, correlation_id)
    except InventoryRefused as exc:
        raise _refusal(exc, items) from None
    if reservation.status == "RELEASED":
        raise ReservationReleased("The stock held for this order was released (the order was "
                                  "cancelled); place a new order.")
    return reservation


def _refusal(exc: InventoryRefused, items: list[Item]) -> Exception:
    """Inventory's 409/422 problem, restated in terms of this request's items."""
    problem = exc.problem
    kind = str(problem.get("type", "")).rsplit("/", 1)[-1] or "inventory-refused"
    index = {item.sku: n for n, item in enumerate(items)}
    if kind == "insufficient-stock":
        short = [line for line in problem.get("lines", []) if line.get("sku") in index]
        return InsufficientStock(
            problem.get("detail") or "Not enough stock.", lines=short,
            errors=[{"field": f"items.{index[line['sku']]}.quantity",
                     "message": f"Only {line['available']} available."} for line in short])
    errors = [{"field": error["field"].replace("lines.", "items.", 1), "message": error["message"]}
              for error in problem.get("errors", []) if isinstance(error, dict) and "field" in error]
    return ItemsRefused(kind, problem.get("title") or "Refused by inventory",
                        problem.get("detail") or "Inventory refused these items.", exc.status,
                        errors or None)


def get_order(db, principal: Principal, order_id: uuid.UUID) -> dict:
    """The order if the caller may see it; otherwise NotFound (ids cannot be probed)."""
    with db.transaction() as cur:
        order = repo.get_order(cur, order_id)
    if order is None or not _visible(principal, order):
        raise _not_found()
    return order


def list_orders(db, principal: Principal, status: str | None, after, limit: int) -> list[dict]:
    """A page of the caller's orders (every customer's for admins)."""
    customer = None if principal.is_admin else principal.subject
    with db.transaction() as cur:
        return repo.list_orders(cur, customer, status, after, limit)


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
            if order is None or not _visible(principal, order):
                raise _not_found()
            current = OrderStatus(order["status"])
            if current == OrderStatus.CANCELLED:
                return repo.get_order(cur, order_id)  # cancelling twice is harmless
            if current not in CANCELLABLE:
                raise OrderNotCancellable(
                    f"Orders can be cancelled only before they ship; this one is {current}.",
                    status_now=current.value)
            if current != OrderStatus.PENDING_SHIPMENT or shipment_stopped:
                _cancel(cur, order, reason, correlation_id)
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


def _cancel(cur, order: dict, reason: str | None, correlation_id: str | None,
            cause: str = "order.cancelled", source_event_id: str | None = None) -> None:
    """Cancel a locked, cancellable order: status, history, ``order.cancelled`` + status change.

    ``order.cancelled`` releases the stock (inventory), cancels or tombstones
    the shipment (delivery), voids the payment (payment) and tells the customer
    (notification).
    """
    order_id = order["id"]
    current = OrderStatus(order["status"])
    repo.set_status(cur, order_id, OrderStatus.CANCELLED, cancel_reason=reason)
    repo.add_history(cur, order_id, OrderStatus.CANCELLED, current, cause, note=reason,
                     source_event_id=source_event_id)
    base = Envelope(event_type="order.cancelled", aggregate_id=str(order_id),
                    producer=PRODUCER, correlation_id=correlation_id,
                    data=event_data("order.cancelled", {
                        "order_id": str(order_id), "customer_id": order["customer_id"],
                        "reason": reason}))
    add_event(cur, SERVICE, base)
    add_event(cur, SERVICE, base.caused("order.status_changed", str(order_id),
                                        _status_data(order, current, OrderStatus.CANCELLED,
                                                     cause), PRODUCER))


def expire_unpaid(db, ttl_s: float, limit: int = EXPIRY_BATCH) -> int:
    """Cancel orders still unpaid ``ttl_s`` after they were placed; returns how many.

    Claimed with ``FOR UPDATE SKIP LOCKED`` (several workers may run it); each
    is cancelled as a customer's cancel would be, with reason ``payment_expired``.
    """
    with db.transaction() as cur:
        expired = repo.claim_unpaid(cur, ttl_s, limit)
        for order in expired:
            _cancel(cur, order, PAYMENT_EXPIRED, None, cause="order.payment_expired")
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
                _cancel(cur, order, STUCK_REJECTED, None, cause="order.stuck_rejected")
                rejected.append(order["id"])
    if rejected:
        log.warning("stuck_orders_rejected", count=len(rejected),
                    order_ids=[str(o) for o in rejected][:20])
    return len(rejected)


def list_stuck(db, older_than_s: float, limit: int) -> list[dict]:
    """Orders in a non-terminal status that have not moved for ``older_than_s`` (operators)."""
    with db.transaction() as cur:
        return repo.list_stuck(cur, sorted(s.value for s in NON_TERMINAL), older_than_s, limit)


def on_payment_event(cur, event: Envelope) -> None:
    """``payment.authorized``: a PENDING_PAYMENT order may ship; emits ``order.paid``.

    An authorization for an order that is no longer awaiting payment (it was
    cancelled, or this is a second copy) is recorded as ignored; for a
    cancelled order the payment service voids the authorization itself when
    it handles ``order.cancelled``.
    """
    data = load_data(event.event_type, event.data, PAYMENT_AUTHORIZED_NEEDS)
    order_id = data["order_id"]
    order = repo.lock_order(cur, order_id)
    if order is None:
        raise PermanentError(f"payment event for unknown order {order_id}")
    current = OrderStatus(order["status"])
    if current != OrderStatus.PENDING_PAYMENT:
        repo.add_history(cur, order_id, current, current, event.event_type, applied=False,
                         note=f"ignored: payment authorized while {current}",
                         source_event_id=event.event_id)
        log.info("payment_event_ignored", order_id=str(order_id), status=current.value)
        return
    repo.set_paid(cur, order_id)
    repo.add_history(cur, order_id, OrderStatus.PENDING_SHIPMENT, current, event.event_type,
                     source_event_id=event.event_id)
    paid = repo.get_order(cur, order_id)
    add_event(cur, SERVICE, event.caused("order.paid", str(order_id), event_data("order.paid", {
        "order_id": str(order_id), "customer_id": paid["customer_id"],
        "currency": paid["currency"].strip(), "total": str(paid["total"]),
        "shipping_address": paid["shipping_address"], "paid_at": paid["paid_at"].isoformat()}),
        PRODUCER))
    add_event(cur, SERVICE, event.caused(
        "order.status_changed", str(order_id),
        _status_data(order, current, OrderStatus.PENDING_SHIPMENT, event.event_type), PRODUCER))
    log.info("order_paid", order_id=str(order_id))


def on_delivery_event(cur, event: Envelope) -> None:
    """Apply a delivery-status event to its order with guarded transitions.

    ``delivery.shipment_cancelled`` for an order still cancellable cancels it
    (:func:`_cancel`, cause ``delivery.shipment_cancelled``): delivery stops a
    shipment only for a cancel, so the order converges even when the cancel's
    own commit was lost.
    """
    data = load_data(event.event_type, event.data, DELIVERY_EVENT_NEEDS)
    order_id = data["order_id"]
    order = repo.lock_order(cur, order_id)
    if order is None:
        raise PermanentError(f"delivery event for unknown order {order_id}")
    current = OrderStatus(order["status"])
    if event.event_type == SHIPMENT_CANCELLED and current in CANCELLABLE:
        # The shipment was stopped for a cancel whose order commit never happened (a crash
        # between delivery's answer and it, and no retry): finish that cancel now.
        _cancel(cur, order, SHIPMENT_CANCELLED_REASON, event.correlation_id,
                cause=event.event_type, source_event_id=event.event_id)
        log.info("order_cancelled_after_shipment", order_id=str(order_id))
        return
    decision = decide(current, event.event_type)
    if event.event_type == "delivery.shipment_created" and decision.kind != "ignored":
        repo.set_shipment(cur, order_id, data["shipment_id"], data.get("carrier"),
                          data.get("tracking_number"))
    if decision.kind == "transition":
        repo.set_status(cur, order_id, decision.target)
    repo.add_history(
        cur, order_id, decision.target, current, event.event_type,
        applied=decision.kind != "ignored",
        note=None if decision.kind != "ignored" else f"ignored: {decision.note}",
        source_event_id=event.event_id, occurred_at=data["occurred_at"])
    if decision.kind == "transition":
        add_event(cur, SERVICE, event.caused(
            "order.status_changed", str(order_id),
            _status_data(order, current, decision.target, event.event_type,
                         carrier=data.get("carrier"),
                         tracking_number=data.get("tracking_number")),
            PRODUCER))
    log.info("delivery_event_applied", order_id=str(order_id), decision=decision.kind,
             status=decision.target.value)


def _created_data(order: dict) -> dict:
    return event_data("order.created", {
        "order_id": str(order["id"]),
        "customer_id": order["customer_id"],
        "customer_email": order["customer_email"],
        "currency": order["currency"].strip(),
        "total": str(order["total"]),
        "lines": [{"sku": line["sku"], "quantity": line["quantity"],
                   "unit_price": str(line["unit_price"]), "line_total": str(line["line_total"])}
                  for line in order["lines"]],
        "shipping_address": order["shipping_address"],
        "created_at": order["created_at"].isoformat(),
    })


def _status_data(order: dict, previous: OrderStatus, status: OrderStatus, cause: str,
                 **extra) -> dict:
    return event_data("order.status_changed", {
        "order_id": str(order["id"]), "customer_id": order["customer_id"],
        "previous_status": previous.value, "status": status.value, "cause": cause, **extra})


def _visible(principal: Principal, order: dict) -> bool:
    return principal.is_admin or order["customer_id"] == principal.subject


def _not_found() -> NotFound:
    return NotFound("No such order.")


def items_from(items: list[dict]) -> list[Item]:
    """Domain items from validated request items."""
    return [Item(i["sku"], i["quantity"]) for i in items]
