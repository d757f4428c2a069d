"""Refunded units go back on hand once per refund.

``refund_restocks`` remembers each refund whose lines were restocked (the
second guard beside the inbox: a refund is restocked once even if its event
came twice under two ids).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        CREATE TABLE refund_restocks (
            refund_id    uuid PRIMARY KEY,
            order_id     uuid        NOT NULL,
            lines        jsonb       NOT NULL,
            restocked_at timestamptz NOT NULL DEFAULT clock_timestamp()
        )
    """)


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS refund_restocks")
