"""Marshmallow schemas of the HTTP API (the events' data: ``shared/contracts.py``)."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from services.delivery.domain import CARRIER_STATUSES, ShipmentStatus
from shared.schemas import StrictSchema


class ShipmentEventInSchema(StrictSchema):
    status = fields.String(required=True, validate=validate.OneOf([s.value for s in CARRIER_STATUSES]))
    occurred_at = fields.AwareDateTime(load_default=None, allow_none=True,
                                       metadata={"description": "When the carrier saw it; "
                                                                "defaults to now"})
    location = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=200))
    note = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=500))


class ShipmentCancellationInSchema(StrictSchema):
    reason = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=500),
                           metadata={"description": "The order's cancel reason, kept with the "
                                                    "shipment's history"})


class ShipmentCancellationSchema(Schema):
    order_id = fields.UUID()
    status = fields.String(metadata={"description": "Always CANCELLED: no shipment of this order "
                                                    "will leave the warehouse"})
    shipment_id = fields.UUID(allow_none=True, metadata={
        "description": "The cancelled shipment; null when the order had none yet (none will be "
                       "created)"})


class ListShipmentsQuerySchema(StrictSchema):
    order_id = fields.UUID()
    status = fields.String(validate=validate.OneOf([s.value for s in ShipmentStatus]))
    limit = fields.Integer(load_default=20, validate=validate.Range(min=1, max=100))
    cursor = fields.String(validate=validate.Length(min=1, max=200))


class ShipmentEventOutSchema(Schema):
    status = fields.String()
    previous_status = fields.String(allow_none=True)
    source = fields.String()
    location = fields.String(allow_none=True)
    note = fields.String(allow_none=True)
    occurred_at = fields.DateTime()


class ShipmentSchema(Schema):
    id = fields.UUID()
    order_id = fields.UUID()
    customer_id = fields.String()
    carrier = fields.String()
    tracking_number = fields.String()
    status = fields.String()
    created_at = fields.DateTime()
    updated_at = fields.DateTime()
    events = fields.List(fields.Nested(ShipmentEventOutSchema))


class ShipmentSummarySchema(ShipmentSchema):
    class Meta:
        exclude = ("events",)


class ShipmentPageSchema(Schema):
    items = fields.List(fields.Nested(ShipmentSummarySchema))
    next_cursor = fields.String(allow_none=True)
