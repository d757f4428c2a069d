"""What the order service's commands and consumers share: its cancel, its events' data, who sees an order.

:func:`cancel` is the one way an order becomes CANCELLED (a customer's
cancel, an expiry, the stuck-order policy, delivery's word that the shipment
was stopped); :func:`created_data` and :func:`status_data` build the data of
the events the service emits (``shared/contracts.py`` checks them).
"""

from __future__ import annotations

from services.order import repository as repo
from services.order.domain import OrderStatus
from shared.auth import Principal
from shared.contracts import event_data
from shared.errors import NotFound
from shared.messaging.envelope import Envelope
from shared.queues import add_event

SERVICE = "order"
PRODUCER = "order-service"


def cancel(cur, order: dict, reason: str | None, correlation_id: str | None,
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
                                        status_data(order, current, OrderStatus.CANCELLED,
                                                    cause), PRODUCER))


def created_data(order: dict) -> dict:
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


def status_data(order: dict, previous: OrderStatus, status: OrderStatus, cause: str,
                **extra) -> dict:
    return event_data("order.status_changed", {
        "order_id": str(order["id"]), "customer_id": order["customer_id"],
        "previous_status": previous.value, "status": status.value, "cause": cause, **extra})


def visible(principal: Principal, order: dict) -> bool:
    return principal.is_admin or order["customer_id"] == principal.subject


def not_found() -> NotFound:
    return NotFound("No such order.")
