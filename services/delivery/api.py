"""HTTP: parse with a schema -> call a handler -> serialize; refusals become problems (:data:`PROBLEMS`)."""

from __future__ import annotations

from uuid import UUID

from flask.views import MethodView

from services.delivery import handlers
from services.delivery.domain import InvalidTransition, ShipmentUnderway
from services.delivery.schemas import (
    ListShipmentsQuerySchema,
    ShipmentCancellationInSchema,
    ShipmentCancellationSchema,
    ShipmentEventInSchema,
    ShipmentPageSchema,
    ShipmentSchema,
)
from shared.auth import authenticate, require_any_scope, require_scopes
from shared.errors import ProblemMap
from shared.pagination import decode_cursor, keyset_page
from shared.web import Blueprint, correlation_id, database

blp = Blueprint("shipments", __name__, url_prefix="/v1/shipments",
                description="Shipments, tracking and carrier status callbacks.")

# Customers (orders:read) see their own shipments, carriers their carrier's, admins all
# (services.delivery.domain.reach_of); a shipment out of reach is a 404 like a missing one.
READ_SCOPES = ("orders:read", "shipments:read", "shipments:write", "admin")

# The order service's own token (services/order/delivery.py) stops a shipment before a paid
# order is cancelled; customers and carriers never hold this scope.
CANCEL_SCOPE = "shipments:cancel"

cancellations_blp = Blueprint("shipment-cancellations", __name__,
                              url_prefix="/v1/shipment-cancellations",
                              description="The order service stops an order's shipment before "
                                          "it cancels the order.")
BLUEPRINTS = (blp, cancellations_blp)

PROBLEMS = ProblemMap({
    InvalidTransition: (409, "Invalid status transition", "invalid-transition"),
    ShipmentUnderway: (409, "Shipment already underway", "shipment-underway"),
})


@blp.route("")
class Shipments(MethodView):
    @blp.response(200, ShipmentPageSchema)
    @blp.alt_response(400, description="Bad cursor")
    @require_any_scope(*READ_SCOPES)
    @blp.arguments(ListShipmentsQuerySchema, location="query")
    def get(self, query):
        """List shipments, newest first; filter by order_id and status."""
        principal = authenticate()
        after = decode_cursor(query["cursor"]) if query.get("cursor") else None
        limit = query["limit"]
        rows = handlers.list_shipments(database(), principal, query.get("order_id"),
                                       query.get("status"), after, limit + 1)
        page, next_cursor = keyset_page(rows, limit)
        return {"items": page, "next_cursor": next_cursor}


@blp.route("/<uuid:shipment_id>")
class ShipmentById(MethodView):
    @blp.response(200, ShipmentSchema)
    @blp.alt_response(404, description="No such shipment (or not yours)")
    @require_any_scope(*READ_SCOPES)
    def get(self, shipment_id: UUID):
        """One shipment with its status events."""
        return handlers.get_shipment(database(), authenticate(), shipment_id)


@blp.route("/<uuid:shipment_id>/events")
class ShipmentEvents(MethodView):
    @blp.response(200, ShipmentSchema, description="Recorded (a repeated status is a no-op)")
    @blp.alt_response(404, description="No such shipment (or another carrier's)")
    @blp.alt_response(409, description="Transition not allowed from the current status")
    @require_scopes("shipments:write")
    @blp.arguments(ShipmentEventInSchema)
    def post(self, payload, shipment_id: UUID):
        """Carrier callback: report SHIPPED, IN_TRANSIT, OUT_FOR_DELIVERY, DELIVERED or FAILED."""
        return handlers.post_carrier_event(database(), authenticate(), shipment_id, payload,
                                           correlation_id())


@cancellations_blp.route("/<uuid:order_id>")
class ShipmentCancellation(MethodView):
    @cancellations_blp.response(200, ShipmentCancellationSchema,
                                description="No shipment of this order will leave the warehouse "
                                            "(cancelled now, before, or none created yet); the "
                                            "same answer again on a retry")
    @cancellations_blp.alt_response(409, description="The carrier has picked the parcel up (or "
                                                     "delivered it): `status_now` is the "
                                                     "shipment's status; nothing changed")
    @require_scopes(CANCEL_SCOPE)
    @cancellations_blp.arguments(ShipmentCancellationInSchema, required=False)
    def put(self, payload, order_id: UUID):
        """Stop the order's shipment before the order is cancelled (the order service's call)."""
        return handlers.stop_shipment(database(), authenticate(), order_id,
                                      (payload or {}).get("reason"), correlation_id())
