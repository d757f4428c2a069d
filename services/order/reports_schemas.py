"""Marshmallow schemas of the order service's reports."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from marshmallow import Schema, ValidationError, fields, post_load, validate, validates_schema

from services.order.reports import PERIODS
from shared.schemas import StrictSchema

DEFAULT_WINDOW = timedelta(days=30)
# The widest window one request may ask for: a day-by-day report over it is ~3700 rows per currency.
MAX_WINDOW = timedelta(days=3660)


def _utc(value: datetime) -> datetime:
    """A naive datetime is read as UTC (the buckets are UTC too)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


class SalesQuerySchema(StrictSchema):
    period = fields.String(load_default="day", validate=validate.OneOf(PERIODS))
    from_ = fields.DateTime(data_key="from", load_default=None,
                            metadata={"description": "Inclusive; ISO 8601 (UTC when no offset). "
                                                     "Default: 30 days before `to`."})
    to = fields.DateTime(load_default=None,
                         metadata={"description": "Exclusive; ISO 8601. Default: now."})

    @post_load
    def _defaults(self, data, **_kwargs):
        end = _utc(data["to"]) if data["to"] else datetime.now(UTC)
        start = _utc(data["from_"]) if data["from_"] else end - DEFAULT_WINDOW
        return {"period": data["period"], "from_": start, "to": end}

    @validates_schema
    def _window(self, data, **_kwargs):
        start, end = data.get("from_"), data.get("to")
        if start is None or end is None:
            return
        start, end = _utc(start), _utc(end)
        if start >= end:
            raise ValidationError("Must be before `to`.", "from")
        if end - start > MAX_WINDOW:
            raise ValidationError(f"The window may span at most {MAX_WINDOW.days} days.", "from")


class StatusTotalsSchema(Schema):
    total = fields.Integer(required=True)
    by_status = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True)


class SalesBucketSchema(Schema):
    period_start = fields.DateTime(required=True)
    currency = fields.String(required=True)
    orders = fields.Integer(required=True)
    items = fields.Integer(required=True)
    revenue = fields.Decimal(as_string=True, required=True)


class SalesReportSchema(Schema):
    period = fields.String(required=True)
    from_ = fields.DateTime(data_key="from", attribute="from", required=True)
    to = fields.DateTime(required=True)
    buckets = fields.List(fields.Nested(SalesBucketSchema), required=True)


class CurrencyValueSchema(Schema):
    currency = fields.String(required=True)
    orders = fields.Integer(required=True)
    total = fields.Decimal(as_string=True, required=True)


class CustomerStatsSchema(Schema):
    customer_id = fields.String(required=True)
    orders = fields.Integer(required=True, metadata={"description": "Every order placed."})
    cancelled_or_unsold = fields.Integer(required=True,
                                         metadata={"description": "Of which are not a sale."})
    lifetime_value = fields.List(fields.Nested(CurrencyValueSchema), required=True)
    last_order_at = fields.DateTime(allow_none=True)
    last_order_id = fields.UUID(allow_none=True)
