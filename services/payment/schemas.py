"""Marshmallow schemas of the payment HTTP API (the events' data: ``shared/contracts.py``)."""

from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from shared.currencies import ISO_4217
from shared.schemas import StrictSchema

MAX_LINES = 100
MAX_QUANTITY = 10_000
MAX_UNIT_PRICE = 10_000_000  # far above any catalog price; keeps the arithmetic bounded
SKU_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
# Stripe's object ids: a short prefix, an underscore, then letters and digits (pm_card_visa too).
PAYMENT_METHOD_PATTERN = r"^pm_[A-Za-z0-9_]{1,200}$"


class PaymentLineInSchema(StrictSchema):
    sku = fields.String(required=True, validate=validate.Regexp(SKU_PATTERN))
    quantity = fields.Integer(required=True, strict=True,
                              validate=validate.Range(min=1, max=MAX_QUANTITY))
    unit_price = fields.Decimal(required=True, as_string=True, allow_nan=False,
                                validate=validate.Range(min=0, max=MAX_UNIT_PRICE))


class CreatePaymentSchema(StrictSchema):
    """What the order service sends at checkout: the order's lines at catalog prices.

    The amount is not in it: the payment service computes it from the lines.
    """

    customer_id = fields.String(required=True, validate=validate.Length(min=1, max=128))
    currency = fields.String(required=True, validate=validate.OneOf(sorted(ISO_4217)))
    lines = fields.List(fields.Nested(PaymentLineInSchema), required=True,
                        validate=validate.Length(min=1, max=MAX_LINES))


class ConfirmPaymentSchema(StrictSchema):
    """A PaymentMethod id made by Stripe.js in the browser (or a test id such as pm_card_visa).

    Card numbers never reach this service; a field other than this one is refused.
    """

    payment_method = fields.String(required=True, validate=validate.Regexp(
        PAYMENT_METHOD_PATTERN, error="A Stripe PaymentMethod id (pm_...)."))


class RefundLineSchema(StrictSchema):
    sku = fields.String(required=True, validate=validate.Regexp(SKU_PATTERN))
    quantity = fields.Integer(required=True, strict=True,
                              validate=validate.Range(min=1, max=MAX_QUANTITY))


class RefundSchema(StrictSchema):
    """Exactly one of: ``full`` (everything left), ``lines`` (those units), ``amount_minor``."""

    full = fields.Boolean(load_default=False)
    lines = fields.List(fields.Nested(RefundLineSchema), validate=validate.Length(min=1, max=MAX_LINES))
    amount_minor = fields.Integer(strict=True, validate=validate.Range(min=1),
                                  metadata={"description": "Minor units of the order's currency"})

    @validates_schema
    def _exactly_one(self, data, **_kwargs):
        given = [name for name in ("lines", "amount_minor") if name in data]
        if data.get("full"):
            given.append("full")
        if len(given) != 1:
            raise ValidationError("Give exactly one of full, lines or amount_minor.", "_schema")
        skus = [line["sku"] for line in data.get("lines", [])]
        if len(skus) != len(set(skus)):
            raise ValidationError("Each sku may appear only once.", "lines")


class PaymentLineOutSchema(Schema):
    sku = fields.String()
    quantity = fields.Integer()
    unit_amount = fields.Integer(metadata={"description": "Minor units"})


class PaymentHistorySchema(Schema):
    status = fields.String()
    previous_status = fields.String(allow_none=True)
    action = fields.String()
    amount_minor = fields.Integer(allow_none=True)
    note = fields.String(allow_none=True)
    recorded_at = fields.DateTime()


class RefundLineOutSchema(Schema):
    sku = fields.String()
    quantity = fields.Integer()


class RefundOutSchema(Schema):
    id = fields.UUID()
    order_id = fields.UUID()
    amount_minor = fields.Integer()
    lines = fields.List(fields.Nested(RefundLineOutSchema))
    status = fields.String()
    created_at = fields.DateTime()
    completed_at = fields.DateTime(allow_none=True)


class PaymentSchema(Schema):
    order_id = fields.UUID()
    status = fields.String()
    currency = fields.String()
    amount_minor = fields.Integer(metadata={"description": "Minor units (JPY has none)"})
    amount_captured = fields.Integer()
    amount_refunded = fields.Integer()
    lines = fields.List(fields.Nested(PaymentLineOutSchema))
    payment_intent_id = fields.String(attribute="intent_id", allow_none=True)
    client_secret = fields.String(allow_none=True, metadata={
        "description": "For Stripe.js to confirm the payment in the browser; shown while it "
                       "awaits payment"})
    last_error = fields.String(allow_none=True)
    created_at = fields.DateTime()
    updated_at = fields.DateTime()
    history = fields.List(fields.Nested(PaymentHistorySchema))
    refunds = fields.List(fields.Nested(RefundOutSchema))
