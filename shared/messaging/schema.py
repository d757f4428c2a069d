"""DDL for the outbox and inbox tables every message-handling service owns.

Called from each service's first migration so the tables live in that
service's schema (no service shares tables with another).
"""

OUTBOX_CHANNEL_SUFFIX = "_outbox"


def outbox_channel(schema: str) -> str:
    """The LISTEN/NOTIFY channel the relay of ``schema`` waits on."""
    return f"{schema}{OUTBOX_CHANNEL_SUFFIX}"


def messaging_tables_ddl(schema: str) -> list[str]:
    """Statements creating outbox + inbox (+ NOTIFY trigger) in ``schema``."""
    channel = outbox_channel(schema)
    return [
        """
        CREATE TABLE outbox (
            id               bigserial PRIMARY KEY,
            event_id         uuid        NOT NULL,
            queue            text        NOT NULL,
            aggregate_id     text        NOT NULL,
            event_type       text        NOT NULL,
            body             text        NOT NULL,
            correlation_id   text,
            created_at       timestamptz NOT NULL DEFAULT now(),
            published_at     timestamptz,
            attempts         integer     NOT NULL DEFAULT 0,
            next_attempt_at  timestamptz NOT NULL DEFAULT now(),
            last_error       text,
            UNIQUE (event_id, queue)
        )
        """,
        # The relay only ever scans unpublished rows.
        "CREATE INDEX outbox_pending_idx ON outbox (id) WHERE published_at IS NULL",
        "CREATE INDEX outbox_pending_agg_idx ON outbox (queue, aggregate_id, id) "
        "WHERE published_at IS NULL",
        """
        CREATE TABLE inbox (
            consumer     text        NOT NULL,
            event_id     uuid        NOT NULL,
            event_type   text        NOT NULL,
            received_at  timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (consumer, event_id)
        )
        """,
        f"""
        CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('{channel}', '');
            RETURN NULL;
        END $$
        """,
        # Statement-level: one wake-up per INSERT statement, delivered at commit.
        """
        CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
        FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify()
        """,
    ]
