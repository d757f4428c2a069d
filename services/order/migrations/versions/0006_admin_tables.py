"""Admin view of the consumers: ``consumer_heartbeats`` and ``blocked_groups`` (shared.admin).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""
from alembic import op

from shared.admin.schema import admin_tables_ddl, drop_admin_tables_ddl

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for statement in admin_tables_ddl():
        op.execute(statement)


def downgrade() -> None:
    for statement in drop_admin_tables_ddl():
        op.execute(statement)
