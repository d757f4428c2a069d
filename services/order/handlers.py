"""Order commands and event handlers: one function each, dependencies as arguments.

Every state change and the events it causes are written in ONE transaction
(the outbox); nothing here talks to SQS.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import uuid
from dataclasses import dataclass

import psycopg2.errors

from services.order import repository as repo
from services.order.domain import CANCELLABLE, Item, Line, OrderStatus, decide, order_total
from services.order.inventory import (
    InventoryRefused,
    InventoryUnavailable,
    Reservation,
)
from services.order.schemas import DeliveryEventDataSchema, OrderSchema
from shared.auth import Principal
from shared.errors import Problem
from shared.logging import get_logger
from shared.messaging.consumer import PermanentError
from shared.messaging.envelope import Envelope
from shared.queues import add_event

log = get_logger(__name__)

SERVICE = "order"
PRODUCER = "order-service"


@dataclass(frozen=True)
class PlaceOrder:
    customer_id: str
    customer_email: str
    shipping_address: dict
    items: list[Item]


@dataclass(frozen=True)
class HttpResult:
    """A response to send (also what an idempotency key replays)."""

    status: int
    body: str
    headers: dict[str, str]


def request_fingerprint(payload: dict) -> str:
    """A hash of the validated request, to tell "same body" from "different body"."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def place_order(db, inventory, command: PlaceOrder, correlation_id: str | None,
                idempotency_key: str | None = None, fingerprint: str | None = None) -> HttpResult:
    """Reserve the stock, then create the order, its history and its events in one transaction.

    The order id exists before the reservation (it is the reservation's key)
    and is reused when the same Idempotency-Key and body come back after a
    failed or crashed attempt, so a retry finds its reservation again. When
    the commit fails after the reservation, nothing is undone here: the
    reservation stays HELD until inventory's sweeper releases it (undoing it
    from here could release stock of an order whose commit did succeed).
    """
    order_id = uuid.uuid4()
    if idempotency_key:
        claimed, replay = _claim_key(db, command.customer_id, idempotency_key, fingerprint or "",
                                     order_id)
        if replay is not None:
            return replay
        order_id = claimed
    try:
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
            result = HttpResult(201, json.dumps(serialize(order)),
                                {"Location": f"/v1/orders/{order_id}"})
            if idempotency_key:
                repo.complete_idempotency_key(cur, command.customer_id, idempotency_key,
                                              result.status, result.body, result.headers)
    except psycopg2.errors.UniqueViolation:
        # A taken-over key whose first attempt was still running, and has just committed.
        _release_key(db, command, idempotency_key)
        raise _in_progress() from None
    except BaseException:
        _release_key(db, command, idempotency_key)
        raise
    log.info("order_placed", order_id=str(order_id), lines=len(lines), total=str(total),
             currency=reservation.currency)
    return result


