"""DDL for the outbox and inbox tables every message-handling service owns.

Called from each service's first migration so the tables live in that
service's schema (no service shares tables with another).
"""

OUTBOX_CHANNEL_SUFFIX = "_outbox"


def outbox_channel(schema: str) -> str:
    """The LISTEN/NOTIFY channel the relay of ``schema`` waits on."""
    return f"{schema}{OUTBOX_CHANNEL_SUFFIX}"


# Advisory-lock class (first key of the two-int form, a key space apart from
# the relay's one-bigint stream locks) for "a NOTIFY is already on its way".
NOTIFY_LOCK_CLASS = 0x6F_75_74_62  # "outb"


def coalesced_notify_ddl(schema: str) -> str:
    """``outbox_notify()`` that lets at most one open transaction at a time NOTIFY.

    Postgres serializes committing transactions that sent NOTIFY on one
    cluster-wide lock, held through the commit's WAL flush. With a NOTIFY in
    every order/shipment transaction, commits queued behind each other (and
    behind a lock holder the OS had descheduled): the pipeline benchmark showed
    most backends waiting on ``Lock:object`` at COMMIT. One pending NOTIFY is
    enough to wake the relay, and it publishes every row committed by then;
    a transaction that skips its NOTIFY because another holds the lock and
    commits after the relay's last round is caught by the relay's short
    re-check after a busy spell, at worst by its polling fallback.
    """
    channel = outbox_channel(schema)
    return f"""
        CREATE OR REPLACE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF pg_try_advisory_xact_lock({NOTIFY_LOCK_CLASS}, hashtext('{channel}')) THEN
                PERFORM pg_notify('{channel}', '');
            END IF;
            RETURN NULL;
        END $$
        """


def plain_notify_ddl(schema: str) -> str:
    """The original ``outbox_notify()``: every inserting transaction NOTIFYs."""
    channel = outbox_channel(schema)
    return f"""
        CREATE OR REPLACE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('{channel}', '');
            RETURN NULL;
        END $$
        """


# SQS allows DelaySeconds 0..900 (15 minutes), and only on standard queues.
MAX_DELAY_SECONDS = 900


def outbox_delay_ddl() -> str:
    """Adds ``outbox.delay_seconds`` (per-message SQS DelaySeconds), idempotently.

    Part of :func:`messaging_tables_ddl` for new schemas; services migrated
    before it existed run it in a later migration (a no-op where it is there).
    """
    return ("ALTER TABLE outbox ADD COLUMN IF NOT EXISTS delay_seconds integer NOT NULL DEFAULT 0"
            f" CHECK (delay_seconds BETWEEN 0 AND {MAX_DELAY_SECONDS})")


def messaging_tables_ddl(schema: str) -> list[str]:
    """Statements creating outbox + inbox (+ NOTIFY trigger) in ``schema``."""
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
        outbox_delay_ddl(),
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
        # Services migrated before 0002 got plain_notify_ddl here; their 0002 swaps it.
        coalesced_notify_ddl(schema),
        # Statement-level: one wake-up per INSERT statement, delivered at commit.
        """
        CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
        FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify()
        """,
    ]
