"""One received message to one typed outcome: parse, inbox claim, handler, in a transaction.

The synchronous half of the consumer runtime (:mod:`shared.messaging.consumer` is the
asynchronous half: polling, groups, visibility, deletes and DLQ sends). It runs in the
consumer's handler threads and never raises: every body ends as :class:`Handled`,
:class:`Duplicate`, :class:`Retry` or :class:`DeadLetter` with a reason, and the
middleware hooks around each outcome are emitted here (with the consumer as their
first argument, as :class:`shared.messaging.middleware.Middleware` expects).

Two ways to run, as the consumer's docstring describes: :meth:`process` gives each
message its own transaction; :meth:`process_batch` runs a whole batch in one, each
message inside a ``SAVEPOINT``, the hooks after the commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import structlog
from marshmallow import ValidationError

from shared import tracecontext
from shared.backoff import backoff_delay
from shared.messaging import inbox
from shared.messaging.envelope import Envelope, InvalidEnvelope
from shared.messaging.middleware import Hooks
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
from shared.messaging.sqs import MAX_VISIBILITY_TIMEOUT_S

Handler = Callable[[Any, Envelope], None]  # (cursor of the inbox transaction, envelope)

# Batch mode: one per message, around its inbox claim and handler.
SAVEPOINT = "consumer_message"

# maxReceiveCount is at most 1000, so the exponent never needs clamping below it.
MAX_RECEIVE_EXPONENT = 1000


class MessageProcessor:
    """Decides each message of one consumer; ``max_receive_count`` follows the deployed queue."""

    def __init__(self, consumer, db, handlers: dict[str, Handler], hooks: Hooks,
                 max_receive_count: int, retry_base_s: float, retry_cap_s: float):
        self.consumer = consumer  # what the hooks are told about
        self.name = consumer.name
        self.db = db
        self.handlers = handlers
        self.hooks = hooks
        self.max_receive_count = max_receive_count
        self.retry_base_s = retry_base_s
        self.retry_cap_s = retry_cap_s

    # -- per message: one transaction each -------------------------------------
    def process(self, message: dict) -> Outcome:
        """Handle one message in its own transaction; never raises."""
        self._emit("before_handle", message)
        try:
            event = Envelope.from_json(message.get("Body"))
        except Exception as exc:  # InvalidEnvelope, or anything else a hostile body provokes
            error = str(exc) if isinstance(exc, InvalidEnvelope) else describe(exc)
            return self._decided(message, self._dead(message, INVALID_ENVELOPE, error))
        with bound(self.name, event), tracecontext.continued(event.traceparent):
            try:
                outcome = self._handle(message, event)
            except Exception as exc:  # outside the handler's own try: treat as transient
                outcome = self.failed(message, event, describe(exc))
            return self._decided(message, outcome)

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
            return self.failed(message, event, describe(exc))
        return Handled(event, time.perf_counter() - started)

    # -- batch mode: one transaction for the batch ------------------------------
    def process_batch(self, groups: list[list[dict]],
                      stop: asyncio.Event) -> tuple[list[list[Outcome]], bool]:
        """Every group of a batch in one transaction; never raises.

        Returns the outcomes of each group's head (a group stops at its first message
        that is not handled), and whether the transaction broke (then nothing of it stands:
        a group whose head had been handled gets a retry of its head instead)."""
        decided: list[list[Outcome]] = [[] for _ in groups]
        try:
            with self.db.transaction() as cur:
                for group, outcomes in zip(groups, decided, strict=True):
                    for message in group:
                        if stop.is_set():  # a plain flag read: safe from this thread
                            break
                        outcome = self._process_in(cur, message)
                        outcomes.append(outcome)
                        if not isinstance(outcome, Handled | Duplicate):
                            break
            broken = False
        except Exception as exc:  # the commit, or the connection: nothing of the batch stands
            broken = True
            error = describe(exc)
            for group, outcomes in zip(groups, decided, strict=True):
                if outcomes and isinstance(outcomes[0], Handled | Duplicate):
                    outcomes[:] = [self.failed(group[0], outcomes[0].event, error)]
                else:  # a head that failed or was dead-lettered wrote nothing
                    del outcomes[1:]
        for group, outcomes in zip(groups, decided, strict=True):
            for message, outcome in zip(group, outcomes, strict=False):
                with bound(self.name, outcome.event):
                    self._decided(message, outcome)
        return decided, broken

    def _process_in(self, cur, message: dict) -> Outcome:
        # One message inside the batch's transaction; its hooks wait for the commit.
        self._emit("before_handle", message)
        try:
            event = Envelope.from_json(message.get("Body"))
        except Exception as exc:
            error = str(exc) if isinstance(exc, InvalidEnvelope) else describe(exc)
            return self._dead(message, INVALID_ENVELOPE, error)
        handler = self.handlers.get(event.event_type)
        if handler is None:
            return self._dead(message, UNKNOWN_EVENT_TYPE, event.event_type, event)
        with bound(self.name, event):
            started = time.perf_counter()
            try:
                # The savepoint and the claim in one round trip. A savepoint is not
                # released after a success: the next one of the same name stacks on it
                # (at most 10 per batch, within Postgres' cache of 64 subtransactions),
                # which saves a round trip per message; ROLLBACK TO names the newest.
                if not inbox.claim(cur, self.name, event, savepoint=SAVEPOINT):
                    outcome: Outcome = Duplicate(event)
                else:
                    handler(cur, event)
                    outcome = Handled(event, time.perf_counter() - started)
            except (PermanentError, ValidationError) as exc:
                outcome = self._dead(message, PERMANENT_ERROR, f"{type(exc).__name__}: {exc}",
                                     event)
            except Exception as exc:
                outcome = self.failed(message, event, describe(exc))
            if not isinstance(outcome, Handled | Duplicate):
                # If this fails the connection is gone: the whole batch fails with it.
                cur.execute(f"ROLLBACK TO SAVEPOINT {SAVEPOINT}")
            return outcome

    # -- outcomes ----------------------------------------------------------------
    def failed(self, message: dict, event: Envelope, error: str) -> Outcome:
        """A transient failure: a retry after a backoff, or the DLQ on the last allowed receive."""
        count = receive_count(message)
        if count >= self.max_receive_count:
            return self._dead(message, MAX_RECEIVES_EXCEEDED, error, event)
        return Retry(event, self.backoff(count), error, count)

    def backoff(self, count: int) -> int:
        """Seconds before the ``count``-th receive's retry: base * 2^(n-1), whole seconds
        (an SQS visibility), capped."""
        cap = min(self.retry_cap_s, MAX_VISIBILITY_TIMEOUT_S)
        return int(backoff_delay(count - 1, self.retry_base_s, cap,
                                 max_exponent=MAX_RECEIVE_EXPONENT))

    def _decided(self, message: dict, outcome: Outcome) -> Outcome:
        if isinstance(outcome, Retry):
            self._emit("on_retry", message, outcome)
        elif isinstance(outcome, DeadLetter):
            self._emit("on_dead_letter", message, outcome)
        self._emit("after_handle", message, outcome)
        return outcome

    def _emit(self, hook: str, *args) -> None:
        self.hooks.emit(hook, self.consumer, *args)

    @staticmethod
    def _dead(message: dict, reason: str, error: str, event: Envelope | None = None) -> DeadLetter:
        return DeadLetter(reason, error, event, message.get("MessageId"))


def bound(consumer: str, event: Envelope | None):
    """The event's ids in every log line of its handling (nothing to bind without an event)."""
    if event is None:
        return contextlib.nullcontext()
    return structlog.contextvars.bound_contextvars(
        event_id=event.event_id, event_type=event.event_type,
        correlation_id=event.correlation_id, consumer=consumer)


def receive_count(message: dict) -> int:
    """SQS's ApproximateReceiveCount of a received message (1 when it is missing or odd)."""
    try:
        return int((message.get("Attributes") or {}).get("ApproximateReceiveCount", "1"))
    except (TypeError, ValueError):
        return 1


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
