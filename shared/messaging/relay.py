"""The outbox relay: publishes one service's outbox rows to SQS with ``SendMessageBatch``.

Ordering: each round claims whole (queue, aggregate) streams with a
transaction-scoped advisory lock (:func:`shared.messaging.outbox.claim_streams`),
so two relays never publish the same aggregate at once, and sends at most ONE
row per aggregate per batch call, so a partially failed batch can never let a
later event overtake an earlier one. A failed send keeps the row (attempts,
last_error, next_attempt_at with exponential backoff, :class:`RetryPolicy`) and
holds back the rest of its aggregate until it goes. An entry a batch answer
lists as neither Successful nor Failed counts as a failed send.

Several relays share one outbox: each round claims only the streams no other
relay holds, up to :data:`STREAMS_PER_ROUND`, and a stream whose head another
relay failed just before the claim waits out that backoff (see
:func:`~shared.messaging.outbox.pending_rows`).

The relay wakes on the schema's outbox NOTIFY and polls as a fallback
(:func:`shared.notify.run_on_notify`). Which queue is FIFO comes from the
:class:`~shared.messaging.topology.Topology` passed in; metrics and the
``outbox_send_failed`` log are middleware hooks (``after_publish``,
``on_publish_failure``, ``on_outbox_lag``).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

import structlog

from shared.backoff import backoff_delay
from shared.messaging import outbox
from shared.messaging.middleware import Hooks, LoggingMiddleware, Middleware
from shared.messaging.outbox import OutboxRow
from shared.messaging.schema import outbox_channel
from shared.messaging.sqs import MAX_BATCH_ENTRIES, physical_name
from shared.messaging.topology import Topology
from shared.notify import run_on_notify

log = structlog.get_logger(__name__)

# Streams (queue, aggregate) claimed per relay round; bounds the open transaction.
STREAMS_PER_ROUND = 200
ROWS_PER_STREAM = 20
# After a busy spell, how soon to look again for rows whose NOTIFY was coalesced away.
LINGER_S = 0.05
# The outbox-lag gauge costs a query; refresh it at most this often.
LAG_REFRESH_S = 1.0
MISSING_FROM_ANSWER = "MissingEntry: missing from the SendMessageBatch answer"
# 0.5 s * 2^20 is days: far past any cap, and small enough never to overflow.
RETRY_MAX_EXPONENT = 20


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with equal jitter (half to all of the nominal delay) for failed sends."""

    base_s: float = 0.5
    cap_s: float = 10.0

    def delay(self, attempts: int) -> float:
        """Seconds to wait before attempt ``attempts + 1``."""
        return backoff_delay(attempts, self.base_s, self.cap_s, jitter="equal",
                             max_exponent=RETRY_MAX_EXPONENT)


