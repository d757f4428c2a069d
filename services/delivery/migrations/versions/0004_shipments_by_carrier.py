"""Carriers list their own shipments: an index for that listing.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A carrier's GET /v1/shipments filters by carrier and pages newest first
    # (services/delivery/repository.py: list_shipments).
    op.execute("CREATE INDEX IF NOT EXISTS shipments_carrier_created_idx"
               " ON shipments (carrier, created_at DESC, id DESC)")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS shipments_carrier_created_idx")
