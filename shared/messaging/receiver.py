"""Receiving for a consumer: batches normally, one message at a time after a bad receive.

A receive can fail because of one message in it: moto, for one, stores a body
it cannot encode (a lone surrogate) and then fails every receive that would
return it, after it has already marked every message of that receive as in
flight (docs/sqs-portability.md, moto section). Retried as a batch, such a
receive hides the good messages beside the bad one again and again until
their receive count runs out and the broker's redrive moves them, silently, to
the DLQ.

So after a receive that failed, or that botocore only got through by retrying
(``ResponseMetadata.RetryAttempts`` > 0: an earlier attempt of the same call
failed, and may have hidden messages), the consumer *isolates*: it receives
one message at a time until :data:`ISOLATION_CLEAN_RECEIVES` receives in a row
went through cleanly. A failing single receive then costs only the offending
message (which the broker's redrive eventually moves once its receives are
used up), and every message that can be received at all is handled, or
dead-lettered by its receipt handle with the reason, as usual. The state is
shared by the consumer's pollers: one bad receive isolates all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog

log = structlog.get_logger(__name__)

# Clean one-message receives in a row before batches come back.
ISOLATION_CLEAN_RECEIVES = 10

# The system attributes the runtime reads (group order, backoff and DLQ ids, lag), not
# "All": every received message's attributes are parsed by botocore on every receive.
SYSTEM_ATTRIBUTES = ("MessageGroupId", "ApproximateReceiveCount", "SentTimestamp",
                     "ApproximateFirstReceiveTimestamp")


class Receiver:
    """``ReceiveMessage`` for one consumer, with the isolation described above."""

    def __init__(self, consumer: str, max_messages: int, wait_time_s: int, error_pause_s: float):
        self.consumer = consumer
        self.max_messages = max_messages
        self.wait_time_s = wait_time_s
        self.error_pause_s = error_pause_s
        self.clean_needed = 0  # > 0 while isolating
        self.last_answered_at: float | None = None  # Unix time; the worker exports it

    @property
    def isolating(self) -> bool:
        """True while receives take one message at a time."""
        return self.clean_needed > 0

    def _isolate(self, why: str, error: str | None = None) -> None:
        if not self.isolating:
            log.warning("consumer_receive_isolating", consumer=self.consumer, why=why,
                        error=error)
        self.clean_needed = ISOLATION_CLEAN_RECEIVES

    async def receive(self, client, queue_url: str, stop: asyncio.Event) -> list[dict]:
        """One receive; [] after a failure (logged, after a pause) or when nothing came."""
        try:
            response = await client.receive_message(
                QueueUrl=queue_url,
                MaxNumberOfMessages=1 if self.isolating else self.max_messages,
                WaitTimeSeconds=self.wait_time_s,
                MessageSystemAttributeNames=list(SYSTEM_ATTRIBUTES),
                MessageAttributeNames=["All"],
            )
        except Exception as exc:
            log.warning("consumer_receive_failed", consumer=self.consumer, error=str(exc))
            self._isolate("receive_failed", str(exc))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), self.error_pause_s)
            return []
        self.last_answered_at = time.time()
        if not isinstance(response, dict):
            self._isolate("unreadable_response")
            return []
        if (response.get("ResponseMetadata") or {}).get("RetryAttempts"):
            self._isolate("receive_retried")
        elif self.isolating:
            self.clean_needed -= 1
            if not self.isolating:
                log.info("consumer_receive_batches_again", consumer=self.consumer)
        messages = response.get("Messages") or []
        # A message without a receipt handle can be neither deleted nor dead-lettered by us.
        usable = [m for m in messages if isinstance(m, dict) and m.get("ReceiptHandle")]
        if len(usable) != len(messages):
            log.error("consumer_unusable_messages", consumer=self.consumer,
                      count=len(messages) - len(usable))
            self._isolate("unusable_messages")
        return [_normalized(m) for m in usable]


def _normalized(message: dict) -> dict:
    # Every later step reads these keys; a backend may leave them out.
    message.setdefault("MessageId", message["ReceiptHandle"])
    if not isinstance(message.get("Attributes"), dict):
        message["Attributes"] = {}
    if not isinstance(message.get("MessageAttributes"), dict):
        message["MessageAttributes"] = {}
    return message
