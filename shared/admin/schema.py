"""DDL of the admin tables every message-handling service owns (in its own schema)."""

from __future__ import annotations


def admin_tables_ddl() -> list[str]:
    """Statements creating ``consumer_heartbeats`` and ``blocked_groups``."""
    return [
        # One row per consumer per worker process, upserted by the heartbeat task.
        """
        CREATE TABLE consumer_heartbeats (
            consumer         text        NOT NULL,
            worker           text        NOT NULL,
            alive            boolean     NOT NULL,
            started_at       timestamptz NOT NULL,
            beat_at          timestamptz NOT NULL DEFAULT now(),
            last_message_at  timestamptz,
            handled          bigint      NOT NULL DEFAULT 0,
            failed           bigint      NOT NULL DEFAULT 0,
            dead_lettered    bigint      NOT NULL DEFAULT 0,
            slow_heads       jsonb       NOT NULL DEFAULT '[]',
            -- The worker process's circuit breakers (same for each of its consumers' rows).
            breakers         jsonb       NOT NULL DEFAULT '{}',
            PRIMARY KEY (consumer, worker)
        )
        """,
        # One row per FIFO group whose head message failed and has not yet succeeded
        # or been dead-lettered: the group is blocked behind it meanwhile.
        """
        CREATE TABLE blocked_groups (
            consumer         text        NOT NULL,
            group_id         text        NOT NULL,
            blocked_since    timestamptz NOT NULL DEFAULT now(),
            last_failed_at   timestamptz NOT NULL DEFAULT now(),
            message_id       text,
            event_id         text,
            event_type       text,
            receive_count    integer     NOT NULL,
            retry_in_s       integer     NOT NULL,
            last_error       text        NOT NULL,
            PRIMARY KEY (consumer, group_id)
        )
        """,
    ]


def drop_admin_tables_ddl() -> list[str]:
    """The downgrade of :func:`admin_tables_ddl`."""
    return ["DROP TABLE IF EXISTS blocked_groups", "DROP TABLE IF EXISTS consumer_heartbeats"]
