"""A carrier client is bound to its carrier: ``clients.carrier``.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03
"""
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The carrier id (the delivery service's shipments.carrier, e.g. DHL) a client's
    # tokens carry as the ``carrier`` claim; NULL for every client that is no carrier.
    # The same pattern as services/auth/handlers.py: CARRIER_PATTERN.
    op.execute("ALTER TABLE clients ADD COLUMN carrier text"
               " CHECK (carrier ~ '^[A-Za-z0-9._-]{1,64}$')")


def downgrade() -> None:
    op.execute("ALTER TABLE clients DROP COLUMN IF EXISTS carrier")
