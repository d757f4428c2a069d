"""Marshmallow schemas of the HTTP API (the events' data: ``shared/contracts.py``)."""

from __future__ import annotations

from marshmallow import (
    Schema,
    ValidationError,
    fields,
    validate,
    validates,
    validates_schema,
)

from services.inventory.domain import AdjustmentReason, ReservationStatus, StockStatus
from shared.currencies import ISO_4217
from shared.schemas import StrictSchema

SKU_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
MAX_LINES = 100
MAX_QUANTITY = 10_000
MAX_PRICE = 1_000_000
MAX_STOCK = 1_000_000
MAX_NAME_CHARS = 200
MAX_NOTE_CHARS = 500
MAX_QUERY_CHARS = 100



def _sku(**kwargs) -> fields.String:
    return fields.String(validate=validate.Regexp(
        SKU_PATTERN, error="1-64 letters, digits, '.', '_' or '-'."), **kwargs)


def _price(**kwargs) -> fields.Decimal:
    return fields.Decimal(places=None, as_string=True, allow_nan=False,
                          validate=validate.Range(min=0, max=MAX_PRICE), **kwargs)


def _currency(**kwargs) -> fields.String:
    return fields.String(validate=validate.OneOf(sorted(ISO_4217),
                                                 error="Unknown ISO 4217 currency code."), **kwargs)


def _strict_bool(**kwargs) -> fields.Boolean:
    # JSON true/false only: "yes" or 1 for a stock policy is more likely a bug than intent.
    return fields.Boolean(truthy={True}, falsy={False}, **kwargs)


class _TwoDecimals:
    @validates("price")
    def _two_decimals(self, value, **_kwargs):
        if value.as_tuple().exponent < -2:
            raise ValidationError("At most two decimal places.")


# --- products ------------------------------------------------------------------------
class ProductCreateSchema(_TwoDecimals, StrictSchema):
    sku = _sku(required=True)
    name = fields.String(required=True, validate=validate.Length(min=1, max=MAX_NAME_CHARS))
    price = _price(required=True)
    currency = _currency(required=True)
    on_hand = fields.Integer(load_default=0, strict=True,
                             validate=validate.Range(min=0, max=MAX_STOCK),
                             metadata={"description": "Initial stock; change it later with "
                                                      "stock adjustments."})
    allow_backorder = _strict_bool(load_default=False)


class ProductUpdateSchema(_TwoDecimals, StrictSchema):
    """A full replacement of the descriptive fields; stock changes go through adjustments."""

    name = fields.String(required=True, validate=validate.Length(min=1, max=MAX_NAME_CHARS))
    price = _price(required=True)
    currency = _currency(required=True)
    allow_backorder = _strict_bool(required=True)


class StockAdjustmentInSchema(StrictSchema):
    delta = fields.Integer(required=True, strict=True,
                           validate=validate.Range(min=-MAX_STOCK, max=MAX_STOCK),
                           metadata={"description": "Units added (positive) or removed (negative)"})
    reason = fields.String(required=True,
                           validate=validate.OneOf([r.value for r in AdjustmentReason]))
    note = fields.String(load_default=None, allow_none=True,
                         validate=validate.Length(max=MAX_NOTE_CHARS))

    @validates("delta")
    def _non_zero(self, value, **_kwargs):
        if value == 0:
            raise ValidationError("Must not be zero.")


class ListProductsQuerySchema(StrictSchema):
    q = fields.String(validate=validate.Length(min=1, max=MAX_QUERY_CHARS),
                      metadata={"description": "Case-insensitive match on sku or name"})
    stock_status = fields.String(validate=validate.OneOf([s.value for s in StockStatus]))
    currency = _currency()
    limit = fields.Integer(load_default=20, validate=validate.Range(min=1, max=100))
    cursor = fields.String(validate=validate.Length(min=1, max=200))


class ProductSchema(Schema):
    sku = fields.String()
    name = fields.String()
    price = fields.Decimal(as_string=True)
    currency = fields.String()
    on_hand = fields.Integer(metadata={"description": "Units owned and not yet taken by a "
                                                      "confirmed order"})
    reserved = fields.Integer(metadata={"description": "Units held for orders being placed"})
    available = fields.Integer(metadata={"description": "on_hand - reserved"})
    stock_status = fields.String(metadata={"description": "instock, outofstock or onbackorder"})
    allow_backorder = fields.Boolean()
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


class ProductPageSchema(Schema):
    items = fields.List(fields.Nested(ProductSchema))
    next_cursor = fields.String(allow_none=True)


class StockAdjustmentSchema(Schema):
    id = fields.Integer()
    sku = fields.String()
    delta = fields.Integer()
    reason = fields.String()
    note = fields.String(allow_none=True)
    on_hand_after = fields.Integer()
    actor = fields.String()
    created_at = fields.DateTime()
    product = fields.Nested(ProductSchema)


# --- availability and reservations -------------------------------------------------
class LineInSchema(StrictSchema):
    sku = _sku(required=True)
    quantity = fields.Integer(required=True, strict=True,
                              validate=validate.Range(min=1, max=MAX_QUANTITY))


class _LinesSchema(StrictSchema):
    lines = fields.List(fields.Nested(LineInSchema), required=True,
                        validate=validate.Length(min=1, max=MAX_LINES,
                                                 error=f"Between 1 and {MAX_LINES} lines."))

    @validates_schema
    def _unique_skus(self, data, **_kwargs):
        skus = [line["sku"] for line in data.get("lines", [])]
        if len(skus) != len(set(skus)):
            raise ValidationError("Each sku may appear only once.", "lines")


class AvailabilityInSchema(_LinesSchema):
    pass


class ReservationInSchema(_LinesSchema):
    pass


class AvailabilityLineSchema(Schema):
    sku = fields.String()
    name = fields.String()
    requested = fields.Integer()
    available = fields.Integer(metadata={"description": "Units that could be reserved now "
                                                        "(0 when none)"})
    sufficient = fields.Boolean(metadata={"description": "Whether the requested quantity could "
                                                         "be reserved now"})
    unit_price = fields.Decimal(as_string=True)
    currency = fields.String()
    stock_status = fields.String()


class AvailabilitySchema(Schema):
    lines = fields.List(fields.Nested(AvailabilityLineSchema))
    all_available = fields.Boolean()


class ReservationLineSchema(Schema):
    sku = fields.String()
    name = fields.String()
    quantity = fields.Integer()
    unit_price = fields.Decimal(as_string=True)
    line_total = fields.Decimal(as_string=True)


class ReservationSchema(Schema):
    order_id = fields.UUID()
    status = fields.String(metadata={"description": " | ".join(s.value for s in ReservationStatus)})
    currency = fields.String()
    total = fields.Decimal(as_string=True)
    lines = fields.List(fields.Nested(ReservationLineSchema))
    expires_at = fields.DateTime(allow_none=True,
                                 metadata={"description": "When a HELD reservation is released "
                                                          "unless its order is confirmed"})
    created_at = fields.DateTime()
    confirmed_at = fields.DateTime(allow_none=True)
    released_at = fields.DateTime(allow_none=True)
    release_reason = fields.String(allow_none=True)
