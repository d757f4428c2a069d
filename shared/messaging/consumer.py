"""The consumer runtime: long polling, inbox dedup, per-group order, retries, DLQ.

For every received batch (up to 10 messages):

* messages are grouped by ``MessageGroupId`` and each group is handled
  sequentially in received order, groups in parallel;
* each message is handled in ONE database transaction that also claims
  ``(consumer, event_id)`` in the inbox (:mod:`shared.messaging.inbox`); a
  duplicate is acknowledged without running the handler again;
* a transient failure leaves the message on the queue with its visibility set
  to an exponential backoff from ``ApproximateReceiveCount``; later messages of
  the same group in the batch are not handled (they come back after it);
  on the last allowed receive the message goes to the DLQ with the reason;
* a permanent failure (not an envelope, unknown event type, invalid data,
  :class:`PermanentError`) is sent to the DLQ at once with the reason as
  message attributes, then deleted, and the group goes on;
* a heartbeat extends the visibility of messages still being worked on;
* on stop (SIGTERM) no new batch is received, in-flight handlers finish,
  unstarted messages are released (visibility 0).

Each message ends in one typed outcome (:mod:`shared.messaging.outcomes`);
metrics and logs are middleware hooks around it (:mod:`shared.messaging.middleware`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from marshmallow import ValidationError

from shared.backoff import backoff_delay
from shared.messaging import inbox
from shared.messaging.envelope import Envelope, InvalidEnvelope
from shared.messaging.middleware import Hooks, LoggingMiddleware, Middleware
from shared.messaging.outcomes import (
    INVALID_ENVELOPE,
    MAX_RECEIVES_EXCEEDED,
    PERMANENT_ERROR,
    UNKNOWN_EVENT_TYPE,
    DeadLetter,
    Duplicate,
    Handled,
    Outcome,
    PermanentError,
    Retry,
)
from shared.messaging.sqs import (
    MAX_BATCH_ENTRIES,
    MAX_VISIBILITY_TIMEOUT_S,
    MAX_WAIT_TIME_S,
    dlq_name_from_redrive,
    physical_name,
)
from shared.messaging.topology import QueueSpec

log = structlog.get_logger(__name__)

Handler = Callable[[Any, Envelope], None]  # (cursor of the inbox transaction, envelope)

# SQS allows at most 10 message attributes; we add at most 5 to the original 3.
DLQ_ERROR_MAX_CHARS = 1000
# maxReceiveCount is at most 1000, so the exponent never needs clamping below it.
MAX_RECEIVE_EXPONENT = 1000

__all__ = ["Consumer", "ConsumerConfig", "Handler", "PermanentError"]


@dataclass(frozen=True)
class ConsumerConfig:
    """Tunables; defaults suit production, tests shrink the waits."""

    wait_time_s: int = MAX_WAIT_TIME_S
    max_messages: int = MAX_BATCH_ENTRIES
    pollers: int = 2
    retry_base_s: float = 2.0
    retry_cap_s: float = 900.0
    heartbeat_every_s: float | None = None   # default: a third of the visibility timeout
    error_pause_s: float = 1.0               # after a failed receive (broker down)

    def __post_init__(self) -> None:
        if not 0 <= self.wait_time_s <= MAX_WAIT_TIME_S:
            raise ValueError("wait_time_s must be 0..20")
        if not 1 <= self.max_messages <= MAX_BATCH_ENTRIES:
            raise ValueError("max_messages must be 1..10")


class Consumer:
    """Consumes one queue for one service with the handlers given per event type."""

    def __init__(self, name: str, spec: QueueSpec, db, handlers: dict[str, Handler],
                 sqs_client_factory: Callable[[], Any], queue_prefix: str = "",
                 config: ConsumerConfig | None = None, executor: ThreadPoolExecutor | None = None,
                 middleware: Iterable[Middleware] | None = None):
        self.name = name
        self.spec = spec
        self.db = db
        self.handlers = handlers
        self.client_factory = sqs_client_factory
        self.prefix = queue_prefix
        self.config = config or ConsumerConfig()
        self.executor = executor or ThreadPoolExecutor(max_workers=MAX_BATCH_ENTRIES,
                                                       thread_name_prefix=name)
        self.queue_url: str | None = None
        self.dlq_url: str | None = None
        self.max_receive_count = spec.max_receive_count
        self.visibility_timeout = spec.visibility_timeout_s
        # Logging by default; the worker adds metrics (shared.worker.default_middleware).
        self.hooks = Hooks((LoggingMiddleware(),) if middleware is None else middleware)

    # -- lifecycle ----------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, then drain and return."""
        async with self.client_factory() as client:
            await self._resolve_queues(client, stop)
            if stop.is_set():
                return
            log.info("consumer_started", consumer=self.name, queue=self.spec.name,
                     pollers=self.config.pollers)
            await asyncio.gather(*(self._poll(client, stop) for _ in range(self.config.pollers)))
        log.info("consumer_stopped", consumer=self.name)

    async def _resolve_queues(self, client, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                self.queue_url = (await client.get_queue_url(
                    QueueName=physical_name(self.prefix, self.spec.name)))["QueueUrl"]
                attrs = (await client.get_queue_attributes(
                    QueueUrl=self.queue_url,
                    AttributeNames=["RedrivePolicy", "VisibilityTimeout"]))["Attributes"]
                self.visibility_timeout = int(attrs.get("VisibilityTimeout",
                                                        self.visibility_timeout))
                dlq_name = dlq_name_from_redrive(attrs)
                if dlq_name:
                    self.dlq_url = (await client.get_queue_url(QueueName=dlq_name))["QueueUrl"]
                    # The deployed redrive policy is what SQS enforces; dead-letter on our
                    # last allowed receive (with the reason) before SQS does it silently.
                    self.max_receive_count = int(
                        json.loads(attrs["RedrivePolicy"]).get("maxReceiveCount",
                                                               self.max_receive_count))
                return
            except Exception as exc:
                log.warning("consumer_queue_lookup_failed", consumer=self.name, error=str(exc))
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.config.error_pause_s)

    async def _poll(self, client, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                response = await client.receive_message(
                    QueueUrl=self.queue_url,
                    MaxNumberOfMessages=self.config.max_messages,
                    WaitTimeSeconds=self.config.wait_time_s,
                    MessageSystemAttributeNames=["All"],
                    MessageAttributeNames=["All"],
                )
            except Exception as exc:
                log.warning("consumer_receive_failed", consumer=self.name, error=str(exc))
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.config.error_pause_s)
                continue
            messages = response.get("Messages", [])
            if not messages:
                continue
            if stop.is_set():
                await self._change_visibility(client, messages, 0)
                return
            await self.handle_batch(client, messages, stop)

    # -- one batch ------------------------------------------------------------
    async def handle_batch(self, client, messages: list[dict], stop: asyncio.Event) -> None:
        """Handle one received batch as described in the module docstring."""
        groups: OrderedDict[str, list[dict]] = OrderedDict()
        for message in messages:
            group = message.get("Attributes", {}).get("MessageGroupId") or message["MessageId"]
            groups.setdefault(group, []).append(message)
        in_flight = {m["ReceiptHandle"]: m for m in messages}
        heartbeat = asyncio.create_task(self._heartbeat(client, in_flight))
        to_delete: list[dict] = []
        try:
            await asyncio.gather(*(self._handle_group(client, group, in_flight, to_delete, stop)
                                   for group in groups.values()))
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
        await self._delete(client, to_delete)

    async def _handle_group(self, client, group: list[dict], in_flight: dict,
                            to_delete: list[dict], stop: asyncio.Event) -> None:
        for index, message in enumerate(group):
            if stop.is_set():
                await self._release(client, group[index:], in_flight, 0)
                return
            loop = asyncio.get_running_loop()
            outcome = await loop.run_in_executor(self.executor, self._process, message)
            if isinstance(outcome, Handled | Duplicate):
                to_delete.append(message)
                in_flight.pop(message["ReceiptHandle"], None)
            elif isinstance(outcome, DeadLetter):
                moved = await self._send_to_dlq(client, message, outcome)
                in_flight.pop(message["ReceiptHandle"], None)
                if moved:
                    to_delete.append(message)
                    self.hooks.emit("after_dead_letter", self, message, outcome)
                else:  # DLQ unreachable: leave it to SQS redrive; it still blocks its group
                    await self._release(client, group[index + 1:], in_flight, 0)
                    return
            else:  # retry: back off this message; it blocks the rest of its group meanwhile
                await self._release(client, [message], in_flight, outcome.delay_s)
                # Visible at once but not deliverable while the failed message is in flight:
                # SQS then redelivers the group from its head, in order. Giving them the same
                # backoff instead lets an emulator (moto) redeliver them ahead of it.
                await self._release(client, group[index + 1:], in_flight, 0)
                return

    # -- per message (runs in a worker thread) ---------------------------------
    def _process(self, message: dict) -> Outcome:
        self.hooks.emit("before_handle", self, message)
        try:
            event = Envelope.from_json(message["Body"])
        except InvalidEnvelope as exc:
            return self._decided(message, self._dead(message, INVALID_ENVELOPE, str(exc)))
        with structlog.contextvars.bound_contextvars(
                event_id=event.event_id, event_type=event.event_type,
                correlation_id=event.correlation_id, consumer=self.name):
            return self._decided(message, self._handle(message, event))

    def _handle(self, message: dict, event: Envelope) -> Outcome:
        handler = self.handlers.get(event.event_type)
        if handler is None:
            return self._dead(message, UNKNOWN_EVENT_TYPE, event.event_type, event)
        started = time.perf_counter()
        try:
            with self.db.transaction() as cur:
                if not inbox.claim(cur, self.name, event):
                    return Duplicate(event)
                handler(cur, event)
        except (PermanentError, ValidationError) as exc:
            return self._dead(message, PERMANENT_ERROR, f"{type(exc).__name__}: {exc}", event)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            receive_count = _receive_count(message)
            if receive_count >= self.max_receive_count:
                return self._dead(message, MAX_RECEIVES_EXCEEDED, error, event)
            return Retry(event, self._backoff(receive_count), error, receive_count)
        return Handled(event, time.perf_counter() - started)

    def _decided(self, message: dict, outcome: Outcome) -> Outcome:
        if isinstance(outcome, Retry):
            self.hooks.emit("on_retry", self, message, outcome)
        elif isinstance(outcome, DeadLetter):
            self.hooks.emit("on_dead_letter", self, message, outcome)
        self.hooks.emit("after_handle", self, message, outcome)
        return outcome

    @staticmethod
    def _dead(message: dict, reason: str, error: str, event: Envelope | None = None) -> DeadLetter:
        return DeadLetter(reason, error, event, message.get("MessageId"))

    def _backoff(self, receive_count: int) -> int:
        # Whole seconds (SQS visibility); the n-th receive waits base * 2^(n-1).
        cap = min(self.config.retry_cap_s, MAX_VISIBILITY_TIMEOUT_S)
        return int(backoff_delay(receive_count - 1, self.config.retry_base_s, cap,
                                 max_exponent=MAX_RECEIVE_EXPONENT))

    # -- SQS calls -------------------------------------------------------------
    async def _send_to_dlq(self, client, message: dict, outcome: DeadLetter) -> bool:
        if not self.dlq_url:
            log.error("no_dlq_configured", consumer=self.name)
            return False
        attributes = dict(message.get("MessageAttributes", {}))
        extra = {
            "dlq_reason": outcome.reason,
            "dlq_error": outcome.error[:DLQ_ERROR_MAX_CHARS] or "-",
            "dlq_source_queue": self.spec.name,
            "dlq_consumer": self.name,
            "dlq_failed_at": datetime.now(UTC).isoformat(),
        }
        for key, value in extra.items():
            attributes[key] = {"DataType": "String", "StringValue": value}
        params: dict[str, Any] = {"QueueUrl": self.dlq_url, "MessageBody": message["Body"],
                                  "MessageAttributes": attributes}
        if self.spec.fifo:
            attrs = message.get("Attributes", {})
            params["MessageGroupId"] = attrs.get("MessageGroupId") or message["MessageId"]
            params["MessageDeduplicationId"] = (
                f"{message['MessageId']}-{attrs.get('ApproximateReceiveCount', '1')}")
        try:
            await client.send_message(**params)
        except Exception as exc:
            log.error("dlq_send_failed", consumer=self.name, error=str(exc))
            return False
        return True

    async def _release(self, client, messages: list[dict], in_flight: dict, seconds: int) -> None:
        for message in messages:
            in_flight.pop(message["ReceiptHandle"], None)
        await self._change_visibility(client, messages, seconds)

    async def _change_visibility(self, client, messages: list[dict], seconds: int) -> None:
        for start in range(0, len(messages), MAX_BATCH_ENTRIES):
            chunk = messages[start:start + MAX_BATCH_ENTRIES]
            try:
                await client.change_message_visibility_batch(
                    QueueUrl=self.queue_url,
                    Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"],
                              "VisibilityTimeout": seconds} for i, m in enumerate(chunk)])
            except Exception as exc:  # they come back after the queue's own timeout
                log.warning("change_visibility_failed", consumer=self.name, error=str(exc))

    async def _delete(self, client, messages: list[dict]) -> None:
        for start in range(0, len(messages), MAX_BATCH_ENTRIES):
            chunk = messages[start:start + MAX_BATCH_ENTRIES]
            try:
                result = await client.delete_message_batch(
                    QueueUrl=self.queue_url,
                    Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                             for i, m in enumerate(chunk)])
                if result.get("Failed"):
                    # Redelivery is harmless: the inbox acknowledges it as a duplicate.
                    log.warning("delete_partially_failed", consumer=self.name,
                                failed=len(result["Failed"]))
            except Exception as exc:
                log.warning("delete_failed", consumer=self.name, error=str(exc))

    async def _heartbeat(self, client, in_flight: dict) -> None:
        every = self.config.heartbeat_every_s or max(1.0, self.visibility_timeout / 3)
        while True:
            await asyncio.sleep(every)
            if in_flight:
                await self._change_visibility(client, list(in_flight.values()),
                                              self.visibility_timeout)


def _receive_count(message: dict) -> int:
    return int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
