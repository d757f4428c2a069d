"""HTTP: parse with a schema -> call a handler -> serialize.

Who may call what:

* catalog reads (``GET /v1/products``, ``GET /v1/products/{sku}``,
  ``POST /v1/availability``): any caller with ``orders:read`` (customers
  browsing), ``inventory:reserve`` (the order service) or ``admin``;
* catalog writes (products, stock adjustments): ``admin`` only;
* reservations: ``inventory:reserve`` (the order service's own token) or
  ``admin``. Customers never hold this scope, so they cannot tie up stock
  without placing an order.

:data:`PROBLEMS` is the one table from the domain's refusals to problem documents.
"""

from __future__ import annotations

from uuid import UUID

from flask import current_app
from flask.views import MethodView
from marshmallow import RAISE

from services.inventory import catalog, reservations
from services.inventory.domain import (
    InsufficientStock,
    MixedCurrencies,
    NegativeStock,
    ProductExists,
    ProductInUse,
    RequestedLine,
    ReservationConfirmed,
    ReservationConflict,
    UnknownSku,
)
from services.inventory.schemas import (
    AvailabilityInSchema,
    AvailabilitySchema,
    ListProductsQuerySchema,
    ProductCreateSchema,
    ProductPageSchema,
    ProductSchema,
    ProductUpdateSchema,
    ReservationInSchema,
    ReservationSchema,
    StockAdjustmentInSchema,
    StockAdjustmentSchema,
)
from shared.auth import authenticate, require_any_scope, require_scopes
from shared.errors import ProblemMap
from shared.openapi import response_headers
from shared.pagination import decode_cursor, keyset_page
from shared.web import Blueprint, database

READ_SCOPES = ("orders:read", "inventory:reserve", "admin")
RESERVE_SCOPES = ("inventory:reserve", "admin")

products_blp = Blueprint("products", __name__, url_prefix="/v1/products",
                         description="The catalog: products, prices and stock.")
availability_blp = Blueprint("availability", __name__, url_prefix="/v1/availability",
                             description="What could be reserved now (nothing is held).")
reservations_blp = Blueprint("reservations", __name__, url_prefix="/v1/reservations",
                             description="Stock held for an order, keyed by the order id.")
BLUEPRINTS = (products_blp, availability_blp, reservations_blp)

PROBLEMS = ProblemMap({
    ProductExists: (409, "Product exists", "product-exists"),
    NegativeStock: (409, "Stock would go negative", "stock-would-go-negative"),
    ProductInUse: (409, "Product has held stock", "product-in-use"),
    UnknownSku: (422, "Unknown sku", "unknown-sku"),
    MixedCurrencies: (422, "Mixed currencies", "mixed-currencies"),
    InsufficientStock: (409, "Insufficient stock", "insufficient-stock"),
    ReservationConflict: (409, "Reservation conflict", "reservation-conflict"),
    ReservationConfirmed: (409, "Reservation confirmed", "reservation-confirmed"),
})


def _lines(payload: dict) -> list[RequestedLine]:
    return [RequestedLine(line["sku"], line["quantity"]) for line in payload["lines"]]


@products_blp.route("")
class Products(MethodView):
    @products_blp.response(200, ProductPageSchema)
    @products_blp.alt_response(400, description="Bad cursor")
    @require_any_scope(*READ_SCOPES)
    # A misspelt filter must not silently list everything.
    @products_blp.arguments(ListProductsQuerySchema, location="query", unknown=RAISE)
    def get(self, query):
        """List products, newest first; filter by text, stock status and currency."""
        after = decode_cursor(query["cursor"]) if query.get("cursor") else None
        limit = query["limit"]
        rows = catalog.list_products(database(), query.get("q"), query.get("stock_status"),
                                      query.get("currency"), after, limit + 1)
        page, next_cursor = keyset_page(rows, limit)
        return {"items": page, "next_cursor": next_cursor}

    @products_blp.response(201, ProductSchema, description="Created; Location points at it.",
                           headers=response_headers("Location"))
    @products_blp.alt_response(409, description="A product with this sku exists")
    @require_scopes("admin")
    @products_blp.arguments(ProductCreateSchema)
    def post(self, payload):
        """Add a product (admin)."""
        product = catalog.create_product(database(), payload)
        return product, 201, {"Location": f"/v1/products/{product['sku']}"}


