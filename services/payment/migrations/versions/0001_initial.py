"""Payments, their history, refunds, received Stripe events, outbox and inbox.

Revision ID: 0001
Revises:
Create Date: 2026-12-03
"""
from alembic import op

from shared.messaging.schema import messaging_tables_ddl

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA = "payment_svc"


def upgrade() -> None:
    op.execute("""
        CREATE TABLE payments (
            order_id         uuid PRIMARY KEY,
            customer_id      text        NOT NULL,
            currency         char(3)     NOT NULL,
            amount_minor     bigint      NOT NULL CHECK (amount_minor > 0),
            lines            jsonb       NOT NULL,
            status           text        NOT NULL,
            intent_id        text UNIQUE,
            client_secret    text,
            amount_captured  bigint      NOT NULL DEFAULT 0 CHECK (amount_captured >= 0),
            amount_refunded  bigint      NOT NULL DEFAULT 0
                             CHECK (amount_refunded >= 0 AND amount_refunded <= amount_captured),
            last_error       text,
            created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
            updated_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
            checked_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
            CHECK (status IN ('REQUIRES_PAYMENT', 'AUTHORIZED', 'CAPTURED', 'REFUNDED', 'VOIDED',
                              'REFUSED'))
        )
    """)
    op.execute("CREATE INDEX payments_unsettled_idx ON payments (checked_at)"
               " WHERE status = 'REQUIRES_PAYMENT'")
    op.execute("""
        CREATE TABLE payment_history (
            id               bigserial PRIMARY KEY,
            order_id         uuid        NOT NULL REFERENCES payments (order_id) ON DELETE CASCADE,
            status           text        NOT NULL,
            previous_status  text,
            action           text        NOT NULL,
            amount_minor     bigint,
            note             text,
            recorded_at      timestamptz NOT NULL DEFAULT clock_timestamp()
        )
    """)
    op.execute("CREATE INDEX payment_history_order_idx ON payment_history (order_id, id)")
    op.execute("""
        CREATE TABLE refunds (
            id                 uuid PRIMARY KEY,
            order_id           uuid        NOT NULL REFERENCES payments (order_id) ON DELETE CASCADE,
            request_key        text,
            amount_minor       bigint      NOT NULL CHECK (amount_minor > 0),
            lines              jsonb       NOT NULL,
            status             text        NOT NULL CHECK (status IN ('PENDING', 'SUCCEEDED')),
            provider_refund_id text,
            requested_by       text        NOT NULL,
            created_at         timestamptz NOT NULL DEFAULT clock_timestamp(),
            completed_at       timestamptz,
            UNIQUE (order_id, request_key)
        )
    """)
    op.execute("CREATE INDEX refunds_pending_idx ON refunds (created_at) WHERE status = 'PENDING'")
    op.execute("""
        CREATE TABLE stripe_events (
            id           text PRIMARY KEY,
            type         text        NOT NULL,
            outcome      text        NOT NULL,
            received_at  timestamptz NOT NULL DEFAULT clock_timestamp()
        )
    """)
    for statement in messaging_tables_ddl(SCHEMA):
        op.execute(statement)


def downgrade() -> None:
    for table in ("inbox", "outbox", "stripe_events", "refunds", "payment_history", "payments"):
        op.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
    op.execute("DROP FUNCTION IF EXISTS outbox_notify()")
