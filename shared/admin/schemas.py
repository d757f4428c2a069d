"""Marshmallow schemas of the per-service admin API."""

from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from shared.schemas import StrictSchema

# outbox.id is a bigserial: a larger id is no row, and PostgreSQL would refuse it.
MAX_ROW_ID = 2**63 - 1

MAX_LIST = 500
MAX_RETRY_IDS = 1000


class OutboxQuerySchema(StrictSchema):
    limit = fields.Integer(load_default=50, validate=validate.Range(1, MAX_LIST))
    queue = fields.String(load_default=None, validate=validate.Length(1, 80))


class OutboxRetrySchema(StrictSchema):
    ids = fields.List(fields.Integer(validate=validate.Range(1, MAX_ROW_ID)), load_default=None,
                      validate=validate.Length(1, MAX_RETRY_IDS),
                      metadata={"description": "Failed rows to retry now."})
    all_failed = fields.Boolean(load_default=False,
                                metadata={"description": "Retry every failed row instead."})

    @validates_schema
    def _one_of(self, data, **_kwargs):
        if bool(data.get("ids")) == bool(data.get("all_failed")):
            raise ValidationError("Give either `ids` or `all_failed: true`.", "ids")


class BlockedQuerySchema(StrictSchema):
    min_age_s = fields.Float(load_default=0.0, validate=validate.Range(0, 30 * 24 * 3600))
    limit = fields.Integer(load_default=100, validate=validate.Range(1, MAX_LIST))


class OutboxQueueSchema(Schema):
    queue = fields.String()
    pending = fields.Integer()
    oldest_pending_s = fields.Float()
    failed = fields.Integer()
    max_attempts = fields.Integer()


class OutboxRowSchema(Schema):
    id = fields.Integer()
    event_id = fields.String()
    queue = fields.String()
    aggregate_id = fields.String()
    event_type = fields.String()
    attempts = fields.Integer()
    last_error = fields.String(allow_none=True)
    created_at = fields.DateTime()
    next_attempt_at = fields.DateTime()


class OutboxReportSchema(Schema):
    service = fields.String()
    queues = fields.List(fields.Nested(OutboxQueueSchema))
    failed = fields.List(fields.Nested(OutboxRowSchema))


class OutboxRetriedSchema(Schema):
    service = fields.String()
    retried = fields.List(fields.Integer())


class SlowHeadSchema(Schema):
    message_id = fields.String()
    group_id = fields.String(allow_none=True)
    in_flight_s = fields.Float()


class BreakerSchema(Schema):
    state = fields.String()
    failures = fields.Integer()
    fail_max = fields.Integer()
    reset_timeout_s = fields.Float()


class ConsumerSchema(Schema):
    consumer = fields.String()
    worker = fields.String()
    alive = fields.Boolean()
    started_at = fields.DateTime()
    beat_at = fields.DateTime()
    last_message_at = fields.DateTime(allow_none=True)
    handled = fields.Integer()
    failed = fields.Integer()
    dead_lettered = fields.Integer()
    slow_heads = fields.List(fields.Nested(SlowHeadSchema))
    breakers = fields.Dict(keys=fields.String(), values=fields.Nested(BreakerSchema))


class ConsumersSchema(Schema):
    service = fields.String()
    consumers = fields.List(fields.Nested(ConsumerSchema))


class BlockedGroupSchema(Schema):
    consumer = fields.String()
    group_id = fields.String(metadata={"description": "The FIFO message group: the order id."})
    kind = fields.String(metadata={"description": "`failing` (its head failed and waits for a "
                                                  "retry) or `slow` (its head is in flight long)."})
    blocked_since = fields.DateTime(allow_none=True)
    blocked_for_s = fields.Float()
    last_failed_at = fields.DateTime(allow_none=True)
    message_id = fields.String(allow_none=True)
    event_id = fields.String(allow_none=True)
    event_type = fields.String(allow_none=True)
    receive_count = fields.Integer(allow_none=True)
    retry_in_s = fields.Integer(allow_none=True)
    last_error = fields.String(allow_none=True)


class BlockedGroupsSchema(Schema):
    service = fields.String()
    groups = fields.List(fields.Nested(BlockedGroupSchema))


class WorkerBreakersSchema(Schema):
    worker = fields.String()
    breakers = fields.Dict(keys=fields.String(), values=fields.Nested(BreakerSchema))


class BreakersSchema(Schema):
    service = fields.String()
    breakers = fields.Dict(keys=fields.String(), values=fields.Nested(BreakerSchema),
                           metadata={"description": "This API process's breakers."})
    workers = fields.List(fields.Nested(WorkerBreakersSchema),
                          metadata={"description": "Each live worker process's breakers."})
