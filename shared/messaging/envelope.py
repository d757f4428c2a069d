"""The message envelope (see docs/architecture.md), identical for every event.

``traceparent`` (W3C Trace Context) is the one optional field: an envelope
without it is valid as before, and :meth:`Envelope.to_json` leaves it out
when there is none, so such a body is what it always was. A new envelope
takes the current span's value (:func:`shared.tracecontext.current_traceparent`:
the HTTP request's, or the consumed event's); a value that is not a valid
``traceparent`` is dropped on reading, never a reason to refuse the event.
"""

from __future__ import annotations

import functools
import json
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate

from shared.tracecontext import current_traceparent, parse


class EnvelopeSchema(Schema):
    """Validates an envelope read off a queue (unknown keys are rejected)."""

    event_id = fields.UUID(required=True)
    event_type = fields.String(required=True, validate=validate.Length(min=1, max=100))
    event_version = fields.Integer(required=True, strict=True, validate=validate.Range(min=1))
    occurred_at = fields.AwareDateTime(required=True)
    producer = fields.String(required=True, validate=validate.Length(min=1, max=100))
    correlation_id = fields.String(required=True, allow_none=True, validate=validate.Length(max=200))
    causation_id = fields.UUID(required=True, allow_none=True)
    aggregate_id = fields.String(required=True, validate=validate.Length(min=1, max=128))
    data = fields.Dict(required=True)
    # Optional, checked by from_json (an invalid one is dropped, not refused).
    traceparent = fields.Raw(load_default=None, allow_none=True)


class InvalidEnvelope(ValueError):
    """The message body is not a valid envelope (a permanent failure)."""


@dataclass(frozen=True)
class Envelope:
    """One event as it travels: metadata plus its event-specific ``data``."""

    event_type: str
    aggregate_id: str
    data: dict[str, Any]
    producer: str
    correlation_id: str | None = None
    causation_id: str | None = None
    event_version: int = 1
    event_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    occurred_at: str = field(
        default_factory=lambda: datetime.now(UTC).isoformat(timespec="microseconds").replace(
            "+00:00", "Z")
    )
    traceparent: str | None = field(default_factory=current_traceparent)

    def to_json(self) -> str:
        """Serialize as the SQS message body (without ``traceparent`` when there is none)."""
        body = asdict(self)
        if body["traceparent"] is None:
            del body["traceparent"]
        return json.dumps(body, separators=(",", ":"), sort_keys=True, default=str)

    @classmethod
    def from_json(cls, body: str) -> Envelope:
        """Parse and validate a message body; raise :class:`InvalidEnvelope` (only) if it is not one."""
        # Whatever a hostile body makes the parser raise (RecursionError on deep nesting,
        # TypeError on a missing body, ValueError and UnicodeError on bad text) means the
        # same thing: not an envelope, a permanent failure with the reason.
        try:
            raw = json.loads(body)
        except Exception as exc:
            raise InvalidEnvelope(f"body is not JSON: {type(exc).__name__}: {exc}") from None
        if not isinstance(raw, dict):
            raise InvalidEnvelope("body is not a JSON object")
        try:
            _envelope_schema().load(raw)
        except ValidationError as exc:
            raise InvalidEnvelope(f"invalid envelope: {exc.messages}") from None
        except Exception as exc:  # a field value the validators choke on
            raise InvalidEnvelope(f"invalid envelope: {type(exc).__name__}: {exc}") from None
        return cls(
            event_id=str(raw["event_id"]),
            event_type=raw["event_type"],
            event_version=raw["event_version"],
            occurred_at=raw["occurred_at"],
            producer=raw["producer"],
            correlation_id=raw["correlation_id"],
            causation_id=str(raw["causation_id"]) if raw["causation_id"] else None,
            aggregate_id=raw["aggregate_id"],
            data=raw["data"],
            traceparent=_valid_traceparent(raw.get("traceparent")),
        )

    def caused(self, event_type: str, aggregate_id: str, data: dict[str, Any],
               producer: str) -> Envelope:
        """A new event caused by this one: same correlation, causation = this event."""
        return Envelope(event_type=event_type, aggregate_id=aggregate_id, data=data,
                        producer=producer, correlation_id=self.correlation_id,
                        causation_id=self.event_id)


def _valid_traceparent(value: object) -> str | None:
    context = parse(value)
    return context.traceparent if context is not None else None


@functools.cache
def _envelope_schema() -> EnvelopeSchema:
    # A schema is reusable (and thread-safe) once built; building one per
    # message cost more than validating with it.
    return EnvelopeSchema()
