"""Outbox NOTIFY from at most one open transaction at a time.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""
from alembic import op

from shared.messaging.schema import coalesced_notify_ddl, plain_notify_ddl

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SCHEMA = "delivery_svc"


def upgrade() -> None:
    op.execute(coalesced_notify_ddl(SCHEMA))


def downgrade() -> None:
    op.execute(plain_notify_ddl(SCHEMA))
