"""Products, stock adjustments, reservations and their lines, outbox and inbox.

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

SCHEMA = "inventory_svc"


def upgrade() -> None:
    # on_hand: units we own that no confirmed order has taken yet.
    # reserved: units HELD for orders that are not confirmed yet.
    # available = on_hand - reserved. The CHECKs are the last line of defence
    # against overselling: whatever the code does, a product without backorders
    # can never promise more than it has.
    op.execute("""
        CREATE TABLE products (
            sku              text PRIMARY KEY,
            id               uuid        NOT NULL UNIQUE,
            name             text        NOT NULL,
            price            numeric(12, 2) NOT NULL CHECK (price >= 0),
            currency         char(3)     NOT NULL,
            on_hand          integer     NOT NULL,
            reserved         integer     NOT NULL DEFAULT 0 CHECK (reserved >= 0),
            allow_backorder  boolean     NOT NULL DEFAULT false,
            version          integer     NOT NULL DEFAULT 1,
            created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
            updated_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
            deleted_at       timestamptz,
            CHECK (allow_backorder OR on_hand >= 0),
            CHECK (allow_backorder OR on_hand - reserved >= 0)
        )
    """)
    op.execute("CREATE INDEX products_created_idx ON products (created_at DESC, id DESC)"
               " WHERE deleted_at IS NULL")
    op.execute("""
        CREATE TABLE stock_adjustments (
            id             bigserial PRIMARY KEY,
            sku            text        NOT NULL REFERENCES products (sku),
            delta          integer     NOT NULL CHECK (delta <> 0),
            reason         text        NOT NULL,
            note           text,
            on_hand_after  integer     NOT NULL,
            actor          text        NOT NULL,
            created_at     timestamptz NOT NULL DEFAULT clock_timestamp()
        )
    """)
    op.execute("CREATE INDEX stock_adjustments_sku_idx ON stock_adjustments (sku, id)")
    op.execute("""
        CREATE TABLE reservations (
            order_id        uuid PRIMARY KEY,
            status          text        NOT NULL,
            lines_hash      text        NOT NULL,
            currency        char(3)     NOT NULL,
            total           numeric(14, 2) NOT NULL CHECK (total >= 0),
            requested_by    text        NOT NULL,
            expires_at      timestamptz,
            created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
            updated_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
            confirmed_at    timestamptz,
            released_at     timestamptz,
            release_reason  text,
            CHECK (status IN ('HELD', 'CONFIRMED', 'RELEASED')),
            CHECK ((status = 'HELD') = (expires_at IS NOT NULL))
        )
    """)
    # The sweeper scans only HELD reservations, oldest deadline first.
    op.execute("CREATE INDEX reservations_held_expiry_idx ON reservations (expires_at)"
               " WHERE status = 'HELD'")
    op.execute("""
        CREATE TABLE reservation_lines (
            order_id    uuid    NOT NULL REFERENCES reservations (order_id) ON DELETE CASCADE,
            line_no     integer NOT NULL,
            sku         text    NOT NULL REFERENCES products (sku),
            name        text    NOT NULL,
            quantity    integer NOT NULL CHECK (quantity > 0),
            unit_price  numeric(12, 2) NOT NULL CHECK (unit_price >= 0),
            line_total  numeric(14, 2) NOT NULL,
            PRIMARY KEY (order_id, line_no)
        )
    """)
    for statement in messaging_tables_ddl(SCHEMA):
        op.execute(statement)


def downgrade() -> None:
    for table in ("inbox", "outbox", "reservation_lines", "reservations", "stock_adjustments",
                  "products"):
        op.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
    op.execute("DROP FUNCTION IF EXISTS outbox_notify()")
