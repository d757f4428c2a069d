"""Orders wait for their payment: status PENDING_PAYMENT and the payment's handle.

An order is now created in PENDING_PAYMENT with its PaymentIntent's id and
client secret (what the storefront confirms it with); ``payment.authorized``
moves it to PENDING_SHIPMENT and sets ``paid_at``. The partial index finds the
unpaid orders the expiry job cancels after ORDER_PAYMENT_TTL_S.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

STATUSES = ("'PENDING_PAYMENT', 'PENDING_SHIPMENT', 'SHIPPED', 'DELIVERED', 'CANCELLED', "
            "'DELIVERY_FAILED'")
OLD_STATUSES = "'PENDING_SHIPMENT', 'SHIPPED', 'DELIVERED', 'CANCELLED', 'DELIVERY_FAILED'"


def upgrade() -> None:
    op.execute("ALTER TABLE orders DROP CONSTRAINT orders_status_check")
    op.execute(f"ALTER TABLE orders ADD CONSTRAINT orders_status_check CHECK (status IN ({STATUSES}))")
    op.execute("ALTER TABLE orders ADD COLUMN payment_intent_id text,"
               " ADD COLUMN payment_client_secret text, ADD COLUMN payment_amount_minor bigint,"
               " ADD COLUMN paid_at timestamptz")
    op.execute("CREATE INDEX orders_unpaid_idx ON orders (created_at) WHERE status = 'PENDING_PAYMENT'")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS orders_unpaid_idx")
    op.execute("UPDATE orders SET status = 'CANCELLED', cancel_reason = 'payment_expired'"
               " WHERE status = 'PENDING_PAYMENT'")
    op.execute("ALTER TABLE orders DROP COLUMN payment_intent_id, DROP COLUMN payment_client_secret,"
               " DROP COLUMN payment_amount_minor, DROP COLUMN paid_at")
    op.execute("ALTER TABLE orders DROP CONSTRAINT orders_status_check")
    op.execute(f"ALTER TABLE orders ADD CONSTRAINT orders_status_check CHECK (status IN ({OLD_STATUSES}))")
