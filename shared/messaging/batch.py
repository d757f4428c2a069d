"""One received batch: the state of each of its messages, and every SQS call that changes it.

Each message of a batch is in exactly one state:

* ``IN_FLIGHT`` — received, its outcome not decided yet;
* ``FINISHED`` — handled, a duplicate, or in the DLQ: it only waits for its delete;
* ``RELEASED`` — its visibility was set by us (0, or a retry backoff): no longer ours;
* ``DELETED`` — gone from the queue.

The heartbeat (:meth:`Batch.heartbeat`) extends ``IN_FLIGHT`` *and* ``FINISHED``
messages: a finished message whose delete is still pending or failed must not
reappear while slower groups of the same batch run (it would be handled, or
dead-lettered, a second time). It never touches a released or deleted one.

Every visibility change and delete of a batch goes through one lock, so a
heartbeat extension already on the wire completes before a release is sent:
the release is always the last word, and cannot be undone by an extension that
arrives after it.

Failed deletes and visibility changes are logged and left to redelivery, which
the inbox makes harmless (docs/sqs-portability.md, rule 10).
"""

from __future__ import annotations

import asyncio
import enum

import structlog

from shared.messaging.sqs import MAX_BATCH_ENTRIES

log = structlog.get_logger(__name__)


class State(enum.Enum):
    """Where one message of a batch stands."""

    IN_FLIGHT = "in_flight"
    FINISHED = "finished"
    RELEASED = "released"
    DELETED = "deleted"


# The heartbeat keeps these invisible: still ours, not yet deleted.
HELD = (State.IN_FLIGHT, State.FINISHED)


class Batch:
    """The messages of one receive and what has been done with each."""

    def __init__(self, client, queue_url: str, messages: list[dict], visibility_timeout: int,
                 consumer: str):
        self.client = client
        self.queue_url = queue_url
        self.visibility_timeout = visibility_timeout
        self.consumer = consumer
        self.messages = list(messages)
        self.states: dict[str, State] = {m["ReceiptHandle"]: State.IN_FLIGHT for m in messages}
        self._lock = asyncio.Lock()

    def state(self, message: dict) -> State:
        """The state of ``message``."""
        return self.states[message["ReceiptHandle"]]

    def in_state(self, *states: State) -> list[dict]:
        """This batch's messages in any of ``states``, in received order."""
        return [m for m in self.messages if self.states[m["ReceiptHandle"]] in states]

    def finish(self, message: dict) -> None:
        """``message`` has its outcome; it stays extended until :meth:`delete` removes it."""
        if self.state(message) is State.IN_FLIGHT:
            self.states[message["ReceiptHandle"]] = State.FINISHED

    async def delete(self, messages: list[dict] | None = None) -> None:
        """Delete the finished ones among ``messages`` (default: every finished one)."""
        async with self._lock:
            targets = [m for m in (self.messages if messages is None else messages)
                       if self.state(m) is State.FINISHED]
            failed = await delete_messages(self.client, self.queue_url, targets, self.consumer)
            for message in targets:
                if message["ReceiptHandle"] not in failed:
                    self.states[message["ReceiptHandle"]] = State.DELETED

    async def release(self, messages: list[dict], seconds: int) -> None:
        """Set the visibility of the in-flight ones among ``messages``; they are no longer ours."""
        async with self._lock:
            targets = [m for m in messages if self.state(m) is State.IN_FLIGHT]
            for message in targets:
                self.states[message["ReceiptHandle"]] = State.RELEASED
            await change_visibility(self.client, self.queue_url, targets, seconds, self.consumer)

    async def extend(self) -> None:
        """Push back the visibility of every message still held by this batch."""
        async with self._lock:
            held = self.in_state(*HELD)
            await change_visibility(self.client, self.queue_url, held, self.visibility_timeout,
                                    self.consumer)

    async def heartbeat(self, every_s: float) -> None:
        """Extend the held messages every ``every_s`` until cancelled."""
        while True:
            await asyncio.sleep(every_s)
            await self.extend()


async def change_visibility(client, queue_url: str, messages: list[dict], seconds: int,
                            consumer: str) -> None:
    """``ChangeMessageVisibilityBatch`` in chunks of 10; failures are logged."""
    for start in range(0, len(messages), MAX_BATCH_ENTRIES):
        chunk = messages[start:start + MAX_BATCH_ENTRIES]
        try:
            result = await client.change_message_visibility_batch(
                QueueUrl=queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"],
                          "VisibilityTimeout": seconds} for i, m in enumerate(chunk)])
            if result and result.get("Failed"):
                log.warning("change_visibility_partially_failed", consumer=consumer,
                            failed=len(result["Failed"]))
        except Exception as exc:  # they come back after the queue's own timeout
            log.warning("change_visibility_failed", consumer=consumer, error=str(exc))


async def delete_messages(client, queue_url: str, messages: list[dict], consumer: str) -> set[str]:
    """``DeleteMessageBatch`` in chunks of 10; return the receipt handles not deleted."""
    failed: set[str] = set()
    for start in range(0, len(messages), MAX_BATCH_ENTRIES):
        chunk = messages[start:start + MAX_BATCH_ENTRIES]
        try:
            result = await client.delete_message_batch(
                QueueUrl=queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                         for i, m in enumerate(chunk)])
        except Exception as exc:
            log.warning("delete_failed", consumer=consumer, error=str(exc))
            failed.update(m["ReceiptHandle"] for m in chunk)
            continue
        if result and result.get("Failed"):
            # Redelivery is harmless: the inbox acknowledges it as a duplicate.
            log.warning("delete_partially_failed", consumer=consumer, failed=len(result["Failed"]))
            failed.update(chunk[int(entry["Id"])]["ReceiptHandle"] for entry in result["Failed"])
    return failed
