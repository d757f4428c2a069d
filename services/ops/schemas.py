"""Marshmallow schemas of the ops API."""

from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from shared.admin.schemas import OutboxRetriedSchema as ServiceOutboxRetriedSchema
from shared.schemas import StrictSchema

MAX_PEEK = 100
MAX_REPLAY_IDS = 1000
MAX_REPLAY_LIMIT = 100_000
NAME = validate.Length(1, 200)


class DeadLetterQuerySchema(StrictSchema):
    limit = fields.Integer(load_default=10, validate=validate.Range(1, MAX_PEEK))
    event_type = fields.String(load_default=None, validate=NAME)
    order_id = fields.String(load_default=None, validate=NAME)
    reason = fields.String(load_default=None, validate=NAME)


class ReplaySchema(StrictSchema):
    all = fields.Boolean(load_default=False,
                         metadata={"description": "Replay every dead letter (no filter)."})
    message_ids = fields.List(fields.String(validate=NAME), load_default=None,
                              validate=validate.Length(1, MAX_REPLAY_IDS))
    event_type = fields.String(load_default=None, validate=NAME)
    order_id = fields.String(load_default=None, validate=NAME)
    reason = fields.String(load_default=None, validate=NAME)
    limit = fields.Integer(load_default=None, validate=validate.Range(1, MAX_REPLAY_LIMIT),
                           metadata={"description": "Move at most this many."})

    @validates_schema
    def _all_or_a_filter(self, data, **_kwargs):
        filtered = any(data.get(k) for k in ("message_ids", "event_type", "order_id", "reason",
                                             "limit"))
        if data.get("all") == filtered:
            raise ValidationError("Give `all: true`, or a filter (message_ids, event_type, "
                                  "order_id, reason, limit), not both.", "all")


class PurgeSchema(StrictSchema):
    confirm = fields.String(required=True, validate=NAME,
                            metadata={"description": "The name of the DLQ to empty."})


class AuditQuerySchema(StrictSchema):
    limit = fields.Integer(load_default=50, validate=validate.Range(1, 500))
    action = fields.String(load_default=None,
                           validate=validate.OneOf(("dlq.replay", "dlq.purge", "outbox.retry")))


class QueueSchema(Schema):
    name = fields.String()
    fifo = fields.Boolean()
    visible = fields.Integer()
    in_flight = fields.Integer()
    delayed = fields.Integer()
    dlq_name = fields.String()
    dlq_visible = fields.Integer()
    dlq_in_flight = fields.Integer()
    oldest_age_s = fields.Float(allow_none=True, metadata={
        "description": "Not given by SQS's API on any backend; on AWS read the CloudWatch "
                       "metric ApproximateAgeOfOldestMessage."})


class QueuesSchema(Schema):
    queues = fields.List(fields.Nested(QueueSchema))


class DeadLetterSchema(Schema):
    message_id = fields.String()
    group_id = fields.String(allow_none=True)
    reason = fields.String(allow_none=True)
    error = fields.String(allow_none=True)
    source_queue = fields.String(allow_none=True)
    consumer = fields.String(allow_none=True)
    failed_at = fields.String(allow_none=True)
    receive_count = fields.Integer(allow_none=True)
    event_type = fields.String(allow_none=True)
    event_id = fields.String(allow_none=True)
    order_id = fields.String(allow_none=True)
    body = fields.String()


class DeadLettersSchema(Schema):
    queue = fields.String()
    dlq = fields.String()
    oldest_failed_at = fields.String(allow_none=True)
    dead_letters = fields.List(fields.Nested(DeadLetterSchema))


class ReplayedSchema(Schema):
    queue = fields.String()
    method = fields.String(metadata={"description": "`move-task` (SQS moves them "
                                                    "asynchronously) or `portable`."})
    moved = fields.Integer(allow_none=True, metadata={"description": "None for a move task."})
    audit_id = fields.Integer()


class PurgedSchema(Schema):
    queue = fields.String()
    dlq = fields.String()
    purged_about = fields.Integer()
    audit_id = fields.Integer()


class OutboxRetriedSchema(ServiceOutboxRetriedSchema):
    audit_id = fields.Integer()


class ServiceAnswerSchema(Schema):
    service = fields.String()
    data = fields.Raw(allow_none=True, metadata={"description": "The service's /v1/admin answer."})
    error = fields.String(allow_none=True, metadata={"description": "Why it could not be had."})


class ServiceAnswersSchema(Schema):
    services = fields.List(fields.Nested(ServiceAnswerSchema))


class StatusSchema(Schema):
    queues = fields.List(fields.Nested(QueueSchema))
    queues_error = fields.String(allow_none=True)
    outbox = fields.List(fields.Nested(ServiceAnswerSchema))
    consumers = fields.List(fields.Nested(ServiceAnswerSchema))
    breakers = fields.List(fields.Nested(ServiceAnswerSchema))
    blocked_groups = fields.List(fields.Nested(ServiceAnswerSchema))


class AuditEntrySchema(Schema):
    id = fields.Integer()
    at = fields.DateTime()
    actor = fields.String()
    client_id = fields.String(allow_none=True)
    action = fields.String()
    target = fields.String()
    parameters = fields.Dict()
    outcome = fields.String()
    result = fields.Dict()
    request_id = fields.String(allow_none=True)


class AuditLogSchema(Schema):
    entries = fields.List(fields.Nested(AuditEntrySchema))
