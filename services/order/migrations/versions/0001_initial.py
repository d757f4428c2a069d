"""Orders, lines, status history, idempotency keys, outbox and inbox.

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

SCHEMA = "order_svc"


def upgrade() -> None:
    op.execute("""
        CREATE TABLE orders (
            id               uuid PRIMARY KEY,
            customer_id      text        NOT NULL,
            customer_email   text        NOT NULL,
            status           text        NOT NULL,
            currency         char(3)     NOT NULL,
            total            numeric(14, 2) NOT NULL CHECK (total >= 0),
            shipping_address jsonb       NOT NULL,
            shipment_id      uuid,
            carrier          text,
            tracking_number  text,
            cancel_reason    text,
            version          integer     NOT NULL DEFAULT 1,
            created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
            updated_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
            CHECK (status IN ('PENDING_SHIPMENT', 'SHIPPED', 'DELIVERED', 'CANCELLED',
                              'DELIVERY_FAILED'))
        )
    """)
    op.execute("CREATE INDEX orders_customer_created_idx ON orders (customer_id, created_at DESC, id DESC)")
    op.execute("CREATE INDEX orders_created_idx ON orders (created_at DESC, id DESC)")
    op.execute("""
        CREATE TABLE order_lines (
            order_id    uuid    NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
            line_no     integer NOT NULL,
            sku         text    NOT NULL,
            quantity    integer NOT NULL CHECK (quantity > 0),
            unit_price  numeric(12, 2) NOT NULL CHECK (unit_price >= 0),
            line_total  numeric(14, 2) NOT NULL,
            PRIMARY KEY (order_id, line_no)
        )
    """)
    op.execute("""
        CREATE TABLE order_status_history (
            id               bigserial PRIMARY KEY,
            order_id         uuid        NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
            status           text        NOT NULL,
            previous_status  text,
            event            text        NOT NULL,
            applied          boolean     NOT NULL DEFAULT true,
            note             text,
            source_event_id  uuid,
            occurred_at      timestamptz NOT NULL,
            recorded_at      timestamptz NOT NULL DEFAULT now()
        )
    """)
    op.execute("CREATE INDEX order_status_history_order_idx ON order_status_history (order_id, id)")
    op.execute("""
        CREATE TABLE idempotency_keys (
            customer_id      text        NOT NULL,
            key              text        NOT NULL,
            request_hash     text        NOT NULL,
            state            text        NOT NULL CHECK (state IN ('in_progress', 'completed')),
            response_status  integer,
            response_body    text,
            response_headers jsonb,
            created_at       timestamptz NOT NULL DEFAULT now(),
            expires_at       timestamptz NOT NULL,
            PRIMARY KEY (customer_id, key)
        )
    """)
    op.execute("CREATE INDEX idempotency_keys_expiry_idx ON idempotency_keys (expires_at)")
    for statement in messaging_tables_ddl(SCHEMA):
        op.execute(statement)


def downgrade() -> None:
    for table in ("inbox", "outbox", "idempotency_keys", "order_status_history", "order_lines",
                  "orders"):
        op.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
    op.execute("DROP FUNCTION IF EXISTS outbox_notify()")
