"""Admin view of the consumers: ``consumer_heartbeats`` and ``blocked_groups`` (shared.admin).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""
from alembic import op

from shared.admin.schema import admin_tables_ddl, drop_admin_tables_ddl

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for statement in admin_tables_ddl():
        op.execute(statement)


def downgrade() -> None:
    for statement in drop_admin_tables_ddl():
        op.execute(statement)
