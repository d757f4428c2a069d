"""Access-token revocation: the access tokens issued, and the deny-list of revoked ones.

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
    # Every access token issued, by jti, with what a revocation selects it by (its
    # client, user and refresh-token family). Only the jti and the lifetime are kept,
    # never the token. Rows are deleted once the token has expired.
    op.execute("""
        CREATE TABLE issued_access_tokens (
            jti         text        PRIMARY KEY CHECK (length(jti) BETWEEN 1 AND 128),
            client_id   text        NOT NULL,
            user_id     uuid,
            family_id   uuid,
            expires_at  timestamptz NOT NULL
        )""")
    op.execute("CREATE INDEX issued_access_tokens_family ON issued_access_tokens (family_id)"
               " WHERE family_id IS NOT NULL")
    op.execute("CREATE INDEX issued_access_tokens_user ON issued_access_tokens (user_id)"
               " WHERE user_id IS NOT NULL")
    op.execute("CREATE INDEX issued_access_tokens_client ON issued_access_tokens (client_id)")
    op.execute("CREATE INDEX issued_access_tokens_expiry ON issued_access_tokens (expires_at)")
    # The deny-list every verifier follows (GET /v1/revocations?after=<seq>). seq is the
    # feed's cursor: revocations are serialized by an advisory lock, so seq values commit
    # in order and a cursor never skips a row committed later with a smaller seq.
    op.execute("""
        CREATE TABLE revoked_access_tokens (
            seq         bigserial   PRIMARY KEY,
            jti         text        NOT NULL UNIQUE CHECK (length(jti) BETWEEN 1 AND 128),
            expires_at  timestamptz NOT NULL,
            revoked_at  timestamptz NOT NULL DEFAULT now(),
            reason      text        NOT NULL
        )""")
    op.execute("CREATE INDEX revoked_access_tokens_expiry ON revoked_access_tokens (expires_at)")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS revoked_access_tokens")
    op.execute("DROP TABLE IF EXISTS issued_access_tokens")
