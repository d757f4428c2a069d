"""An idempotency key remembers the order id it reserved stock for.

Checkout reserves stock (keyed by the order id) before it commits the order,
so a retry with the same Idempotency-Key and body must reuse that order id:
inventory then answers with the same reservation instead of holding the stock
twice. A failed attempt now leaves its key ``released`` (claimable at once,
order id kept) instead of deleting it.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE idempotency_keys ADD COLUMN order_id uuid")
    op.execute("ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_state_check")
    op.execute("ALTER TABLE idempotency_keys ADD CONSTRAINT idempotency_keys_state_check"
               " CHECK (state IN ('in_progress', 'completed', 'released'))")


def downgrade() -> None:
    op.execute("DELETE FROM idempotency_keys WHERE state = 'released'")
    op.execute("ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_state_check")
    op.execute("ALTER TABLE idempotency_keys ADD CONSTRAINT idempotency_keys_state_check"
               " CHECK (state IN ('in_progress', 'completed'))")
    op.execute("ALTER TABLE idempotency_keys DROP COLUMN order_id")
