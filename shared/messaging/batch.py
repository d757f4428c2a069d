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

Deletes are coalesced across groups: a finished group's delete waits
:data:`DELETE_LINGER_S` for the groups finishing at about the same time, and a
group that finishes while another's ``DeleteMessageBatch`` is on the wire does
not send its own; the next call takes every finished message waiting by then
(at most 10, one batch). A batch of ten one-message groups then costs one
delete call instead of ten (botocore's request building and signing is most
of a worker's CPU), and a group's messages still go as soon as it is over
plus the linger, not at the end of the batch's slowest group.

Failed deletes and visibility changes are logged and left to redelivery, which
the inbox makes harmless (docs/sqs-portability.md, rule 10).
"""

from __future__ import annotations

import asyncio
import enum

import structlog

from shared.messaging.sqs import MAX_BATCH_ENTRIES

log = structlog.get_logger(__name__)

# How long a finished group's delete waits for other groups of its batch to join it:
# short beside a handler's commit, long enough for groups running in parallel threads.
DELETE_LINGER_S = 0.01


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
        self._to_delete: set[str] = set()  # finished and waiting for a delete call

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

    async def delete(self, messages: list[dict] | None = None, linger_s: float = 0.0) -> None:
        """Delete the finished ones among ``messages`` (default: every finished one).

        Waits ``linger_s`` first for other groups to add theirs. Returns once they
        were deleted (or their delete failed), possibly by a call another group
        made for them together with its own.
        """
        mine = {m["ReceiptHandle"] for m in (self.messages if messages is None else messages)
                if self.state(m) is State.FINISHED}
        if not mine:
            return
        self._to_delete |= mine
        if linger_s > 0 and len(self._to_delete) < MAX_BATCH_ENTRIES:
            await asyncio.sleep(linger_s)
        async with self._lock:
            if not mine & self._to_delete:
                return  # a call made while we waited for the lock took ours along
            targets = [m for m in self.messages if m["ReceiptHandle"] in self._to_delete
                       and self.state(m) is State.FINISHED]
            self._to_delete.clear()
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

    async def release_each(self, pairs: list[tuple[dict, int]]) -> None:
        """Like :meth:`release`, with a visibility per message, in one call per 10 messages."""
        async with self._lock:
            targets = [(m, seconds) for m, seconds in pairs if self.state(m) is State.IN_FLIGHT]
            for message, _ in targets:
                self.states[message["ReceiptHandle"]] = State.RELEASED
            await change_visibilities(self.client, self.queue_url, targets, self.consumer)

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
    await change_visibilities(client, queue_url, [(m, seconds) for m in messages], consumer)


async def change_visibilities(client, queue_url: str, pairs: list[tuple[dict, int]],
                              consumer: str) -> None:
    """``ChangeMessageVisibilityBatch`` (a timeout per message) in chunks of 10; failures logged."""
    for start in range(0, len(pairs), MAX_BATCH_ENTRIES):
        chunk = pairs[start:start + MAX_BATCH_ENTRIES]
        try:
            result = await client.change_message_visibility_batch(
                QueueUrl=queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"],
                          "VisibilityTimeout": seconds} for i, (m, seconds) in enumerate(chunk)])
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
