"""The operators' audit log: who did what, when, with which parameters.

Revision ID: 0001
Revises:
Create Date: 2026-12-03
"""
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        CREATE TABLE audit_log (
            id          bigserial PRIMARY KEY,
            at          timestamptz NOT NULL DEFAULT clock_timestamp(),
            actor       text        NOT NULL,
            client_id   text,
            action      text        NOT NULL,
            target      text        NOT NULL,
            parameters  jsonb       NOT NULL DEFAULT '{}',
            outcome     text        NOT NULL CHECK (outcome IN ('ok', 'refused', 'failed')),
            result      jsonb       NOT NULL DEFAULT '{}',
            request_id  text
        )
    """)
    op.execute("CREATE INDEX audit_log_at_idx ON audit_log (at DESC, id DESC)")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS audit_log")
