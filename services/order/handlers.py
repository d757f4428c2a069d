"""Order commands and event handlers: one function each, dependencies as arguments.

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
    OrderNotCancellable,
    OrderStatus,
    ReservationReleased,
    decide,
    order_total,
)
from services.order.inventory import InventoryRefused, Reservation
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


@dataclass(frozen=True)
class PlaceOrder:
    customer_id: str
    customer_email: str
    shipping_address: dict
    items: list[Item]


def _the_order(_cur, order: dict) -> dict:
    return order


def place_order(db, inventory, command: PlaceOrder, correlation_id: str | None,
                order_id: uuid.UUID | None = None,
                within: Callable[[Any, dict], T] = _the_order) -> T:
    """Reserve the stock, then create the order, its history and its events in one transaction.

    ``order_id`` (default: a new one) exists before the reservation (it is
    the reservation's key); the idempotency layer passes the id of an earlier
    attempt, so a retry finds its reservation again. ``within(cur, order)``
    runs inside the order's transaction and its result is returned (default:
    the order); the idempotency layer stores its response there. When the
    commit fails after the reservation, nothing is undone here: the
    reservation stays HELD until inventory's sweeper releases it (undoing it
    from here could release stock of an order whose commit did succeed).
    """
    order_id = order_id or uuid.uuid4()
    reservation = reserve_stock(inventory, order_id, command.items, correlation_id)
    lines = [Line(line.sku, line.quantity, line.unit_price) for line in reservation.lines]
    total = order_total(lines)
    with db.transaction() as cur:
        repo.insert_order(cur, order_id, command.customer_id, command.customer_email,
                          reservation.currency, total, command.shipping_address, lines)
        repo.add_history(cur, order_id, OrderStatus.PENDING_SHIPMENT, None, "order.created")
        order = repo.get_order(cur, order_id)
        add_event(cur, SERVICE, Envelope(
            event_type="order.created", aggregate_id=str(order_id), producer=PRODUCER,
            correlation_id=correlation_id, data=_created_data(order)))
        result = within(cur, order)
    log.info("order_placed", order_id=str(order_id), lines=len(lines), total=str(total),
             currency=reservation.currency)
    return result


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


def cancel_order(db, principal: Principal, order_id: uuid.UUID, reason: str | None,
                 correlation_id: str | None) -> dict:
    """Cancel before shipping; emits ``order.cancelled`` and ``order.status_changed``."""
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
        repo.set_status(cur, order_id, OrderStatus.CANCELLED, cancel_reason=reason)
        repo.add_history(cur, order_id, OrderStatus.CANCELLED, current, "order.cancelled",
                         note=reason)
        base = Envelope(event_type="order.cancelled", aggregate_id=str(order_id),
                        producer=PRODUCER, correlation_id=correlation_id,
                        data=event_data("order.cancelled", {
                            "order_id": str(order_id), "customer_id": order["customer_id"],
                            "reason": reason}))
        add_event(cur, SERVICE, base)
        add_event(cur, SERVICE, base.caused("order.status_changed", str(order_id),
                                            _status_data(order, current, OrderStatus.CANCELLED,
                                                         "order.cancelled"), PRODUCER))
        updated = repo.get_order(cur, order_id)
    log.info("order_cancelled", order_id=str(order_id))
    return updated


def on_delivery_event(cur, event: Envelope) -> None:
    """Apply a delivery-status event to its order with guarded transitions."""
    data = load_data(event.event_type, event.data, DELIVERY_EVENT_NEEDS)
    order_id = data["order_id"]
    order = repo.lock_order(cur, order_id)
    if order is None:
        raise PermanentError(f"delivery event for unknown order {order_id}")
    current = OrderStatus(order["status"])
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
