"""The transactional outbox: write events with the state change, publish them later.

``add_event`` is called inside the same transaction as the state change, so
both commit or neither does. :class:`OutboxRelay` publishes pending rows with
``SendMessageBatch``.

Ordering: each relay round claims whole (queue, aggregate) streams with a
transaction-scoped advisory lock, so two relays never publish the same
aggregate at once, and sends at most ONE row per aggregate per batch call, so
a partially failed batch can never let a later event overtake an earlier one.
A failed send keeps the row (attempts, last_error, next_attempt_at with
exponential backoff) and holds back the rest of its aggregate until it goes.
"""

from __future__ import annotations

import random
import select
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from shared.logging import get_logger
from shared.messaging.envelope import Envelope
from shared.messaging.schema import MAX_DELAY_SECONDS, outbox_channel
from shared.messaging.sqs import MAX_BATCH_ENTRIES, physical_name
from shared.messaging.topology import QueueSpec, queue, routes_for
from shared.metrics import OUTBOX_LAG, OUTBOX_PUBLISHED, OUTBOX_SEND_FAILURES

log = get_logger(__name__)

# Streams (queue, aggregate) claimed per relay round; bounds the open transaction.
STREAMS_PER_ROUND = 200
ROWS_PER_STREAM = 20
# After a busy spell, how soon to look again for rows whose NOTIFY was coalesced away.
LINGER_S = 0.05
# The outbox-lag gauge costs a query; refresh it at most this often.
LAG_REFRESH_S = 1.0


class NoRoute(LookupError):
    """An event type has no queue in the topology for this producer."""