@products_blp.route("/<string:sku>")
class ProductBySku(MethodView):
    @products_blp.response(200, ProductSchema)
    @products_blp.alt_response(404, description="No such product")
    @require_any_scope(*READ_SCOPES)
    def get(self, sku: str):
        """One product with its stock and derived stock status."""
        return catalog.get_product(database(), sku)

    @products_blp.response(200, ProductSchema)
    @products_blp.alt_response(404, description="No such product")
    @products_blp.alt_response(409, description="Backorders off would leave negative stock")
    @require_scopes("admin")
    @products_blp.arguments(ProductUpdateSchema)
    def put(self, payload, sku: str):
        """Replace name, price, currency and backorder policy (admin; stock: adjustments)."""
        return catalog.update_product(database(), sku, payload)

    @products_blp.response(204)
    @products_blp.alt_response(404, description="No such product")
    @products_blp.alt_response(409, description="Units are held for orders being placed")
    @require_scopes("admin")
    def delete(self, sku: str):
        """Delete a product (admin); refused while units are held for orders."""
        catalog.delete_product(database(), sku)
        return None


@products_blp.route("/<string:sku>/stock-adjustments")
class StockAdjustments(MethodView):
    @products_blp.response(201, StockAdjustmentSchema)
    @products_blp.alt_response(404, description="No such product")
    @products_blp.alt_response(409, description="Stock would go negative (no backorders)")
    @require_scopes("admin")
    @products_blp.arguments(StockAdjustmentInSchema)
    def post(self, payload, sku: str):
        """Add or remove units on hand with a reason (admin); kept as an audit trail."""
        return catalog.adjust_stock(database(), authenticate(), sku, payload["delta"],
                                     payload["reason"], payload["note"]), 201


@availability_blp.route("")
class Availability(MethodView):
    @availability_blp.response(200, AvailabilitySchema)
    @availability_blp.alt_response(422, description="Invalid lines or unknown skus")
    @require_any_scope(*READ_SCOPES)
    @availability_blp.arguments(AvailabilityInSchema)
    def post(self, payload):
        """Per line: the quantity available now and its price (nothing is held)."""
        return catalog.check_availability(database(), _lines(payload))


@reservations_blp.route("/<uuid:order_id>")
class ReservationByOrder(MethodView):
    @reservations_blp.response(200, ReservationSchema,
                               description="Created (201) or the same request again (200)")
    @reservations_blp.alt_response(201, schema=ReservationSchema, description="Stock held",
                                   headers=response_headers("Location"), success=True)
    @reservations_blp.alt_response(409, description="Insufficient stock (the short lines with "
                                                    "their available quantity), or this order "
                                                    "already holds different lines")
    @reservations_blp.alt_response(422, description="Invalid lines, unknown skus or mixed currencies")
    @require_any_scope(*RESERVE_SCOPES)
    @reservations_blp.arguments(ReservationInSchema)
    def put(self, payload, order_id: UUID):
        """Hold stock for an order: every line or none; idempotent by order id."""
        settings = current_app.extensions["inventory"]
        result = reservations.reserve(database(), reservations.Reserve(
            order_id=order_id, lines=_lines(payload), requested_by=authenticate().subject,
            ttl_s=settings.reservation_ttl_s))
        body = reservations.shape_reservation(result.reservation)
        if result.created:
            return body, 201, {"Location": f"/v1/reservations/{order_id}"}
        return body

    @reservations_blp.response(200, ReservationSchema, description="Released (or released before)")
    @reservations_blp.alt_response(404, description="No reservation for this order")
    @reservations_blp.alt_response(409, description="The order was placed: cancel it instead")
    @require_any_scope(*RESERVE_SCOPES)
    def delete(self, order_id: UUID):
        """Give back the stock of a checkout that did not commit its order (e.g. payment down)."""
        return reservations.shape_reservation(reservations.abandon(database(), order_id))

    @reservations_blp.response(200, ReservationSchema)
    @reservations_blp.alt_response(404, description="No reservation for this order")
    @require_any_scope(*RESERVE_SCOPES)
    def get(self, order_id: UUID):
        """The reservation of an order: status, lines with prices, expiry."""
        return reservations.shape_reservation(reservations.get_reservation(database(), order_id))