class OutboxRelay:
    """Publishes one service's outbox to SQS. Run several for availability."""

    def __init__(self, db, sqs, topology: Topology, service: str, queue_prefix: str = "",
                 poll_interval_s: float = 1.0, retry: RetryPolicy | None = None,
                 name: str = "relay", middleware: Iterable[Middleware] | None = None):
        self.db = db
        self.sqs = sqs
        self.topology = topology
        self.service = service
        self.prefix = queue_prefix
        self.poll_interval_s = poll_interval_s
        self.retry = retry or RetryPolicy()
        self.name = name
        # Logging by default; the worker adds metrics (shared.worker.default_middleware).
        self.hooks = Hooks((LoggingMiddleware(),) if middleware is None else middleware)
        self._urls: dict[str, str] = {}
        self._lag_refreshed_at = float("-inf")
        self._lingering = False

    # -- public -----------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Publish until ``stop`` is set; wake on NOTIFY, else poll."""
        log.info("outbox_relay_started", relay=self.name)
        self._lingering = False
        run_on_notify(self.db, outbox_channel(self.db.schema), self._round, stop,
                      poll_interval_s=self.poll_interval_s, on_error=self._on_error)
        log.info("outbox_relay_stopped", relay=self.name)

    def publish_once(self) -> tuple[int, bool]:
        """One round: claim streams, send, mark. Returns (published, maybe_more)."""
        with self.db.connection() as conn:
            with conn.cursor() as cur:
                streams = outbox.claim_streams(cur, STREAMS_PER_ROUND)
                published = self._send_in_order(
                    cur, outbox.pending_rows(cur, streams, ROWS_PER_STREAM)) if streams else 0
            conn.commit()  # marks published and releases the advisory locks
        # Outside the round's connection: never hold one pooled connection
        # while waiting for another.
        self._refresh_lag()
        return published, len(streams) >= STREAMS_PER_ROUND or published > 0

    # -- internals --------------------------------------------------------
    def _round(self) -> float | None:
        _published, more = self.publish_once()
        if more:
            self._lingering = True
            return 0
        if self._lingering:
            # A busy spell just ended: a transaction that skipped its NOTIFY
            # (another one's was pending, see schema.py) may commit only now.
            # Look once more soon, not a poll later.
            self._lingering = False
            return min(LINGER_S, self.poll_interval_s)
        return None

    def _on_error(self, exc: Exception) -> None:
        # The relay must outlive DB/SQS outages: log, reconnect after a poll interval.
        log.warning("outbox_relay_error", relay=self.name, error=str(exc))

    def _send_in_order(self, cur, rows: list[OutboxRow]) -> int:
        # Per queue, per stream, a FIFO of rows (already in id = commit order).
        by_queue: dict[str, OrderedDict[str, list[OutboxRow]]] = {}
        for row in rows:
            by_queue.setdefault(row.queue, OrderedDict()).setdefault(row.aggregate_id, []).append(row)
        published_ids: list[int] = []
        for queue_name, streams in by_queue.items():
            while streams:
                heads = [stream[0] for stream in list(streams.values())[:MAX_BATCH_ENTRIES]]
                ok_ids, failed, call_failed = self._send_batch(queue_name, heads)
                if ok_ids:
                    published_ids.extend(ok_ids)
                    self.hooks.emit("after_publish", self, queue_name,
                                    [row for row in heads if row.id in ok_ids])
                for row, error in failed:
                    self._record_failure(cur, row, error)
                    streams.pop(row.aggregate_id, None)  # hold the rest of this aggregate back
                if call_failed:
                    # The queue is unreachable: count the failure on every waiting stream
                    # now. Trying batch after batch would stretch the round (and its open
                    # transaction) to one broker timeout per 10 streams of backlog, with
                    # no failure visible to operators until the round ends.
                    for stream in streams.values():
                        self._record_failure(cur, stream[0], failed[0][1])
                    streams.clear()
                for row in heads:
                    if row.id in ok_ids:
                        stream = streams[row.aggregate_id]
                        stream.pop(0)
                        if not stream:
                            del streams[row.aggregate_id]
        if published_ids:
            # One UPDATE for the round, not one per batch sent: it commits with the round
            # either way, and a round cut short rolls every mark back alike.
            outbox.mark_published(cur, published_ids)
        return len(published_ids)

    def _send_batch(self, queue_name: str, rows: list[OutboxRow]
                    ) -> tuple[list[int], list[tuple[OutboxRow, str]], bool]:
        """Send one batch; returns (published ids, (row, error) failures, whole call failed)."""
        spec = self.topology.queue(queue_name)
        entries = []
        for index, row in enumerate(rows):
            entry = {
                "Id": str(index),
                "MessageBody": row.body,
                "MessageAttributes": {
                    "event_type": {"DataType": "String", "StringValue": row.event_type},
                    "event_id": {"DataType": "String", "StringValue": row.event_id},
                },
            }
            if row.correlation_id:
                entry["MessageAttributes"]["correlation_id"] = {
                    "DataType": "String", "StringValue": row.correlation_id}
            if spec.fifo:
                entry["MessageGroupId"] = row.aggregate_id
                entry["MessageDeduplicationId"] = row.event_id
            elif row.delay_s:
                entry["DelaySeconds"] = row.delay_s
            entries.append(entry)
        try:
            response = self.sqs.send_message_batch(QueueUrl=self._url(queue_name), Entries=entries)
        except Exception as exc:
            self._urls.pop(queue_name, None)
            return [], [(row, f"{type(exc).__name__}: {exc}") for row in rows], True
        ok = [rows[int(e["Id"])].id for e in response.get("Successful", [])]
        failed = [(rows[int(e["Id"])], f"{e.get('Code')}: {e.get('Message')}")
                  for e in response.get("Failed", [])]
        # An entry in neither list is a failed send: left out, it stayed the
        # head of its stream and the round resent it forever. If it did go, the
        # retry carries the same deduplication id and the consumer's inbox
        # drops the copy.
        answered = {int(e["Id"]) for e in response.get("Successful", [])}
        answered.update(int(e["Id"]) for e in response.get("Failed", []))
        failed += [(row, MISSING_FROM_ANSWER) for index, row in enumerate(rows)
                   if index not in answered]
        return ok, failed, False

    def _record_failure(self, cur, row: OutboxRow, error: str) -> None:
        attempts = row.attempts + 1
        delay = self.retry.delay(attempts)
        outbox.record_failure(cur, row.id, attempts, error, delay)
        self.hooks.emit("on_publish_failure", self, row, error, attempts, delay)

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
            lag = outbox.lag_seconds(cur)
        self.hooks.emit("on_outbox_lag", self, lag)
