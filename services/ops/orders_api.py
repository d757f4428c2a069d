"""HTTP: order look-up for operators (scope ``admin``), over the owning services' APIs."""

from __future__ import annotations

from uuid import UUID

from flask.views import MethodView
from marshmallow import Schema, fields, validate

from services.ops import orders
from services.ops.api import _ctx, _operator, _rate
from shared.auth import require_scopes
from shared.ratelimit import rate_limit
from shared.schemas import StrictSchema
from shared.web import Blueprint

orders_blp = Blueprint("ops-orders", __name__, url_prefix="/v1/ops/orders",
                       description="Find an order and see its history, shipment and notifications "
                                   "(scope admin).")

PROBLEM_RULES = {orders.PeerRefused: (422, "Validation failed", "validation-error")}


class OrderSearchSchema(StrictSchema):
    # Status names are the order service's (checked there), so a new one needs no change here.
    status = fields.String(load_default=None, validate=validate.Length(1, 64))
    limit = fields.Integer(load_default=20, validate=validate.Range(1, 100))
    cursor = fields.String(load_default=None, validate=validate.Length(1, 200))


class OrderPageSchema(Schema):
    items = fields.List(fields.Dict(), metadata={"description": "The order service's orders"})
    next_cursor = fields.String(allow_none=True)


class OrderViewSchema(Schema):
    order = fields.Dict(metadata={"description": "The order with its status history"})
    shipments = fields.List(fields.Dict(), metadata={"description": "With their carrier events"})
    notifications = fields.List(fields.Dict(), metadata={"description": "Oldest first"})
    unavailable = fields.List(fields.Dict(), metadata={
        "description": "Services that could not be asked: [{service, error}]"})


@orders_blp.route("")
class OrderSearch(MethodView):
    @rate_limit(_rate, key=_operator)
    @orders_blp.response(200, OrderPageSchema)
    @orders_blp.alt_response(422, description="A filter the order service refuses")
    @orders_blp.alt_response(503, description="The order service cannot be reached")
    @require_scopes("admin")
    @orders_blp.arguments(OrderSearchSchema, location="query")
    def get(self, query):
        """Every customer's orders, newest first; filter by status."""
        return orders.search_orders(_ctx(), query["status"], query["limit"], query["cursor"])


@orders_blp.route("/<uuid:order_id>")
class OrderView(MethodView):
    @rate_limit(_rate, key=_operator)
    @orders_blp.response(200, OrderViewSchema)
    @orders_blp.alt_response(404, description="No such order")
    @orders_blp.alt_response(503, description="The order service cannot be reached")
    @require_scopes("admin")
    def get(self, order_id: UUID):
        """One order: its status history, shipments with carrier events, notifications."""
        return orders.order_view(_ctx(), str(order_id))
