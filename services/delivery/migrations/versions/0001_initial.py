"""Shipments, their status events, cancel tombstones, outbox and inbox.

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

SCHEMA = "delivery_svc"


def upgrade() -> None:
    op.execute("""
        CREATE TABLE shipments (
            id               uuid PRIMARY KEY,
            order_id         uuid        NOT NULL UNIQUE,   -- one shipment per order
            customer_id      text        NOT NULL,
            carrier          text        NOT NULL,
            tracking_number  text        NOT NULL UNIQUE,
            status           text        NOT NULL,
            shipping_address jsonb       NOT NULL,
            created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
            updated_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
            CHECK (status IN ('CREATED', 'SHIPPED', 'IN_TRANSIT', 'OUT_FOR_DELIVERY',
                              'DELIVERED', 'FAILED', 'CANCELLED'))
        )
    """)
    op.execute("CREATE INDEX shipments_created_idx ON shipments (created_at DESC, id DESC)")
    # The carrier simulator scans shipments still moving.
    op.execute("CREATE INDEX shipments_active_idx ON shipments (updated_at)"
               " WHERE status IN ('CREATED', 'SHIPPED', 'IN_TRANSIT', 'OUT_FOR_DELIVERY')")
    op.execute("""
        CREATE TABLE shipment_events (
            id               bigserial PRIMARY KEY,
            shipment_id      uuid        NOT NULL REFERENCES shipments (id) ON DELETE CASCADE,
            status           text        NOT NULL,
            previous_status  text,
            source           text        NOT NULL,
            location         text,
            note             text,
            occurred_at      timestamptz NOT NULL,
            recorded_at      timestamptz NOT NULL DEFAULT now()
        )
    """)
    op.execute("CREATE INDEX shipment_events_shipment_idx ON shipment_events (shipment_id, id)")
    # A cancel that overtook its create: the later create must make no shipment.
    op.execute("""
        CREATE TABLE cancelled_orders (
            order_id      uuid PRIMARY KEY,
            reason        text,
            cancelled_at  timestamptz NOT NULL DEFAULT now()
        )
    """)
    for statement in messaging_tables_ddl(SCHEMA):
        op.execute(statement)


def downgrade() -> None:
    for table in ("inbox", "outbox", "cancelled_orders", "shipment_events", "shipments"):
        op.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
    op.execute("DROP FUNCTION IF EXISTS outbox_notify()")
