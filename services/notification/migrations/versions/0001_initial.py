"""Notifications, order contacts, webhook subscriptions/deliveries/attempts, emails, outbox, inbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""
from alembic import op

from shared.messaging.schema import messaging_tables_ddl

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA = "notification_svc"


def upgrade() -> None:
    # One row per order event, in commit order (the id is the SSE event id; see
    # repository.insert_notification for how ids and commits stay in one order).
    op.execute("""
        CREATE TABLE notifications (
            id           bigserial PRIMARY KEY,
            event_id     uuid        NOT NULL UNIQUE,
            order_id     text        NOT NULL,
            customer_id  text        NOT NULL,
            type         text        NOT NULL,
            payload      jsonb       NOT NULL,
            occurred_at  timestamptz NOT NULL,
            created_at   timestamptz NOT NULL DEFAULT clock_timestamp()
        )
    """)
    op.execute("CREATE INDEX notifications_customer_idx ON notifications (customer_id, id)")
    op.execute("CREATE INDEX notifications_order_idx ON notifications (order_id, id)")
    # What later events of an order do not carry (the address, the lines) for mails.
    op.execute("""
        CREATE TABLE order_contacts (
            order_id        text        PRIMARY KEY,
            customer_id     text        NOT NULL,
            customer_email  text,
            details         jsonb       NOT NULL DEFAULT '{}'::jsonb,
            updated_at      timestamptz NOT NULL DEFAULT now()
        )
    """)
    op.execute("""
        CREATE TABLE webhook_subscriptions (
            id                    uuid        PRIMARY KEY,
            owner_id              text        NOT NULL,
            all_customers         boolean     NOT NULL DEFAULT false,
            name                  text        NOT NULL,
            topic                 text        NOT NULL,
            delivery_url          text        NOT NULL,
            secret                text        NOT NULL,
            status                text        NOT NULL,
            disabled_reason       text,
            disabled_at           timestamptz,
            consecutive_failures  integer     NOT NULL DEFAULT 0,
            created_at            timestamptz NOT NULL DEFAULT clock_timestamp(),
            updated_at            timestamptz NOT NULL DEFAULT clock_timestamp(),
            CHECK (status IN ('active', 'paused', 'disabled')),
            CHECK (topic IN ('order.created', 'order.updated', 'order.cancelled',
                             'order.delivered', '*')),
            UNIQUE (owner_id, delivery_url, topic)
        )
    """)
    op.execute("CREATE INDEX webhook_subscriptions_owner_idx"
               " ON webhook_subscriptions (owner_id, created_at DESC, id DESC)")
    op.execute("CREATE INDEX webhook_subscriptions_created_idx"
               " ON webhook_subscriptions (created_at DESC, id DESC)")
    op.execute("""
        CREATE TABLE webhook_deliveries (
            id                uuid        PRIMARY KEY,
            subscription_id   uuid        NOT NULL REFERENCES webhook_subscriptions (id)
                                          ON DELETE CASCADE,
            event_id          uuid        NOT NULL,
            topic             text        NOT NULL,
            body              text        NOT NULL,
            status            text        NOT NULL,
            attempts          integer     NOT NULL DEFAULT 0,
            -- Attempts allowed in all (a manual redelivery grants a new schedule).
            attempt_limit     integer     NOT NULL,
            next_attempt_at   timestamptz NOT NULL DEFAULT now(),
            -- The one live webhook-delivery message carries this token; older ones are stale.
            schedule_token    uuid,
            last_status_code  integer,
            last_error        text,
            created_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
            updated_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
            delivered_at      timestamptz,
            CHECK (status IN ('pending', 'delivered', 'failed', 'cancelled')),
            UNIQUE (subscription_id, event_id)
        )
    """)
    op.execute("CREATE INDEX webhook_deliveries_subscription_idx"
               " ON webhook_deliveries (subscription_id, created_at DESC, id DESC)")
    op.execute("""
        CREATE TABLE webhook_attempts (
            id                bigserial   PRIMARY KEY,
            delivery_id       uuid        NOT NULL REFERENCES webhook_deliveries (id)
                                          ON DELETE CASCADE,
            attempt           integer     NOT NULL,
            attempted_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
            outcome           text        NOT NULL,
            status_code       integer,
            duration_ms       integer,
            response_excerpt  text,
            error             text
        )
    """)
    op.execute("CREATE INDEX webhook_attempts_delivery_idx ON webhook_attempts (delivery_id, id)")
    op.execute("""
        CREATE TABLE email_deliveries (
            id                   bigserial   PRIMARY KEY,
            event_id             uuid        NOT NULL UNIQUE,
            order_id             text        NOT NULL,
            template             text        NOT NULL,
            recipient            text,
            context              jsonb       NOT NULL,
            status               text        NOT NULL,
            attempts             integer     NOT NULL DEFAULT 0,
            next_attempt_at      timestamptz NOT NULL DEFAULT now(),
            lease_until          timestamptz,
            provider             text,
            provider_message_id  text,
            last_error           text,
            created_at           timestamptz NOT NULL DEFAULT clock_timestamp(),
            sent_at              timestamptz,
            CHECK (status IN ('pending', 'sending', 'sent', 'failed', 'skipped'))
        )
    """)
    op.execute("CREATE INDEX email_deliveries_due_idx ON email_deliveries (next_attempt_at)"
               " WHERE status IN ('pending', 'sending')")
    # Outbox (with delay_seconds: webhook retries use SQS DelaySeconds) and inbox.
    for statement in messaging_tables_ddl(SCHEMA):
        op.execute(statement)


def downgrade() -> None:
    for table in ("inbox", "outbox", "email_deliveries", "webhook_attempts", "webhook_deliveries",
                  "webhook_subscriptions", "order_contacts", "notifications"):
        op.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
    op.execute("DROP FUNCTION IF EXISTS outbox_notify()")
