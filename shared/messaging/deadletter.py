"""Writing one dead letter: the original body and attributes plus the ``dlq_*`` reason.

The consumer dead-letters a message itself (not SQS redrive) so the DLQ entry
says why: ``dlq_reason`` (an :mod:`shared.messaging.outcomes` reason),
``dlq_error``, ``dlq_source_queue``, ``dlq_consumer``, ``dlq_failed_at``. SQS
allows at most 10 message attributes; these 5 come on top of the producer's 3.
On a FIFO DLQ the message keeps its group, and its deduplication id is the
message id plus its receive count.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import structlog

from shared.messaging.outcomes import DeadLetter

log = structlog.get_logger(__name__)

DLQ_ERROR_MAX_CHARS = 1000


async def send_to_dlq(client, dlq_url: str | None, message: dict, outcome: DeadLetter, *,
                      source_queue: str, consumer: str, fifo: bool) -> bool:
    """Send ``message`` to the DLQ with the reason; False when it could not be sent."""
    if not dlq_url:
        log.error("no_dlq_configured", consumer=consumer)
        return False
    attributes = dict(message.get("MessageAttributes") or {})
    extra = {
        "dlq_reason": outcome.reason,
        "dlq_error": outcome.error[:DLQ_ERROR_MAX_CHARS] or "-",
        "dlq_source_queue": source_queue,
        "dlq_consumer": consumer,
        "dlq_failed_at": datetime.now(UTC).isoformat(),
    }
    for key, value in extra.items():
        attributes[key] = {"DataType": "String", "StringValue": value}
    params: dict[str, Any] = {"QueueUrl": dlq_url, "MessageBody": message["Body"],
                              "MessageAttributes": attributes}
    if fifo:
        attrs = message.get("Attributes") or {}
        params["MessageGroupId"] = attrs.get("MessageGroupId") or message["MessageId"]
        params["MessageDeduplicationId"] = (
            f"{message['MessageId']}-{attrs.get('ApproximateReceiveCount', '1')}")
    try:
        await client.send_message(**params)
    except Exception as exc:
        log.error("dlq_send_failed", consumer=consumer, error=str(exc))
        return False
    return True
