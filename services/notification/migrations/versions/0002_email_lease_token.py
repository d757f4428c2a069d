"""Mail leases name their holder: ``email_deliveries.lease_token``.

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
    # Set by every claim; a sender renews the lease, and records the outcome, only while
    # the token is still its own (services/notification/email_repository.py), so a mail
    # taken over after its lease ran out is sent and recorded by its new holder alone.
    op.execute("ALTER TABLE email_deliveries ADD COLUMN lease_token uuid")


def downgrade() -> None:
    op.execute("ALTER TABLE email_deliveries DROP COLUMN IF EXISTS lease_token")
