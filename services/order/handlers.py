"""Order commands and event handlers: one function each, dependencies as arguments.

Checkout reserves the stock, opens the payment (a PaymentIntent the
storefront confirms) and commits the order in PENDING_PAYMENT; only
``payment.authorized`` makes it PENDING_SHIPMENT and emits ``order.paid``, on
which delivery creates the shipment. Cancels, expiries and the stuck-order
policy are :mod:`services.order.cancellation`.

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
from services.order.domain import (
    CANCELLABLE,
    InsufficientStock,
    Item,
    ItemsRefused,
    Line,
    OrderStatus,
    PaymentUnavailable,
    ReservationReleased,
    decide,
    order_total,
)
from services.order.inventory import InventoryRefused, Reservation
from services.order.lifecycle import (
    PRODUCER,
    SERVICE,
    cancel,
    created_data,
    not_found,
    status_data,
    visible,
)
from services.order.payments import OpenedPayment, PaymentServiceUnavailable
from shared.auth import Principal
from shared.contracts import event_data, load_data
from shared.logging import get_logger
from shared.messaging.consumer import PermanentError
from shared.messaging.envelope import Envelope
from shared.queues import add_event

log = get_logger(__name__)

T = TypeVar("T")
# What on_delivery_event cannot do without; carrier and tracking number may be absent.
DELIVERY_EVENT_NEEDS = ("shipment_id", "order_id", "status", "occurred_at")
PAYMENT_AUTHORIZED_NEEDS = ("order_id",)
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
            correlation_id=correlation_id, data=created_data(order)))
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
    if order is None or not visible(principal, order):
        raise not_found()
    return order


def list_orders(db, principal: Principal, status: str | None, after, limit: int) -> list[dict]:
    """A page of the caller's orders (every customer's for admins)."""
    customer = None if principal.is_admin else principal.subject
    with db.transaction() as cur:
        return repo.list_orders(cur, customer, status, after, limit)


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
        status_data(order, current, OrderStatus.PENDING_SHIPMENT, event.event_type), PRODUCER))
    log.info("order_paid", order_id=str(order_id))


def on_delivery_event(cur, event: Envelope) -> None:
    """Apply a delivery-status event to its order with guarded transitions.

    ``delivery.shipment_cancelled`` for an order still cancellable cancels it
    (:func:`~services.order.lifecycle.cancel`, cause ``delivery.shipment_cancelled``): delivery stops a
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
        cancel(cur, order, SHIPMENT_CANCELLED_REASON, event.correlation_id,
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
            status_data(order, current, decision.target, event.event_type,
                         carrier=data.get("carrier"),
                         tracking_number=data.get("tracking_number")),
            PRODUCER))
    log.info("delivery_event_applied", order_id=str(order_id), decision=decision.kind,
             status=decision.target.value)


def items_from(items: list[dict]) -> list[Item]:
    """Domain items from validated request items."""
    return [Item(i["sku"], i["quantity"]) for i in items]
