"""Writing one dead letter: the original body and attributes plus the ``dlq_*`` reason.

The consumer dead-letters a message itself (not SQS redrive) so the DLQ entry
says why: ``dlq_reason`` (an :mod:`shared.messaging.outcomes` reason),
``dlq_error``, ``dlq_source_queue``, ``dlq_consumer``, ``dlq_failed_at``,
``dlq_receive_count``. SQS allows at most 10 message attributes; these 6 come on
top of the producer's 3.
On a FIFO DLQ the message keeps its group, and its deduplication id is the
message id plus its receive count.

A body near the 256 KiB limit (which counts the attributes too) can make that
copy too big; when the DLQ refuses the send as a client error (4xx), it is
sent once more with only the ``dlq_*`` attributes and ``dlq_error`` cut to
:data:`DLQ_ERROR_SHORT_CHARS`, so the reason still travels with it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import structlog

from shared.messaging.outcomes import DeadLetter

log = structlog.get_logger(__name__)

DLQ_ERROR_MAX_CHARS = 1000
DLQ_ERROR_SHORT_CHARS = 100


async def send_to_dlq(client, dlq_url: str | None, message: dict, outcome: DeadLetter, *,
                      source_queue: str, consumer: str, fifo: bool) -> bool:
    """Send ``message`` to the DLQ with the reason; False when it could not be sent."""
    if not dlq_url:
        log.error("no_dlq_configured", consumer=consumer)
        return False
    params = _params(dlq_url, message, outcome, source_queue, consumer, fifo, full=True)
    try:
        await client.send_message(**params)
        return True
    except Exception as exc:
        if not _refused(exc):
            log.error("dlq_send_failed", consumer=consumer, error=str(exc))
            return False
        log.warning("dlq_send_refused_retrying_lean", consumer=consumer, error=str(exc))
    try:
        await client.send_message(**_params(dlq_url, message, outcome, source_queue, consumer,
                                            fifo, full=False))
    except Exception as exc:
        log.error("dlq_send_failed", consumer=consumer, error=str(exc))
        return False
    return True


def _params(dlq_url: str, message: dict, outcome: DeadLetter, source_queue: str, consumer: str,
            fifo: bool, full: bool) -> dict[str, Any]:
    attributes = dict(message.get("MessageAttributes") or {}) if full else {}
    limit = DLQ_ERROR_MAX_CHARS if full else DLQ_ERROR_SHORT_CHARS
    extra = {
        "dlq_reason": outcome.reason,
        "dlq_error": outcome.error[:limit] or "-",
        "dlq_source_queue": source_queue,
        "dlq_consumer": consumer,
        "dlq_failed_at": datetime.now(UTC).isoformat(),
        # How often the source queue had delivered it: operators tell a poison message
        # (dead at once) from one that failed every retry.
        "dlq_receive_count": str((message.get("Attributes") or {}).get("ApproximateReceiveCount", "1")),
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
    return params


def _refused(exc: Exception) -> bool:
    # A 4xx answer: the request itself was refused (size, attribute), not the service down.
    response = getattr(exc, "response", None) or {}
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0
    return 400 <= int(status) < 500
