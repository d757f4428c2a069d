"""HTTP: parse with a schema -> call a handler -> serialize; refusals become problems.

Order creation runs under the idempotency layer (:mod:`services.order.idempotency`)
and is rate limited per customer (``ORDER_RATE_LIMIT_PER_CUSTOMER``). :data:`PROBLEMS`
is the one table from the handlers' refusals to problem documents.
"""

from __future__ import annotations

import functools
import json
import math
from datetime import timedelta
from uuid import UUID

from flask import Response, current_app, has_app_context, request
from flask.views import MethodView

from services.order import cancellation, handlers, idempotency
from services.order.delivery import DeliveryUnavailable
from services.order.domain import (
    InsufficientStock,
    ItemsRefused,
    OrderNotCancellable,
    PaymentUnavailable,
    ReservationReleased,
)
from services.order.idempotency import KeyInProgress, KeyReused, StoredResponse
from services.order.inventory import InventoryUnavailable
from services.order.schemas import (
    CancelOrderSchema,
    CreateOrderSchema,
    ListOrdersQuerySchema,
    OrderPageSchema,
    OrderSchema,
    StuckOrdersQuerySchema,
    StuckOrdersSchema,
)
from shared.auth import authenticate, require_scopes
from shared.errors import Problem, ProblemMap
from shared.openapi import response_headers
from shared.pagination import decode_cursor, keyset_page
from shared.ratelimit import client_ip, rate_limit
from shared.web import Blueprint, correlation_id, database

blp = Blueprint("orders", __name__, url_prefix="/v1/orders",
                description="Place, track and cancel orders.")

IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_IDEMPOTENCY_KEY_CHARS = 255
# app.config key: the per-customer limit on order creation (read by the app factory).
ORDER_RATE_LIMIT = "ORDER_RATE_LIMIT_PER_CUSTOMER"
# app.config keys: ORDER_STUCK_AFTER_S and ORDER_PAYMENT_TTL_S (read by the app factory).
STUCK_AFTER = "ORDER_STUCK_AFTER_S"
PAYMENT_TTL = "ORDER_PAYMENT_TTL_S"

