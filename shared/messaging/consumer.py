"""The consumer runtime: long polling, inbox dedup, per-group order, retries, DLQ.

For every received batch (up to 10 messages; one at a time after a bad receive,
see :mod:`shared.messaging.receiver`):

* messages are grouped by ``MessageGroupId`` and each group is handled
  sequentially in received order, groups in parallel;
* each message is handled in ONE database transaction that also claims
  ``(consumer, event_id)`` in the inbox (:mod:`shared.messaging.inbox`); a
  duplicate is acknowledged without running the handler again;
* a transient failure leaves the message on the queue with its visibility set
  to an exponential backoff from ``ApproximateReceiveCount``; later messages of
  the same group in the batch are not handled (they come back after it);
  on the last allowed receive the message goes to the DLQ with the reason;
* a permanent failure (a body that does not parse as an envelope, whatever the
  parser raised; unknown event type; invalid data; :class:`PermanentError`) is
  sent to the DLQ at once with the reason as message attributes, then deleted
  at once, and the group goes on;
* handled messages are deleted as soon as their group is over; until then,
  and while they are in flight, a heartbeat extends their visibility; a
  released message (backoff, or 0) is never extended again
  (:mod:`shared.messaging.batch`);
* on stop (SIGTERM) no new batch is received, in-flight handlers finish,
  unstarted messages are released (visibility 0).

Batch mode (``ConsumerConfig.transaction_per_batch``, ``CONSUMER_BATCH_TRANSACTION``):
the whole received batch is handled in ONE transaction in one handler thread,
groups one after the other, each message inside its own ``SAVEPOINT``. A
message that fails is rolled back to its savepoint alone (its inbox claim
with it) and ends its group for this batch exactly as above (retry: backoff
for it, the rest of its group released at once; dead letter: to the DLQ after
the commit, the rest of its group released at once); the other groups'
messages commit together. Outcomes and their hooks are emitted after the
commit; if the commit itself fails, nothing of the batch stands and the head
of each group is retried (the rest of the group released). The price: row
locks taken by a handler are held until the batch commits, and one batch's
groups run one after the other rather than in parallel threads.

Supervision (:mod:`shared.messaging.supervision`): processing a message never
raises. A poller that still meets an unexpected error is restarted after a
capped backoff; the messages its batch left undecided are released with a
backoff. After more than ``restart_limit`` crashes in a row :meth:`Consumer.run`
drains the other pollers and raises :class:`ConsumerFailed`, and the worker
exits non-zero (:mod:`shared.worker`).

Each message ends in one typed outcome (:mod:`shared.messaging.outcomes`), decided
in a handler thread by :class:`shared.messaging.processing.MessageProcessor` (parse,
inbox claim, handler, transaction); this module is the asynchronous rest (polling,
groups, visibility, deletes, DLQ sends). Metrics and logs are middleware hooks
around each outcome (:mod:`shared.messaging.middleware`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import structlog

from shared.messaging.batch import DELETE_LINGER_S, Batch, State
from shared.messaging.deadletter import DLQ_ERROR_MAX_CHARS, send_to_dlq
from shared.messaging.middleware import Hooks, LoggingMiddleware, Middleware
from shared.messaging.outcomes import DeadLetter, Duplicate, Handled, Outcome, PermanentError
from shared.messaging.processing import Handler, MessageProcessor, receive_count
from shared.messaging.receiver import Receiver
from shared.messaging.sqs import MAX_BATCH_ENTRIES, MAX_WAIT_TIME_S, resolve_queue
from shared.messaging.supervision import ConsumerFailed, run_pollers, set_when, wait
from shared.messaging.topology import QueueSpec

log = structlog.get_logger(__name__)

__all__ = ["DLQ_ERROR_MAX_CHARS", "Consumer", "ConsumerConfig", "ConsumerFailed", "Handler",
           "PermanentError"]



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
    restart_base_s: float = 1.0              # a crashed poller waits base * 2^(n-1) ...
    restart_cap_s: float = 30.0              # ... at most this long before its restart
    restart_limit: int = 10                  # crashes in a row before the consumer gives up
    transaction_per_batch: bool = False      # batch mode (module docstring)

    def __post_init__(self) -> None:
        if not 0 <= self.wait_time_s <= MAX_WAIT_TIME_S:
            raise ValueError("wait_time_s must be 0..20")
        if not 1 <= self.max_messages <= MAX_BATCH_ENTRIES:
            raise ValueError("max_messages must be 1..10")
        if self.restart_limit < 0:
            raise ValueError("restart_limit must be >= 0")


class Consumer:
    """Consumes one queue for one service with the handlers given per event type."""

    def __init__(self, name: str, spec: QueueSpec, db, handlers: dict[str, Handler],
                 sqs_client_factory: Callable[[], Any], queue_prefix: str = "",
                 config: ConsumerConfig | None = None, executor: ThreadPoolExecutor | None = None,
                 middleware: Iterable[Middleware] | None = None):
        self.name = name
        self.spec = spec
        self.client_factory = sqs_client_factory
        self.prefix = queue_prefix
        self.config = config or ConsumerConfig()
        self.executor = executor or ThreadPoolExecutor(max_workers=MAX_BATCH_ENTRIES,
                                                       thread_name_prefix=name)
        self.queue_url: str | None = None
        self.dlq_url: str | None = None
        self.visibility_timeout = spec.visibility_timeout_s
        # Logging by default; the worker adds metrics (shared.worker.default_middleware).
        self.hooks = Hooks((LoggingMiddleware(),) if middleware is None else middleware)
        self.processor = MessageProcessor(self, db, handlers, self.hooks, spec.max_receive_count,
                                          self.config.retry_base_s, self.config.retry_cap_s)
        self.receiver = Receiver(name, self.config.max_messages, self.config.wait_time_s,
                                 self.config.error_pause_s)

    @property
    def db(self):
        """The database its messages are handled in (middleware records there too)."""
        return self.processor.db

    @property
    def max_receive_count(self) -> int:
        return self.processor.max_receive_count

    @max_receive_count.setter
    def max_receive_count(self, value: int) -> None:
        self.processor.max_receive_count = value

    # -- lifecycle ----------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, then drain and return.

        Raises :class:`ConsumerFailed` when a poller crashed more than
        ``restart_limit`` times in a row; the other pollers drain first and the
        client stays open until the last of them has returned.
        """
        halt = asyncio.Event()  # stop, or a poller gave up: every poller winds down
        forward_stop = asyncio.create_task(set_when(stop, halt))
        try:
            async with self.client_factory() as client:
                await self._resolve_queues(client, halt)
                if halt.is_set():
                    return
                log.info("consumer_started", consumer=self.name, queue=self.spec.name,
                         pollers=self.config.pollers)
                await run_pollers(self, client, halt)
        finally:
            forward_stop.cancel()
            self.hooks.emit("on_consumer_alive", self, False)
        log.info("consumer_stopped", consumer=self.name)

    async def _resolve_queues(self, client, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                found = await resolve_queue(client, self.prefix, self.spec)
            except Exception as exc:
                log.warning("consumer_queue_lookup_failed", consumer=self.name, error=str(exc))
                await wait(stop, self.config.error_pause_s)
                continue
            self.queue_url, self.dlq_url = found.url, found.dlq_url
            self.visibility_timeout = found.visibility_timeout_s or self.visibility_timeout
            # The deployed redrive policy is what SQS enforces; dead-letter on our
            # last allowed receive (with the reason) before SQS does it silently.
            self.max_receive_count = found.max_receive_count or self.max_receive_count
            return

    async def _poll_once(self, client, stop: asyncio.Event) -> None:
        messages = await self.receiver.receive(client, self.queue_url, stop)
        if not messages:
            return
        batch = Batch(client, self.queue_url, messages, self.visibility_timeout, self.name)
        if stop.is_set():
            await batch.release(messages, 0)
            return
        try:
            await self.handle_batch(client, messages, stop, batch)
        except BaseException:
            # Whatever the crash left undecided comes back after a backoff (not the whole
            # visibility timeout, and not at once, which would loop on a repeatable crash).
            unfinished = batch.in_state(State.IN_FLIGHT)
            if unfinished:
                await asyncio.shield(batch.release(unfinished, self.processor.backoff(
                    max(receive_count(m) for m in unfinished))))
            raise

    # -- one batch ------------------------------------------------------------
    async def handle_batch(self, client, messages: list[dict], stop: asyncio.Event,
                           batch: Batch | None = None) -> None:
        """Handle one received batch as described in the module docstring."""
        batch = batch or Batch(client, self.queue_url, messages, self.visibility_timeout,
                               self.name)
        groups: OrderedDict[str, list[dict]] = OrderedDict()
        for message in messages:
            group = (message.get("Attributes") or {}).get("MessageGroupId") or message["MessageId"]
            groups.setdefault(group, []).append(message)
        every = self.config.heartbeat_every_s or max(1.0, self.visibility_timeout / 3)
        heartbeat = asyncio.create_task(batch.heartbeat(every))
        try:
            if self.config.transaction_per_batch:
                results = await asyncio.gather(
                    self._run_in_one_transaction(batch, list(groups.values()), stop),
                    return_exceptions=True)
            else:
                results = await asyncio.gather(*(self._handle_group(batch, group, stop)
                                                 for group in groups.values()),
                                               return_exceptions=True)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
        await batch.delete()  # what a group could not delete yet: one more try
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]

    async def _handle_group(self, batch: Batch, group: list[dict], stop: asyncio.Event) -> None:
        try:
            await self._run_group(batch, group, stop)
        finally:
            # As soon as the group is over (with the groups finishing with it), not at the
            # batch's end: a FIFO group's next messages are not delivered before.
            await batch.delete(group, linger_s=DELETE_LINGER_S)

    async def _run_group(self, batch: Batch, group: list[dict], stop: asyncio.Event) -> None:
        for index, message in enumerate(group):
            if stop.is_set():
                await batch.release(group[index:], 0)
                return
            loop = asyncio.get_running_loop()
            outcome = await loop.run_in_executor(self.executor, self.processor.process, message)
            if isinstance(outcome, Handled | Duplicate):
                batch.finish(message)
            elif isinstance(outcome, DeadLetter):
                if await send_to_dlq(batch.client, self.dlq_url, message, outcome,
                                     source_queue=self.spec.name, consumer=self.name,
                                     fifo=self.spec.fifo):
                    batch.finish(message)
                    # Deleted at once: a dead letter must never reach the DLQ twice.
                    await batch.delete([message])
                    self.hooks.emit("after_dead_letter", self, message, outcome)
                else:  # DLQ unreachable: leave it to SQS redrive; it still blocks its group
                    await batch.release(group[index + 1:], 0)
                    return
            else:  # retry: back off this message; it blocks the rest of its group meanwhile
                # The rest: visible at once but not deliverable while the failed message is in
                # flight: SQS then redelivers the group from its head, in order. Giving them the
                # same backoff instead lets an emulator (moto) redeliver them ahead of it.
                # One call for both (a visibility per entry).
                await batch.release_each([(message, outcome.delay_s),
                                          *((m, 0) for m in group[index + 1:])])
                return

    # -- batch mode ------------------------------------------------------------
    async def _run_in_one_transaction(self, batch: Batch, groups: list[list[dict]],
                                      stop: asyncio.Event) -> None:
        if stop.is_set():
            await batch.release(batch.in_state(State.IN_FLIGHT), 0)
            return
        loop = asyncio.get_running_loop()
        decided, broken = await loop.run_in_executor(self.executor, self.processor.process_batch,
                                                     groups, stop)
        for group, outcomes in zip(groups, decided, strict=True):
            await self._settle_group(batch, group, outcomes, broken)

    async def _settle_group(self, batch: Batch, group: list[dict], outcomes: list[Outcome],
                            broken: bool) -> None:
        # ``outcomes`` covers the head of ``group``; only its last entry can be a failure.
        if not outcomes:
            if broken:  # the transaction broke before this group started: back after a backoff
                await batch.release_each([(group[0],
                                           self.processor.backoff(receive_count(group[0]))),
                                          *((m, 0) for m in group[1:])])
            else:  # stop came first: unstarted, back at once
                await batch.release(group, 0)
            return
        for index, (message, outcome) in enumerate(zip(group, outcomes, strict=False)):
            rest = group[index + 1:]
            if isinstance(outcome, Handled | Duplicate):
                batch.finish(message)
            elif isinstance(outcome, DeadLetter):
                if await send_to_dlq(batch.client, self.dlq_url, message, outcome,
                                     source_queue=self.spec.name, consumer=self.name,
                                     fifo=self.spec.fifo):
                    batch.finish(message)
                    await batch.delete([message])
                    self.hooks.emit("after_dead_letter", self, message, outcome)
                await batch.release(rest, 0)  # not run in this transaction: back at once
                return
            else:  # retry: as in per-message mode, it blocks the rest of its group
                await batch.release_each([(message, outcome.delay_s), *((m, 0) for m in rest)])
                return
        await batch.release(group[len(outcomes):], 0)  # stop came before these started