def add_event(cur, service: str, envelope: Envelope, delay_s: int = 0) -> int:
    """Insert ``envelope`` into the outbox once per queue the topology routes it to.

    Must be called with the cursor of the transaction that makes the state
    change. Returns the number of rows written. ``delay_s`` (0..900) becomes the
    message's SQS DelaySeconds, counted from this transaction; only standard
    queues allow it (SQS_PORTABILITY.md rule 6).
    """
    routes: list[QueueSpec] = routes_for(service, envelope.event_type)
    if not routes:
        raise NoRoute(f"no queue for {envelope.event_type} from {service}")
    if not 0 <= delay_s <= MAX_DELAY_SECONDS:
        raise ValueError(f"delay_s must be 0..{MAX_DELAY_SECONDS}, got {delay_s}")
    if delay_s and any(spec.fifo for spec in routes):
        raise ValueError(f"{envelope.event_type} goes to a FIFO queue: no per-message delay")
    body = envelope.to_json()
    for spec in routes:
        cur.execute(
            "INSERT INTO outbox (event_id, queue, aggregate_id, event_type, body, correlation_id,"
            " delay_seconds) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (envelope.event_id, spec.name, envelope.aggregate_id, envelope.event_type, body,
             envelope.correlation_id, int(delay_s)),
        )
    return len(routes)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter for failed sends."""

    base_s: float = 0.5
    cap_s: float = 10.0

    def delay(self, attempts: int) -> float:
        """Seconds to wait before attempt ``attempts + 1``."""
        ceiling = min(self.cap_s, self.base_s * (2 ** min(attempts, 20)))
        return random.uniform(ceiling / 2, ceiling)


class OutboxRelay:
    """Publishes one service's outbox to SQS. Run several for availability."""

    def __init__(self, db, sqs, service: str, queue_prefix: str = "",
                 poll_interval_s: float = 1.0, retry: RetryPolicy | None = None,
                 name: str = "relay"):
        self.db = db
        self.sqs = sqs
        self.service = service
        self.prefix = queue_prefix
        self.poll_interval_s = poll_interval_s
        self.retry = retry or RetryPolicy()
        self.name = name
        self._urls: dict[str, str] = {}
        self._lag_refreshed_at = float("-inf")

    # -- public -----------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Publish until ``stop`` is set; wake on NOTIFY, else poll."""
        listener = None
        lingering = False
        log.info("outbox_relay_started", relay=self.name)
        while not stop.is_set():
            try:
                if listener is None:
                    listener = self.db.listen_connection(outbox_channel(self.db.schema))
                published, more = self.publish_once()
                if more:
                    lingering = True
                    continue
                if lingering:
                    # A busy spell just ended: a transaction that skipped its
                    # NOTIFY (another one's was pending, see schema.py) may
                    # commit only now. Look once more soon, not a poll later.
                    lingering = False
                    self._wait(listener, stop, min(LINGER_S, self.poll_interval_s))
                    continue
                self._wait(listener, stop)
            except Exception as exc:  # the relay must outlive DB/SQS outages
                log.warning("outbox_relay_error", relay=self.name, error=str(exc))
                if listener is not None:
                    try:
                        listener.close()
                    except Exception:
                        pass
                    listener = None
                stop.wait(self.poll_interval_s)
        if listener is not None:
            listener.close()
        log.info("outbox_relay_stopped", relay=self.name)

    def publish_once(self) -> tuple[int, bool]:
        """One round: claim streams, send, mark. Returns (published, maybe_more)."""
        with self.db.connection() as conn:
            with conn.cursor() as cur:
                streams = self._claim_streams(cur)
                published = self._send_in_order(cur, self._pending_rows(cur, streams)) \
                    if streams else 0
            conn.commit()  # marks published and releases the advisory locks
        # Outside the round's connection: never hold one pooled connection
        # while waiting for another.
        self._refresh_lag()
        return published, len(streams) >= STREAMS_PER_ROUND or published > 0

    # -- internals --------------------------------------------------------
    def _claim_streams(self, cur) -> list[tuple[str, str]]:
        cur.execute(
            """
            SELECT queue, aggregate_id
              FROM (SELECT DISTINCT ON (queue, aggregate_id)
                           queue, aggregate_id, id, next_attempt_at
                      FROM outbox
                     WHERE published_at IS NULL
                     ORDER BY queue, aggregate_id, id) AS head
             WHERE head.next_attempt_at <= now()
               AND pg_try_advisory_xact_lock(hashtextextended(queue || '|' || aggregate_id, 0))
             ORDER BY head.id
             LIMIT %s
            """,
            (STREAMS_PER_ROUND,),
        )
        return [(q, a) for q, a in cur.fetchall()]

    def _pending_rows(self, cur, streams):
        queues = [s[0] for s in streams]
        aggregates = [s[1] for s in streams]
        cur.execute(
            """
            SELECT o.id, o.event_id::text, o.queue, o.aggregate_id, o.event_type, o.body,
                   o.correlation_id, o.attempts,
                   -- The delay counts from the writing transaction: a relay that
                   -- publishes late sends only what is left of it.
                   GREATEST(0, ceil(o.delay_seconds
                                    - EXTRACT(EPOCH FROM now() - o.created_at)))::int AS delay
              FROM unnest(%s::text[], %s::text[]) AS s(queue, aggregate_id)
              JOIN LATERAL (
                    SELECT * FROM outbox
                     WHERE outbox.queue = s.queue AND outbox.aggregate_id = s.aggregate_id
                       AND outbox.published_at IS NULL
                     ORDER BY id LIMIT %s) AS o ON true
             ORDER BY o.id
            """,
            (queues, aggregates, ROWS_PER_STREAM),
        )
        return cur.fetchall()

    def _send_in_order(self, cur, rows) -> int:
        # Per queue, per stream, a FIFO of rows (already in id = commit order).
        by_queue: dict[str, OrderedDict[str, list]] = {}
        for row in rows:
            by_queue.setdefault(row[2], OrderedDict()).setdefault(row[3], []).append(row)
        published = 0
        for queue_name, streams in by_queue.items():
            while streams:
                heads = [stream[0] for stream in list(streams.values())[:MAX_BATCH_ENTRIES]]
                ok_ids, failed, call_failed = self._send_batch(queue_name, heads)
                if ok_ids:
                    cur.execute("UPDATE outbox SET published_at = now() WHERE id = ANY(%s)",
                                (ok_ids,))
                    published += len(ok_ids)
                    OUTBOX_PUBLISHED.labels(self.service, queue_name).inc(len(ok_ids))
                for row, error in failed:
                    self._record_failure(cur, row, error)
                    streams.pop(row[3], None)  # hold the rest of this aggregate back
                if call_failed:
                    # The queue is unreachable: count the failure on every waiting stream
                    # now. Trying batch after batch would stretch the round (and its open
                    # transaction) to one broker timeout per 10 streams of backlog, with
                    # no failure visible to operators until the round ends.
                    for stream in streams.values():
                        self._record_failure(cur, stream[0], failed[0][1])
                    streams.clear()
                for row in heads:
                    if row[0] in ok_ids:
                        stream = streams[row[3]]
                        stream.pop(0)
                        if not stream:
                            del streams[row[3]]
        return published

    def _send_batch(self, queue_name: str, rows) -> tuple[list[int], list[tuple], bool]:
        """Send one batch; returns (published ids, (row, error) failures, whole call failed)."""
        spec = queue(queue_name)
        entries = []
        for index, row in enumerate(rows):
            _id, event_id, _q, aggregate_id, event_type, body, correlation_id, _a, delay = row
            entry = {
                "Id": str(index),
                "MessageBody": body,
                "MessageAttributes": {
                    "event_type": {"DataType": "String", "StringValue": event_type},
                    "event_id": {"DataType": "String", "StringValue": event_id},
                },
            }
            if correlation_id:
                entry["MessageAttributes"]["correlation_id"] = {
                    "DataType": "String", "StringValue": correlation_id}
            if spec.fifo:
                entry["MessageGroupId"] = aggregate_id
                entry["MessageDeduplicationId"] = event_id
            elif delay:
                entry["DelaySeconds"] = delay
            entries.append(entry)
        try:
            response = self.sqs.send_message_batch(QueueUrl=self._url(queue_name), Entries=entries)
        except Exception as exc:
            self._urls.pop(queue_name, None)
            return [], [(row, f"{type(exc).__name__}: {exc}") for row in rows], True
        ok = [rows[int(e["Id"])][0] for e in response.get("Successful", [])]
        failed = [(rows[int(e["Id"])], f"{e.get('Code')}: {e.get('Message')}")
                  for e in response.get("Failed", [])]
        return ok, failed, False

    def _record_failure(self, cur, row, error: str) -> None:
        attempts = row[7] + 1
        delay = self.retry.delay(attempts)
        cur.execute(
            "UPDATE outbox SET attempts = %s, last_error = %s,"
            " next_attempt_at = now() + make_interval(secs => %s) WHERE id = %s",
            (attempts, error[:1000], delay, row[0]),
        )
        OUTBOX_SEND_FAILURES.labels(self.service, row[2]).inc()
        log.warning("outbox_send_failed", relay=self.name, queue=row[2], event_id=row[1],
                    attempts=attempts, retry_in_s=round(delay, 2), error=error[:200])

    def _url(self, queue_name: str) -> str:
        if queue_name not in self._urls:
            self._urls[queue_name] = self.sqs.get_queue_url(
                QueueName=physical_name(self.prefix, queue_name))["QueueUrl"]
        return self._urls[queue_name]

    def _refresh_lag(self) -> None:
        # Throttled: after every empty round it was one more transaction per
        # NOTIFY wake-up, and it was never refreshed while a backlog drained.
        now = time.monotonic()
        if now - self._lag_refreshed_at < LAG_REFRESH_S:
            return
        self._lag_refreshed_at = now
        with self.db.transaction() as cur:
            cur.execute("SELECT COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0) AS lag"
                        " FROM outbox WHERE published_at IS NULL")
            OUTBOX_LAG.labels(self.service).set(float(cur.fetchone()["lag"]))

    def _wait(self, listener, stop: threading.Event, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (self.poll_interval_s if timeout is None else timeout)
        while not stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            ready, _, _ = select.select([listener], [], [], min(remaining, 0.5))
            if ready:
                listener.poll()
                if listener.notifies:
                    listener.notifies.clear()
                    return
