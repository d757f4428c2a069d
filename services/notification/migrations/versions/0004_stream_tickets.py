"""Single-use stream tickets: how a browser's EventSource (which cannot send an
Authorization header) opens the SSE stream without a token in its URL.

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
    # Only the SHA-256 of a ticket is stored: a copy of this table opens no stream.
    # A ticket is bound to the principal that asked for it (subject, whether admin,
    # when its token expires) and to the order it names (NULL: all of the principal's).
    op.execute("""
        CREATE TABLE stream_tickets (
            ticket_hash       bytea       PRIMARY KEY CHECK (octet_length(ticket_hash) = 32),
            subject           text        NOT NULL,
            is_admin          boolean     NOT NULL,
            order_id          text,
            token_expires_at  timestamptz,
            expires_at        timestamptz NOT NULL,
            used_at           timestamptz,
            created_at        timestamptz NOT NULL DEFAULT now()
        )
    """)
    op.execute("CREATE INDEX stream_tickets_expires_idx ON stream_tickets (expires_at)")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS stream_tickets")
