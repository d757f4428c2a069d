"""The transactional outbox table: write events with the state change, read them for the relay.

:func:`add_event` is called inside the same transaction as the state change,
so both commit or neither does; it writes one row per queue the given
:class:`~shared.messaging.topology.Topology` routes the event to. The rest of
this module is the relay's SQL over the table (:mod:`shared.messaging.relay`
publishes the rows): claiming streams, reading pending rows as
:class:`OutboxRow`, marking rows published, recording failed sends, and the
outbox lag; and the retention job's purge of long-published rows
(:mod:`shared.messaging.retention`).

A stream is one (queue, aggregate) pair; its rows are published in id order.
"""

from __future__ import annotations

from typing import NamedTuple

from shared.messaging.envelope import Envelope
from shared.messaging.schema import MAX_DELAY_SECONDS
from shared.messaging.topology import QueueSpec, Topology


class NoRoute(LookupError):
    """An event type has no queue in the topology for this producer."""


class OutboxRow(NamedTuple):
    """One pending outbox row as the relay sends it."""

    id: int
    event_id: str
    queue: str
    aggregate_id: str
    event_type: str
    body: str
    correlation_id: str | None
    attempts: int
    delay_s: int   # what is left of the row's DelaySeconds, counted from its transaction


def add_event(cur, topology: Topology, service: str, envelope: Envelope, delay_s: int = 0) -> int:
    """Insert ``envelope`` into the outbox once per queue ``topology`` routes it to.

    Must be called with the cursor of the transaction that makes the state
    change. Returns the number of rows written. ``delay_s`` (0..900) becomes the
    message's SQS DelaySeconds, counted from this transaction; only standard
    queues allow it (docs/sqs-portability.md).
    """
    routes: list[QueueSpec] = topology.routes_for(service, envelope.event_type)
    if not routes:
        raise NoRoute(f"no queue for {envelope.event_type} from {service}")
    if not 0 <= delay_s <= MAX_DELAY_SECONDS:
        raise ValueError(f"delay_s must be 0..{MAX_DELAY_SECONDS}, got {delay_s}")
    if delay_s and any(spec.fifo for spec in routes):
        raise ValueError(f"{envelope.event_type} goes to a FIFO queue: no per-message delay")
    body = envelope.to_json()
    # One statement for every route (order.created goes to three queues): one round trip.
    # Each row is in a queue of its own, so their relative order does not matter.
    cur.execute(
        "INSERT INTO outbox (event_id, queue, aggregate_id, event_type, body, correlation_id,"
        " delay_seconds) VALUES " + ", ".join(["(%s, %s, %s, %s, %s, %s, %s)"] * len(routes)),
        tuple(value for spec in routes for value in (
            envelope.event_id, spec.name, envelope.aggregate_id, envelope.event_type, body,
            envelope.correlation_id, int(delay_s))),
    )
    return len(routes)


def claim_streams(cur, limit: int) -> list[tuple[str, str]]:
    """Up to ``limit`` (queue, aggregate) streams whose head row is due, locked for this transaction.

    The transaction-scoped advisory lock keeps two relays off one stream at once.
    Streams another transaction holds are skipped, and locking stops at
    ``limit``: a second relay claims the next due streams, not none.
    """
    # The lock is taken in the outer query, over the due heads already in
    # order: the executor pulls rows through it only until LIMIT is met (the
    # PostgreSQL manual's advice for advisory locks with LIMIT). ``OFFSET 0``
    # keeps the planner from pushing the lock down below the sort. In the
    # inner WHERE it locked EVERY due stream before the sort and the LIMIT.
    cur.execute(
        """
        SELECT queue, aggregate_id
          FROM (SELECT queue, aggregate_id, id
                  FROM (SELECT DISTINCT ON (queue, aggregate_id)
                               queue, aggregate_id, id, next_attempt_at
                          FROM outbox
                         WHERE published_at IS NULL
                         ORDER BY queue, aggregate_id, id) AS head
                 WHERE head.next_attempt_at <= now()
                 ORDER BY head.id
                OFFSET 0) AS due
         WHERE pg_try_advisory_xact_lock(hashtextextended(due.queue || '|' || due.aggregate_id, 0))
         LIMIT %s
        """,
        (limit,),
    )
    return [(row[0], row[1]) for row in cur.fetchall()]


def pending_rows(cur, streams: list[tuple[str, str]], per_stream: int) -> list[OutboxRow]:
    """The first ``per_stream`` unpublished rows of each stream, in id (commit) order.

    Only streams whose head is STILL due: this statement reads a newer snapshot
    than the claim, and a relay that held a stream until just after the claim's
    snapshot may have recorded a failed send (and its backoff) on that head.
    """
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
                SELECT next_attempt_at FROM outbox
                 WHERE outbox.queue = s.queue AND outbox.aggregate_id = s.aggregate_id
                   AND outbox.published_at IS NULL
                 ORDER BY id LIMIT 1) AS head ON head.next_attempt_at <= clock_timestamp()
          JOIN LATERAL (
                SELECT * FROM outbox
                 WHERE outbox.queue = s.queue AND outbox.aggregate_id = s.aggregate_id
                   AND outbox.published_at IS NULL
                 ORDER BY id LIMIT %s) AS o ON true
         ORDER BY o.id
        """,
        (queues, aggregates, per_stream),
    )
    return [OutboxRow(*row) for row in cur.fetchall()]


def mark_published(cur, ids: list[int]) -> None:
    """Mark the rows ``ids`` as published now."""
    cur.execute("UPDATE outbox SET published_at = now() WHERE id = ANY(%s)", (ids,))


def record_failure(cur, row_id: int, attempts: int, error: str, retry_in_s: float) -> None:
    """Count a failed send of ``row_id`` and hold it back ``retry_in_s`` seconds from now.

    From the clock, not ``now()`` (the start of the relay's transaction): a
    round that waited on a broker timeout longer than the backoff would
    otherwise commit a retry time already in the past.
    """
    cur.execute(
        "UPDATE outbox SET attempts = %s, last_error = %s,"
        " next_attempt_at = clock_timestamp() + make_interval(secs => %s) WHERE id = %s",
        (attempts, error[:1000], retry_in_s, row_id),
    )


def lag_seconds(cur) -> float:
    """Age of the oldest unpublished row in seconds (0 when there is none); a dict cursor."""
    cur.execute("SELECT COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0) AS lag"
                " FROM outbox WHERE published_at IS NULL")
    return float(cur.fetchone()["lag"])


def purge_published(cur, days: int, limit: int) -> int:
    """Delete up to ``limit`` rows published more than ``days`` ago; return how many went.

    Unpublished rows are never deleted, however old: the relay still owes them.
    ``SKIP LOCKED``: workers purging at once share the rows instead of queueing.
    """
    cur.execute(
        "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE published_at"
        " < now() - make_interval(days => %s) LIMIT %s FOR UPDATE SKIP LOCKED)",
        (days, limit))
    return cur.rowcount
