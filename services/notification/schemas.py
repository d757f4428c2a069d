"""Marshmallow schemas of the HTTP API (the events' data: ``shared/contracts.py``)."""

from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validate, validates

from services.notification.domain import TOPICS
from services.notification.tickets import TICKET_PATTERN
from shared.schemas import StrictSchema

MAX_NAME_CHARS = 100
MIN_SECRET_CHARS = 16
MAX_SECRET_CHARS = 128
SECRET_PATTERN = r"^[\x21-\x7e]+$"  # printable ASCII, no spaces: survives copy and paste
USER_STATUSES = ("active", "paused")  # "disabled" is set by the service, with a reason



# --- webhooks --------------------------------------------------------------------------------
class SubscriptionInSchema(StrictSchema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=MAX_NAME_CHARS))
    topic = fields.String(required=True, validate=validate.OneOf(
        TOPICS, error=f"Must be one of: {', '.join(TOPICS)}."))
    delivery_url = fields.String(required=True, validate=validate.Length(min=1, max=2000))
    secret = fields.String(load_default=None, validate=[
        validate.Length(min=MIN_SECRET_CHARS, max=MAX_SECRET_CHARS),
        validate.Regexp(SECRET_PATTERN, error="Printable ASCII without spaces.")],
        metadata={"description": "HMAC signing secret; generated when absent. Shown only in "
                                 "the response that sets it."})
    status = fields.String(load_default="active", validate=validate.OneOf(
        USER_STATUSES, error="Must be active or paused (disabled is set by the service)."))

    @validates("name")
    def _printable(self, value, **_kwargs):
        if not value.isprintable() or not value.strip():
            raise ValidationError("Must be printable and not blank.")


class SubscriptionSchema(Schema):
    id = fields.UUID()
    owner_id = fields.String()
    all_customers = fields.Boolean(metadata={
        "description": "True for an admin's subscription: it receives every customer's events."})
    name = fields.String()
    topic = fields.String()
    delivery_url = fields.String()
    status = fields.String(metadata={"description": "active, paused or disabled"})
    disabled_reason = fields.String(allow_none=True)
    disabled_at = fields.DateTime(allow_none=True)
    consecutive_failures = fields.Integer()
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


class SubscriptionWithSecretSchema(SubscriptionSchema):
    secret = fields.String(metadata={"description": "Store it now: it is never shown again."})


class ListQuerySchema(StrictSchema):
    limit = fields.Integer(load_default=20, validate=validate.Range(min=1, max=100))
    cursor = fields.String(validate=validate.Length(min=1, max=200))


class SubscriptionPageSchema(Schema):
    items = fields.List(fields.Nested(SubscriptionSchema))
    next_cursor = fields.String(allow_none=True)


class AttemptSchema(Schema):
    attempt = fields.Integer()
    attempted_at = fields.DateTime()
    outcome = fields.String(metadata={
        "description": "delivered, retry, gone, breaker_open or blocked"})
    status_code = fields.Integer(allow_none=True)
    duration_ms = fields.Integer(allow_none=True)
    response_excerpt = fields.String(allow_none=True)
    error = fields.String(allow_none=True)


class DeliverySchema(Schema):
    id = fields.UUID(metadata={"description": "The Webhook-Id header of every attempt"})
    event_id = fields.UUID()
    topic = fields.String()
    status = fields.String(metadata={"description": "pending, delivered, failed or cancelled"})
    attempts = fields.Integer()
    next_attempt_at = fields.DateTime(allow_none=True)
    last_status_code = fields.Integer(allow_none=True)
    last_error = fields.String(allow_none=True)
    created_at = fields.DateTime()
    delivered_at = fields.DateTime(allow_none=True)
    attempt_log = fields.List(fields.Nested(AttemptSchema), data_key="attempt_log")


class DeliveryPageSchema(Schema):
    items = fields.List(fields.Nested(DeliverySchema))
    next_cursor = fields.String(allow_none=True)


# Notification ids are bigints: a larger number is no id (and would overflow the query).
MAX_NOTIFICATION_ID = 2**63 - 1


# --- notifications ---------------------------------------------------------------------------
class StreamQuerySchema(StrictSchema):
    order_id = fields.UUID(metadata={"description": "Only this order's events"})
    last_event_id = fields.Integer(validate=validate.Range(min=0, max=MAX_NOTIFICATION_ID), metadata={
        "description": "Resume after this event id (same as the Last-Event-ID header)"})
    ticket = fields.String(validate=validate.Regexp(TICKET_PATTERN, error="Not a stream ticket."),
                           metadata={"description": "A single-use stream ticket (POST "
                                     "/v1/notifications/stream/tickets), for clients that cannot "
                                     "send Authorization (EventSource). Instead of a bearer token."})


class TicketRequestSchema(StrictSchema):
    order_id = fields.UUID(load_default=None, allow_none=True,
                           metadata={"description": "Bind the ticket to this order's stream"})


class TicketSchema(Schema):
    ticket = fields.String(metadata={"description": "Use once, as ?ticket= on the stream"})
    expires_in = fields.Integer(metadata={"description": "Seconds it stays valid"})


class HistoryQuerySchema(StrictSchema):
    order_id = fields.UUID()
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
    before = fields.Integer(validate=validate.Range(min=1, max=MAX_NOTIFICATION_ID), metadata={
        "description": "Page cursor: return notifications with a smaller id"})


class NotificationSchema(Schema):
    id = fields.Integer()
    order_id = fields.String()
    type = fields.String()
    data = fields.Dict(attribute="payload")
    created_at = fields.DateTime()


class NotificationPageSchema(Schema):
    items = fields.List(fields.Nested(NotificationSchema))
    next_before = fields.Integer(allow_none=True)