PROBLEMS = ProblemMap({
    OrderNotCancellable: (409, "Order cannot be cancelled", "order-not-cancellable"),
    ReservationReleased: (409, "Reservation released", "reservation-released"),
    InsufficientStock: (409, "Insufficient stock", "insufficient-stock"),
    ItemsRefused: lambda exc: Problem(exc.refused_status, exc.title, exc.detail, exc.kind,
                                      errors=exc.errors),
    InventoryUnavailable: lambda exc: Problem(
        503, "Inventory unavailable",
        "Stock cannot be checked right now, so nothing was ordered; retry later.",
        "inventory-unavailable",
        headers={"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}),
    PaymentUnavailable: lambda exc: Problem(
        503, "Payments unavailable", exc.detail, "payment-unavailable",
        headers={"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}),
    DeliveryUnavailable: lambda exc: Problem(
        503, "Delivery unavailable",
        "Whether the shipment can still be stopped cannot be checked right now, so nothing was "
        "cancelled; retry later.", "delivery-unavailable",
        headers={"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}),
    KeyReused: (422, "Idempotency key reused", "idempotency-key-mismatch"),
    KeyInProgress: lambda exc: Problem(409, "Request in progress", exc.detail,
                                       "idempotency-key-in-progress",
                                       headers={"Retry-After": "1"}),
})


def _idempotency_key() -> str | None:
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return None
    if not 0 < len(key) <= MAX_IDEMPOTENCY_KEY_CHARS or not key.isprintable():
        raise Problem(400, "Bad Idempotency-Key",
                      f"{IDEMPOTENCY_HEADER} must be 1-{MAX_IDEMPOTENCY_KEY_CHARS} printable "
                      "characters.", "bad-idempotency-key",
                      errors=[{"field": IDEMPOTENCY_HEADER, "message": "Invalid value."}])
    return key


def _order_rate() -> str:
    return current_app.config[ORDER_RATE_LIMIT]


def _customer_key() -> str:
    """Rate-limit key: the calling customer (unauthenticated calls get their 401 from the view)."""
    try:
        return "customer:" + authenticate().subject
    except Problem:
        return "anonymous:" + client_ip()


def _json(result: StoredResponse) -> Response:
    response = Response(result.body, status=result.status, mimetype="application/json")
    for name, value in result.headers.items():
        response.headers[name] = value
    return response


@blp.route("")
class Orders(MethodView):
    # Idempotent replays count too: a client retrying in a loop is still a loop.
    @rate_limit(_order_rate, key=_customer_key)
    @blp.doc(parameters=[{"in": "header", "name": IDEMPOTENCY_HEADER, "required": False,
                          "schema": {"type": "string", "maxLength": MAX_IDEMPOTENCY_KEY_CHARS},
                          "description": "Retries with the same key and body replay the first "
                                         "response (kept 24 h)."}])
    @blp.response(201, OrderSchema, description="Order placed in PENDING_PAYMENT; Location "
                                                 "points at it. Prices, currency and total are "
                                                 "the catalog's; `payment.client_secret` is what "
                                                 "the storefront confirms the payment with.",
                  headers=response_headers("Location", sometimes=("Idempotent-Replayed",)))
    @blp.alt_response(409, description="Insufficient stock (problem type insufficient-stock: "
                                       "`lines` lists each short sku with its available quantity; "
                                       "nothing was ordered), or the same Idempotency-Key is "
                                       "still in progress",
                      headers=response_headers(sometimes=("Retry-After",)))
    @blp.alt_response(422, description="Invalid fields (a unit_price or currency is refused: "
                                       "prices come from the catalog), unknown skus, or "
                                       "Idempotency-Key reused with another body")
    @blp.alt_response(503, description="Inventory or payments unavailable (down, slow, or a "
                                       "circuit breaker is open): nothing was ordered and no "
                                       "stock is held; see Retry-After")
    @require_scopes("orders:write")
    @blp.arguments(CreateOrderSchema)
    def post(self, payload):
        """Place an order for the calling customer: stock is reserved first, at catalog prices."""
        principal = authenticate()
        key = _idempotency_key()
        command = handlers.PlaceOrder(
            customer_id=principal.subject, customer_email=payload["customer_email"],
            shipping_address=payload["shipping_address"],
            items=handlers.items_from(payload["items"]))
        inventory = current_app.extensions["inventory"]
        payments = current_app.extensions["payments"]

        def place(attempt: idempotency.Attempt) -> StoredResponse:
            return handlers.place_order(
                database(), inventory, payments, command, correlation_id(), attempt.resource_id,
                within=lambda cur, order: attempt.store(cur, _created(order)))

        return _json(idempotency.run_once(database(), principal.subject, key,
                                          idempotency.fingerprint(payload), place))

    @blp.response(200, OrderPageSchema)
    @blp.alt_response(400, description="Bad cursor")
    @require_scopes("orders:read")
    @blp.arguments(ListOrdersQuerySchema, location="query")
    def get(self, query):
        """List orders, newest first (a customer sees only their own; admin sees all)."""
        principal = authenticate()
        after = decode_cursor(query["cursor"]) if query.get("cursor") else None
        limit = query["limit"]
        rows = handlers.list_orders(database(), principal, query.get("status"), after, limit + 1)
        page, next_cursor = keyset_page(rows, limit)
        return {"items": [shape(o) for o in page], "next_cursor": next_cursor}


@blp.route("/stuck")
class StuckOrders(MethodView):
    @blp.response(200, StuckOrdersSchema)
    @require_scopes("admin")
    @blp.arguments(StuckOrdersQuerySchema, location="query")
    def get(self, query):
        """Orders in a non-terminal status that have not changed for a while (operators)."""
        older_than_s = query.get("older_than_s") or current_app.config[STUCK_AFTER]
        rows = cancellation.list_stuck(database(), older_than_s, query["limit"])
        return {"older_than_s": older_than_s, "items": [shape(o) for o in rows]}


@blp.route("/<uuid:order_id>")
class OrderById(MethodView):
    @blp.response(200, OrderSchema)
    @blp.alt_response(404, description="No such order (or not yours)")
    @require_scopes("orders:read")
    def get(self, order_id: UUID):
        """One order with its status history."""
        return shape(handlers.get_order(database(), authenticate(), order_id))


@blp.route("/<uuid:order_id>/cancel")
class CancelOrder(MethodView):
    @blp.response(200, OrderSchema)
    @blp.alt_response(404, description="No such order (or not yours)")
    @blp.alt_response(409, description="Already shipped (problem type order-not-cancellable, "
                                       "`status_now`): for a paid order, the carrier has picked "
                                       "the parcel up; nothing was changed")
    @blp.alt_response(503, description="A paid order's shipment cannot be checked right now "
                                       "(delivery down, slow, or its circuit breaker open): "
                                       "nothing was cancelled; see Retry-After",
                      headers=response_headers("Retry-After"))
    @require_scopes("orders:write")
    @blp.arguments(CancelOrderSchema, required=False)
    def post(self, payload, order_id: UUID):
        """Cancel an order that has not shipped yet (cancelling twice is harmless).

        A paid order is cancelled only once the delivery service has stopped its shipment.
        """
        order = cancellation.cancel_order(database(), current_app.extensions["delivery"],
                                      authenticate(), order_id, (payload or {}).get("reason"),
                                      correlation_id())
        return shape(order)


def _created(order: dict) -> StoredResponse:
    return StoredResponse(201, json.dumps(serialize(order)), {"Location": f"/v1/orders/{order['id']}"})


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


def _payment_expiry(order: dict):
    ttl_s = current_app.config.get(PAYMENT_TTL) if has_app_context() else None
    if order["status"] != "PENDING_PAYMENT" or ttl_s is None:
        return None
    return order["created_at"] + timedelta(seconds=ttl_s)


def shape(order: dict) -> dict:
    """An order row reshaped for :class:`OrderSchema` (not yet serialized)."""
    shaped = dict(order)
    shaped["items"] = [dict(line) for line in order.get("lines", [])]
    shaped["payment"] = {
        "payment_intent_id": order.get("payment_intent_id"),
        # Only while it can still be used: a paid or cancelled order needs no confirmation.
        "client_secret": order.get("payment_client_secret")
        if order["status"] == "PENDING_PAYMENT" else None,
        "amount_minor": order.get("payment_amount_minor"), "currency": order["currency"],
        "paid_at": order.get("paid_at"),
        "expires_at": _payment_expiry(order),
    }
    shaped["shipment"] = (
        {"shipment_id": str(order["shipment_id"]) if order.get("shipment_id") else None,
         "carrier": order.get("carrier"), "tracking_number": order.get("tracking_number")}
        if order.get("shipment_id") else None)
    return shaped
