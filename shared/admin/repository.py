"""All SQL of the admin view of one service's schema: blocked groups, heartbeats, outbox."""

from __future__ import annotations

import json

from shared.messaging.schema import outbox_channel

MAX_ERROR_CHARS = 1000


# -- blocked FIFO groups -------------------------------------------------------------
def record_group_failure(cur, consumer: str, group_id: str, message_id: str | None,
                         event_id: str | None, event_type: str | None, receive_count: int,
                         retry_in_s: int, error: str) -> None:
    """The head of ``group_id`` failed: the group is blocked (since its first failure)."""
    cur.execute(
        """
        INSERT INTO blocked_groups (consumer, group_id, message_id, event_id, event_type,
                                    receive_count, retry_in_s, last_error)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (consumer, group_id) DO UPDATE
           SET last_failed_at = now(), message_id = EXCLUDED.message_id,
               event_id = EXCLUDED.event_id, event_type = EXCLUDED.event_type,
               receive_count = EXCLUDED.receive_count, retry_in_s = EXCLUDED.retry_in_s,
               last_error = EXCLUDED.last_error
        """,
        (consumer, group_id, message_id, event_id, event_type, receive_count, retry_in_s,
         error[:MAX_ERROR_CHARS]),
    )


def clear_group(cur, consumer: str, group_id: str) -> None:
    """The group's head succeeded or left for the DLQ: it is no longer blocked."""
    cur.execute("DELETE FROM blocked_groups WHERE consumer = %s AND group_id = %s",
                (consumer, group_id))


def blocked_group_ids(cur, consumer: str) -> set[str]:
    """The groups recorded as blocked for ``consumer`` (read when the consumer starts)."""
    cur.execute("SELECT group_id FROM blocked_groups WHERE consumer = %s", (consumer,))
    return {row["group_id"] for row in cur.fetchall()}


def list_blocked_groups(cur, min_age_s: float, limit: int) -> list[dict]:
    """Blocked groups, longest-blocked first, blocked for at least ``min_age_s``."""
    cur.execute(
        """
        SELECT consumer, group_id, blocked_since, last_failed_at, message_id, event_id,
               event_type, receive_count, retry_in_s, last_error,
               EXTRACT(EPOCH FROM now() - blocked_since)::float AS blocked_for_s
          FROM blocked_groups
         WHERE blocked_since <= now() - make_interval(secs => %s)
         ORDER BY blocked_since, consumer, group_id
         LIMIT %s
        """,
        (min_age_s, limit),
    )
    return cur.fetchall()


# -- consumer heartbeats ---------------------------------------------------------------
def beat(cur, rows: list[dict]) -> None:
    """Upsert one heartbeat row per consumer of this worker process."""
    for row in rows:
        cur.execute(
            """
            INSERT INTO consumer_heartbeats (consumer, worker, alive, started_at, beat_at,
                                             last_message_at, handled, failed, dead_lettered,
                                             slow_heads, breakers)
            VALUES (%(consumer)s, %(worker)s, %(alive)s, %(started_at)s, now(),
                    %(last_message_at)s, %(handled)s, %(failed)s, %(dead_lettered)s,
                    %(slow_heads)s, %(breakers)s)
            ON CONFLICT (consumer, worker) DO UPDATE
               SET alive = EXCLUDED.alive, beat_at = now(),
                   last_message_at = EXCLUDED.last_message_at, handled = EXCLUDED.handled,
                   failed = EXCLUDED.failed, dead_lettered = EXCLUDED.dead_lettered,
                   slow_heads = EXCLUDED.slow_heads, breakers = EXCLUDED.breakers
            """,
            {**row, "slow_heads": json.dumps(row["slow_heads"]),
             "breakers": json.dumps(row["breakers"], default=str)},
        )


def list_heartbeats(cur, stale_after_s: float) -> list[dict]:
    """Every consumer's heartbeat rows; ``alive`` only if it said so within ``stale_after_s``."""
    cur.execute(
        """
        SELECT consumer, worker, started_at, beat_at, last_message_at, handled, failed,
               dead_lettered, slow_heads, breakers,
               alive AND beat_at > now() - make_interval(secs => %s) AS alive
          FROM consumer_heartbeats
         ORDER BY consumer, worker
        """,
        (stale_after_s,),
    )
    return cur.fetchall()


def forget_heartbeats(cur, older_than_s: float) -> int:
    """Drop rows of worker processes that stopped beating long ago (restarted pods)."""
    cur.execute("DELETE FROM consumer_heartbeats WHERE beat_at < now() - make_interval(secs => %s)",
                (older_than_s,))
    return cur.rowcount


# -- outbox ------------------------------------------------------------------------------
def outbox_summary(cur) -> list[dict]:
    """Per queue: unpublished rows, the oldest one's age, and how many of them failed a send."""
    cur.execute(
        """
        SELECT queue, count(*) AS pending,
               EXTRACT(EPOCH FROM now() - min(created_at))::float AS oldest_pending_s,
               count(*) FILTER (WHERE attempts > 0) AS failed,
               COALESCE(max(attempts), 0) AS max_attempts
          FROM outbox WHERE published_at IS NULL
         GROUP BY queue ORDER BY queue
        """
    )
    return cur.fetchall()


def failed_outbox_rows(cur, limit: int, queue: str | None) -> list[dict]:
    """Unpublished rows that failed at least one send, oldest first."""
    cur.execute(
        """
        SELECT id, event_id::text, queue, aggregate_id, event_type, attempts, last_error,
               created_at, next_attempt_at
          FROM outbox
         WHERE published_at IS NULL AND attempts > 0 AND (%s::text IS NULL OR queue = %s)
         ORDER BY id LIMIT %s
        """,
        (queue, queue, limit),
    )
    return cur.fetchall()


def retry_outbox_now(cur, schema: str, ids: list[int] | None) -> list[int]:
    """Make failed unpublished rows (all, or those in ``ids``) due now, and wake the relay.

    Only the retry time changes: the relay still publishes each stream in id
    order, so retrying a row behind an older failed one of its stream waits for it.
    """
    cur.execute(
        "UPDATE outbox SET next_attempt_at = now() WHERE published_at IS NULL AND attempts > 0"
        " AND (%s::bigint[] IS NULL OR id = ANY(%s::bigint[])) RETURNING id",
        (ids, ids),
    )
    retried = sorted(row["id"] for row in cur.fetchall())
    if retried:
        cur.execute("SELECT pg_notify(%s, '')", (outbox_channel(schema),))
    return retried