def reserve_stock(inventory, order_id: uuid.UUID, items: list[Item],
                  correlation_id: str | None) -> Reservation:
    """Hold the items' stock in inventory; its refusals become this API's problems."""
    try:
        reservation = inventory.reserve(order_id, items, correlation_id)
    except InventoryUnavailable as exc:
        raise Problem(503, "Inventory unavailable",
                      "Stock cannot be checked right now, so nothing was ordered; retry later.",
                      "inventory-unavailable",
                      headers={"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}) from None
    except InventoryRefused as exc:
        raise _refusal(exc, items) from None
    if reservation.status == "RELEASED":
        raise Problem(409, "Reservation released",
                      "The stock held for this order was released (the order was cancelled); "
                      "place a new order.", "reservation-released")
    return reservation


def _refusal(exc: InventoryRefused, items: list[Item]) -> Problem:
    """Inventory's 409/422 problem, restated in terms of this request's items."""
    problem = exc.problem
    kind = str(problem.get("type", "")).rsplit("/", 1)[-1] or "inventory-refused"
    index = {item.sku: n for n, item in enumerate(items)}
    if kind == "insufficient-stock":
        short = [line for line in problem.get("lines", []) if line.get("sku") in index]
        return Problem(409, "Insufficient stock", problem.get("detail") or "Not enough stock.",
                       "insufficient-stock", lines=short,
                       errors=[{"field": f"items.{index[line['sku']]}.quantity",
                                "message": f"Only {line['available']} available."} for line in short])
    errors = [{"field": error["field"].replace("lines.", "items.", 1), "message": error["message"]}
              for error in problem.get("errors", []) if isinstance(error, dict) and "field" in error]
    return Problem(exc.status, problem.get("title") or "Refused by inventory",
                   problem.get("detail") or "Inventory refused these items.", kind,
                   errors=errors or None)


def _claim_key(db, customer_id: str, key: str, fingerprint: str,
               order_id: uuid.UUID) -> tuple[uuid.UUID | None, HttpResult | None]:
    with db.transaction() as cur:
        claimed, existing = repo.claim_idempotency_key(cur, customer_id, key, fingerprint, order_id)
    if existing is None:
        return claimed, None
    if existing["request_hash"] != fingerprint:
        raise Problem(422, "Idempotency key reused",
                      "This Idempotency-Key was used with a different request body.",
                      "idempotency-key-mismatch")
    if existing["state"] == "in_progress":
        raise _in_progress()
    headers = dict(existing["response_headers"] or {})
    headers["Idempotent-Replayed"] = "true"
    return None, HttpResult(existing["response_status"], existing["response_body"], headers)


def _release_key(db, command: PlaceOrder, idempotency_key: str | None) -> None:
    if idempotency_key:
        with db.transaction() as cur:
            repo.release_idempotency_key(cur, command.customer_id, idempotency_key)


def _in_progress() -> Problem:
    return Problem(409, "Request in progress",
                   "A request with this Idempotency-Key is still being processed; retry later.",
                   "idempotency-key-in-progress", headers={"Retry-After": "1"})


def get_order(db, principal: Principal, order_id: uuid.UUID) -> dict:
    """The order if the caller may see it; otherwise 404 (ids cannot be probed)."""
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
            raise Problem(409, "Order cannot be cancelled",
                          f"Orders can be cancelled only before they ship; this one is {current}.",
                          "order-not-cancellable", status_now=current.value)
        repo.set_status(cur, order_id, OrderStatus.CANCELLED, cancel_reason=reason)
        repo.add_history(cur, order_id, OrderStatus.CANCELLED, current, "order.cancelled",
                         note=reason)
        base = Envelope(event_type="order.cancelled", aggregate_id=str(order_id),
                        producer=PRODUCER, correlation_id=correlation_id,
                        data={"order_id": str(order_id), "customer_id": order["customer_id"],
                              "reason": reason})
        add_event(cur, SERVICE, base)
        add_event(cur, SERVICE, base.caused("order.status_changed", str(order_id),
                                            _status_data(order, current, OrderStatus.CANCELLED,
                                                         "order.cancelled"), PRODUCER))
        updated = repo.get_order(cur, order_id)
    log.info("order_cancelled", order_id=str(order_id))
    return updated


def on_delivery_event(cur, event: Envelope) -> None:
    """Apply a delivery-status event to its order with guarded transitions."""
    data = _schema(DeliveryEventDataSchema).load(event.data)
    order_id = data["order_id"]
    order = repo.lock_order(cur, order_id)
    if order is None:
        raise PermanentError(f"delivery event for unknown order {order_id}")
    current = OrderStatus(order["status"])
    decision = decide(current, event.event_type)
    if event.event_type == "delivery.shipment_created" and decision.kind != "ignored":
        repo.set_shipment(cur, order_id, data["shipment_id"], data["carrier"],
                          data["tracking_number"])
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
                         carrier=data["carrier"], tracking_number=data["tracking_number"]),
            PRODUCER))
    log.info("delivery_event_applied", order_id=str(order_id), decision=decision.kind,
             status=decision.target.value)


# --- serialization -----------------------------------------------------------
def serialize(order: dict) -> dict:
    """The API (JSON-ready) representation of an order row (+ lines, + history if loaded)."""
    exclude = () if "history" in order else ("history",)
    return _schema(OrderSchema, exclude).dump(shape(order))


@functools.cache
def _schema(schema_class, exclude: tuple[str, ...] = ()):
    # Schemas are reusable (and thread-safe) once built. Building OrderSchema
    # with its nested schemas on every request took about a quarter of the
    # order API's CPU under load (py-spy, scripts/bench_orders.py).
    return schema_class(exclude=exclude)


def shape(order: dict) -> dict:
    """An order row reshaped for :class:`OrderSchema` (not yet serialized)."""
    shaped = dict(order)
    shaped["items"] = [dict(line) for line in order.get("lines", [])]
    shaped["shipment"] = (
        {"shipment_id": str(order["shipment_id"]) if order.get("shipment_id") else None,
         "carrier": order.get("carrier"), "tracking_number": order.get("tracking_number")}
        if order.get("shipment_id") else None)
    return shaped


def _created_data(order: dict) -> dict:
    return {
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
    }


def _status_data(order: dict, previous: OrderStatus, status: OrderStatus, cause: str,
                 **extra) -> dict:
    return {"order_id": str(order["id"]), "customer_id": order["customer_id"],
            "previous_status": previous.value, "status": status.value, "cause": cause, **extra}


def _visible(principal: Principal, order: dict) -> bool:
    return principal.is_admin or order["customer_id"] == principal.subject


def _not_found() -> Problem:
    return Problem(404, "Not Found", "No such order.", "not-found")


def items_from(items: list[dict]) -> list[Item]:
    """Domain items from validated request items."""
    return [Item(i["sku"], i["quantity"]) for i in items]
