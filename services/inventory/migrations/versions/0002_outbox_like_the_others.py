"""Outbox NOTIFY coalescing and outbox.delay_seconds, like every other service's.

The first migration creates them for schemas made from now on; a schema
migrated earlier gets them here (both statements are idempotent). The
inventory service publishes no events today; its outbox only stays the same
shape as everyone else's, so the shared relay can serve it the day it does.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""
from alembic import op

from shared.messaging.schema import coalesced_notify_ddl, outbox_delay_ddl, plain_notify_ddl

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SCHEMA = "inventory_svc"


def upgrade() -> None:
    op.execute(coalesced_notify_ddl(SCHEMA))
    op.execute(outbox_delay_ddl())


def downgrade() -> None:
    op.execute(plain_notify_ddl(SCHEMA))
