"""What handling one received message came to: one of four typed outcomes.

* :class:`Handled` — the handler ran and its transaction (with the inbox
  row) committed; the message is deleted.
* :class:`Duplicate` — the inbox already held ``(consumer, event_id)``: the
  event was handled before, the handler did not run; the message is deleted.
* :class:`Retry` — a transient failure; the message becomes visible again
  after ``delay_s`` and blocks the rest of its group until then.
* :class:`DeadLetter` — retrying cannot help (or the receives are used up);
  the message goes to the DLQ with ``reason`` and ``error`` as attributes.

``kind`` is the short name used as a metric label and in logs:
``done``, ``duplicate``, ``retry``, ``dlq``. ``event`` is None only for a
dead letter whose body was not an envelope.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from shared.messaging.envelope import Envelope

# Dead-letter reasons (the ``dlq_reason`` message attribute and metric label).
INVALID_ENVELOPE = "invalid_envelope"
UNKNOWN_EVENT_TYPE = "unknown_event_type"
PERMANENT_ERROR = "permanent_error"
MAX_RECEIVES_EXCEEDED = "max_receives_exceeded"


class PermanentError(Exception):
    """Raised by a handler when retrying cannot help (bad data, impossible request)."""


@dataclass(frozen=True)
class Handled:
    """The handler ran and committed."""

    kind: ClassVar[str] = "done"
    event: Envelope
    duration_s: float


@dataclass(frozen=True)
class Duplicate:
    """Seen before (inbox hit): acknowledged without running the handler."""

    kind: ClassVar[str] = "duplicate"
    event: Envelope


@dataclass(frozen=True)
class Retry:
    """A transient failure: visible again after ``delay_s`` seconds."""

    kind: ClassVar[str] = "retry"
    event: Envelope
    delay_s: int
    error: str
    receive_count: int


@dataclass(frozen=True)
class DeadLetter:
    """Sent to the dead-letter queue with its reason."""

    kind: ClassVar[str] = "dlq"
    reason: str
    error: str
    event: Envelope | None = None
    message_id: str | None = None


Outcome = Handled | Duplicate | Retry | DeadLetter
