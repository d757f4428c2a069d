"""Marshmallow schemas of the HTTP API (the events' data: ``shared/contracts.py``)."""

from __future__ import annotations

import re

import pycountry
from marshmallow import (
    Schema,
    ValidationError,
    fields,
    validate,
    validates_schema,
)

from services.order.domain import OrderStatus
from shared.schemas import StrictSchema

MAX_LINES = 100
MAX_QUANTITY = 10_000
SKU_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


COUNTRY_PATTERN = r"^[A-Z]{2}$"
COUNTRY_ERROR = "Must be an ISO 3166-1 alpha-2 code, e.g. DE."


def _assigned_country(code: str) -> None:
    """Two upper-case letters that ISO 3166-1 assigns to a country (not ``ZZ``, ``XX``, ``AA``...).

    Runs after the pattern (upper case only, as the API has always said: ``de``
    is refused, not folded), which is kept so the OpenAPI document shows it; a
    code the pattern already refused is not reported twice. The list is
    pycountry's copy of the ISO 3166-1 table, so a new or withdrawn code follows
    a dependency bump, not an edit here.
    """
    if re.match(COUNTRY_PATTERN, code) and pycountry.countries.get(alpha_2=code) is None:
        raise ValidationError(COUNTRY_ERROR)


class AddressSchema(StrictSchema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    line1 = fields.String(required=True, validate=validate.Length(min=1, max=200))
    line2 = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=200))
    city = fields.String(required=True, validate=validate.Length(min=1, max=100))
    region = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=100))
    postal_code = fields.String(required=True, validate=validate.Length(min=1, max=20))
    country = fields.String(required=True, validate=[
        validate.Regexp(COUNTRY_PATTERN, error=COUNTRY_ERROR), _assigned_country])


class OrderLineInSchema(StrictSchema):
    """A line as the customer asks for it: what and how many. The price is the catalog's."""

    sku = fields.String(required=True, validate=validate.Regexp(
        SKU_PATTERN, error="1-64 letters, digits, '.', '_' or '-'."))
    quantity = fields.Integer(required=True, strict=True,
                              validate=validate.Range(min=1, max=MAX_QUANTITY))


class CreateOrderSchema(StrictSchema):
    """Prices, currency and totals come from the catalog when the stock is reserved.

    A ``unit_price`` or ``currency`` in the request is rejected (422, unknown
    field) rather than ignored, so a client that believes it sets a price finds
    out at once.
    """

    items = fields.List(fields.Nested(OrderLineInSchema), required=True,
                        validate=validate.Length(min=1, max=MAX_LINES,
                                                 error="Between 1 and 100 lines."))
    shipping_address = fields.Nested(AddressSchema, required=True)
    customer_email = fields.Email(required=True, validate=validate.Length(max=254))

    @validates_schema
    def _unique_skus(self, data, **_kwargs):
        skus = [line["sku"] for line in data.get("items", [])]
        if len(skus) != len(set(skus)):
            raise ValidationError("Each sku may appear only once.", "items")


class CancelOrderSchema(StrictSchema):
    reason = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=500))


class ListOrdersQuerySchema(StrictSchema):
    status = fields.String(validate=validate.OneOf([s.value for s in OrderStatus]))
    limit = fields.Integer(load_default=20, validate=validate.Range(min=1, max=100))
    cursor = fields.String(validate=validate.Length(min=1, max=200))


class OrderLineOutSchema(Schema):
    sku = fields.String()
    quantity = fields.Integer()
    unit_price = fields.Decimal(as_string=True)
    line_total = fields.Decimal(as_string=True)


class HistoryEntrySchema(Schema):
    status = fields.String(metadata={"description": "Order status after this entry"})
    previous_status = fields.String(allow_none=True)
    event = fields.String(metadata={"description": "What caused it, e.g. delivery.shipped"})
    applied = fields.Boolean(metadata={"description": "False when a stale event was ignored"})
    note = fields.String(allow_none=True)
    occurred_at = fields.DateTime()


class ShipmentInfoSchema(Schema):
    shipment_id = fields.String(allow_none=True)
    carrier = fields.String(allow_none=True)
    tracking_number = fields.String(allow_none=True)


class PaymentInfoSchema(Schema):
    """What the storefront needs to confirm the payment with Stripe.js (no card data here)."""

    payment_intent_id = fields.String(allow_none=True)
    client_secret = fields.String(allow_none=True, metadata={
        "description": "The PaymentIntent's client secret, shown while the order awaits payment"})
    amount_minor = fields.Integer(allow_none=True, metadata={
        "description": "The amount to pay in minor units of the currency (JPY has none)"})
    currency = fields.String()
    paid_at = fields.DateTime(allow_none=True)
    expires_at = fields.DateTime(allow_none=True, metadata={
        "description": "An unpaid order is cancelled then (ORDER_PAYMENT_TTL_S after it was placed)"})


class OrderSchema(Schema):
    id = fields.UUID()
    customer_id = fields.String()
    customer_email = fields.String()
    status = fields.String()
    currency = fields.String()
    items = fields.List(fields.Nested(OrderLineOutSchema))
    total = fields.Decimal(as_string=True)
    shipping_address = fields.Nested(AddressSchema)
    shipment = fields.Nested(ShipmentInfoSchema, allow_none=True)
    payment = fields.Nested(PaymentInfoSchema, allow_none=True)
    cancel_reason = fields.String(allow_none=True)
    created_at = fields.DateTime()
    updated_at = fields.DateTime()
    history = fields.List(fields.Nested(HistoryEntrySchema))


class OrderSummarySchema(OrderSchema):
    """An order in a list (no history)."""

    class Meta:
        exclude = ("history",)


class StuckOrdersQuerySchema(StrictSchema):
    older_than_s = fields.Float(validate=validate.Range(min=1, max=365 * 86400), metadata={
        "description": "Not changed for this long (default ORDER_STUCK_AFTER_S)"})
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=500))


class StuckOrdersSchema(Schema):
    older_than_s = fields.Float()
    items = fields.List(fields.Nested(OrderSummarySchema))


class OrderPageSchema(Schema):
    items = fields.List(fields.Nested(OrderSummarySchema))
    next_cursor = fields.String(allow_none=True)
