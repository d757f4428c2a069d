"""HTTP: parse with a schema -> call a handler -> serialize."""

from __future__ import annotations

from uuid import UUID

from flask import Response, current_app, request
from flask.views import MethodView

from services.order import handlers
from services.order.schemas import (
    CancelOrderSchema,
    CreateOrderSchema,
    ListOrdersQuerySchema,
    OrderPageSchema,
    OrderSchema,
)
from shared.auth import authenticate, require_scopes
from shared.errors import Problem
from shared.pagination import decode_cursor, keyset_page
from shared.web import Blueprint, correlation_id

blp = Blueprint("orders", __name__, url_prefix="/v1/orders",
                description="Place, track and cancel orders.")

IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_IDEMPOTENCY_KEY_CHARS = 255


def _db():
    return current_app.extensions["db"]


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


def _json(result: handlers.HttpResult) -> Response:
    response = Response(result.body, status=result.status, mimetype="application/json")
    for name, value in result.headers.items():
        response.headers[name] = value
    return response


@blp.route("")
class Orders(MethodView):
    @blp.doc(parameters=[{"in": "header", "name": IDEMPOTENCY_HEADER, "required": False,
                          "schema": {"type": "string", "maxLength": MAX_IDEMPOTENCY_KEY_CHARS},
                          "description": "Retries with the same key and body replay the first "
                                         "response (kept 24 h)."}])
    @blp.response(201, OrderSchema, description="Order placed; Location points at it. Prices, "
                                                 "currency and total are the catalog's.")
    @blp.alt_response(409, description="Insufficient stock (problem type insufficient-stock: "
                                       "`lines` lists each short sku with its available quantity; "
                                       "nothing was ordered), or the same Idempotency-Key is "
                                       "still in progress")
    @blp.alt_response(422, description="Invalid fields (a unit_price or currency is refused: "
                                       "prices come from the catalog), unknown skus, or "
                                       "Idempotency-Key reused with another body")
    @blp.alt_response(503, description="Inventory unavailable (down, slow, or its circuit "
                                       "breaker is open): nothing was ordered; see Retry-After")
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
        result = handlers.place_order(_db(), current_app.extensions["inventory"], command,
                                      correlation_id(), key, handlers.request_fingerprint(payload))
        return _json(result)

    @blp.response(200, OrderPageSchema)
    @blp.alt_response(400, description="Bad cursor")
    @require_scopes("orders:read")
    @blp.arguments(ListOrdersQuerySchema, location="query")
    def get(self, query):
        """List orders, newest first (a customer sees only their own; admin sees all)."""
        principal = authenticate()
        after = decode_cursor(query["cursor"]) if query.get("cursor") else None
        limit = query["limit"]
        rows = handlers.list_orders(_db(), principal, query.get("status"), after, limit + 1)
        page, next_cursor = keyset_page(rows, limit)
        return {"items": [handlers.shape(o) for o in page], "next_cursor": next_cursor}


@blp.route("/<uuid:order_id>")
class OrderById(MethodView):
    @blp.response(200, OrderSchema)
    @blp.alt_response(404, description="No such order (or not yours)")
    @require_scopes("orders:read")
    def get(self, order_id: UUID):
        """One order with its status history."""
        return handlers.shape(handlers.get_order(_db(), authenticate(), order_id))


@blp.route("/<uuid:order_id>/cancel")
class CancelOrder(MethodView):
    @blp.response(200, OrderSchema)
    @blp.alt_response(404, description="No such order (or not yours)")
    @blp.alt_response(409, description="Already shipped")
    @require_scopes("orders:write")
    @blp.arguments(CancelOrderSchema, required=False)
    def post(self, payload, order_id: UUID):
        """Cancel an order that has not shipped yet (cancelling twice is harmless)."""
        order = handlers.cancel_order(_db(), authenticate(), order_id,
                                      (payload or {}).get("reason"), correlation_id())
        return handlers.shape(order)
