"""Hook points around handling and publishing, in the spirit of dramatiq's middleware.

A :class:`Middleware` overrides the hooks it cares about; the consumer and
the relay take a list of them and call every one, in list order:

Consumer, per received message (in the handler thread, with the event's
``event_id``/``event_type``/``correlation_id``/``consumer`` bound in the
structlog context once the body parsed as an envelope):

1. ``before_handle(consumer, message)`` — before the body is parsed;
2. ``on_retry(consumer, message, outcome)`` — a :class:`Retry` was decided, or
   ``on_dead_letter(consumer, message, outcome)`` — a :class:`DeadLetter` was;
3. ``after_handle(consumer, message, outcome)`` — every outcome;
4. ``after_dead_letter(consumer, message, outcome)`` — on the event loop, once
   the message really is in the DLQ (not called when the DLQ is unreachable).

Consumer lifecycle, on the event loop: ``on_consumer_alive(consumer, alive)``
when the consumer starts (True), loses a poller (False), has every poller
running again (True) or stops (False); ``on_poller_restart(consumer, error,
delay_s)`` when a crashed poller is to be restarted after ``delay_s``.

Relay, per round: ``after_publish(relay, queue, rows)`` for each accepted
batch, ``on_publish_failure(relay, row, error, attempts, retry_in_s)`` for each
row that must wait, ``on_outbox_lag(relay, lag_s)`` when the lag was measured.

A hook that raises is logged (``middleware_failed``) and skipped: observing a
message must never change what happens to it.

Two stock middlewares: :class:`LoggingMiddleware` (structlog events) and
:class:`PrometheusMiddleware` (counters the application passes in).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any

import structlog

from shared.messaging.outcomes import DeadLetter, Duplicate, Handled, Outcome, Retry

log = structlog.get_logger(__name__)

# The metrics' event_type label of a message whose body did not parse.
UNKNOWN_EVENT_TYPE_LABEL = "unknown"


class Middleware:
    """Base class: every hook is a no-op."""

    # -- consumer ------------------------------------------------------------------
    def before_handle(self, consumer, message: dict) -> None:
        """A message is about to be handled."""

    def after_handle(self, consumer, message: dict, outcome: Outcome) -> None:
        """Handling ``message`` came to ``outcome``."""

    def on_retry(self, consumer, message: dict, outcome: Retry) -> None:
        """``message`` will be retried after ``outcome.delay_s``."""

    def on_dead_letter(self, consumer, message: dict, outcome: DeadLetter) -> None:
        """``message`` is to go to the DLQ."""

    def after_dead_letter(self, consumer, message: dict, outcome: DeadLetter) -> None:
        """``message`` is now in the DLQ."""

    def on_consumer_alive(self, consumer, alive: bool) -> None:
        """Every poller of ``consumer`` runs (True), or not (False)."""

    def on_poller_restart(self, consumer, error: str, delay_s: float) -> None:
        """A poller of ``consumer`` crashed with ``error``; it restarts in ``delay_s``."""

    # -- relay -----------------------------------------------------------------------
    def after_publish(self, relay, queue: str, rows: list) -> None:
        """``rows`` (outbox rows) were accepted by ``queue``."""

    def on_publish_failure(self, relay, row, error: str, attempts: int,
                           retry_in_s: float) -> None:
        """Sending ``row`` failed; it is tried again in ``retry_in_s``."""

    def on_outbox_lag(self, relay, lag_s: float) -> None:
        """The oldest unpublished outbox row is ``lag_s`` old."""


class Hooks:
    """Calls one hook on every middleware, isolating their failures."""

    def __init__(self, middleware: Iterable[Middleware]):
        self.middleware = tuple(middleware)

    def emit(self, hook: str, *args: Any) -> None:
        """Call ``hook(*args)`` on each middleware in order."""
        for item in self.middleware:
            try:
                getattr(item, hook)(*args)
            except Exception as exc:
                log.warning("middleware_failed", middleware=type(item).__name__, hook=hook,
                            error=f"{type(exc).__name__}: {exc}")


class LoggingMiddleware(Middleware):
    """The structlog events operators and tests read (names are a contract)."""

    def after_handle(self, consumer, message, outcome) -> None:
        if isinstance(outcome, Handled):
            log.info("message_handled", ms=round(outcome.duration_s * 1000, 1))
        elif isinstance(outcome, Duplicate):
            log.info("message_duplicate_skipped")

    def on_retry(self, consumer, message, outcome) -> None:
        log.warning("message_retry", receive_count=outcome.receive_count, error=outcome.error)

    def on_dead_letter(self, consumer, message, outcome) -> None:
        log.error("message_dead_lettered", consumer=consumer.name, reason=outcome.reason,
                  error=outcome.error[:300], message_id=outcome.message_id)

    def on_publish_failure(self, relay, row, error, attempts, retry_in_s) -> None:
        log.warning("outbox_send_failed", relay=relay.name, queue=row.queue,
                    event_id=row.event_id, attempts=attempts, retry_in_s=round(retry_in_s, 2),
                    error=error[:200])


class PrometheusMiddleware(Middleware):
    """Outcomes and relay results as Prometheus metrics (any of them may be None).

    ``received`` (consumer, queue, event_type) counts every outcome;
    ``handled`` (consumer, queue, event_type, outcome) counts ``done`` and
    ``duplicate``; ``retries`` (consumer, queue, event_type); ``dlq_moves``
    (consumer, queue, event_type, reason) counts messages really moved;
    ``duration`` (consumer, queue, event_type, outcome) is a histogram from
    ``before_handle`` to the outcome; ``published`` / ``send_failures``
    (service, queue); ``lag`` (service) is a gauge; ``alive`` (consumer) a
    gauge, 1 while every poller runs; ``restarts`` (consumer) counts poller
    restarts. ``event_type`` is ``unknown`` when the body was no envelope.
    """

    def __init__(self, *, handled=None, retries=None, dlq_moves=None, published=None,
                 send_failures=None, lag=None, alive=None, restarts=None, received=None,
                 duration=None):
        self.alive = alive
        self.restarts = restarts
        self.received = received
        self.handled = handled
        self.retries = retries
        self.dlq_moves = dlq_moves
        self.duration = duration
        self.published = published
        self.send_failures = send_failures
        self.lag = lag
        # before_handle and after_handle of one message run in the same handler thread.
        self._started = threading.local()

    def before_handle(self, consumer, message) -> None:
        self._started.at = time.perf_counter()

    def after_handle(self, consumer, message, outcome) -> None:
        queue, event_type = consumer.spec.name, _event_type(outcome)
        if self.received is not None:
            self.received.labels(consumer.name, queue, event_type).inc()
        if self.handled is not None and isinstance(outcome, Handled | Duplicate):
            self.handled.labels(consumer.name, queue, event_type, outcome.kind).inc()
        started = getattr(self._started, "at", None)
        if self.duration is not None and started is not None:
            self.duration.labels(consumer.name, queue, event_type, outcome.kind).observe(
                time.perf_counter() - started)

    def on_retry(self, consumer, message, outcome) -> None:
        if self.retries is not None:
            self.retries.labels(consumer.name, consumer.spec.name, _event_type(outcome)).inc()

    def after_dead_letter(self, consumer, message, outcome) -> None:
        if self.dlq_moves is not None:
            self.dlq_moves.labels(consumer.name, consumer.spec.name, _event_type(outcome),
                                  outcome.reason).inc()

    def on_consumer_alive(self, consumer, alive) -> None:
        if self.alive is not None:
            self.alive.labels(consumer.name).set(1 if alive else 0)

    def on_poller_restart(self, consumer, error, delay_s) -> None:
        if self.restarts is not None:
            self.restarts.labels(consumer.name).inc()

    def after_publish(self, relay, queue, rows) -> None:
        if self.published is not None:
            self.published.labels(relay.service, queue).inc(len(rows))

    def on_publish_failure(self, relay, row, error, attempts, retry_in_s) -> None:
        if self.send_failures is not None:
            self.send_failures.labels(relay.service, row.queue).inc()

    def on_outbox_lag(self, relay, lag_s) -> None:
        if self.lag is not None:
            self.lag.labels(relay.service).set(lag_s)


def _event_type(outcome: Outcome) -> str:
    # A body that was no envelope has no event (and so no type) to label it with.
    return outcome.event.event_type if outcome.event is not None else UNKNOWN_EVENT_TYPE_LABEL
