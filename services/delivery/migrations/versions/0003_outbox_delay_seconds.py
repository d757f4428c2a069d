"""Outbox rows carry a per-message SQS DelaySeconds (standard queues only).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""
from alembic import op

from shared.messaging.schema import outbox_delay_ddl

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The relay is shared by every service, so every outbox has the column.
    op.execute(outbox_delay_ddl())


def downgrade() -> None:
    op.execute("ALTER TABLE outbox DROP COLUMN IF EXISTS delay_seconds")
