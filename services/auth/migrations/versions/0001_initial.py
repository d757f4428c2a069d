"""Clients, accounts, login throttling, signing keys and refresh tokens.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Registered OAuth2 clients. Secrets are 256-bit random values generated here,
    # so a fast digest (not a password hash) is the right storage (see crypto.py).
    op.execute("""
        CREATE TABLE clients (
            client_id                   text PRIMARY KEY CHECK (client_id ~ '^[A-Za-z0-9._-]{3,64}$'),
            name                        text        NOT NULL,
            secret_hash                 text        NOT NULL,
            previous_secret_hash        text,
            previous_secret_expires_at  timestamptz,
            allowed_scopes              text[]      NOT NULL DEFAULT '{}',
            grant_types                 text[]      NOT NULL,
            first_party                 boolean     NOT NULL DEFAULT false,
            created_at                  timestamptz NOT NULL DEFAULT now(),
            secret_rotated_at           timestamptz,
            deleted_at                  timestamptz,
            -- The password grant hands a user's password to the client: first-party only.
            CHECK (first_party OR NOT ('password' = ANY (grant_types)))
        )
    """)
    op.execute("""
        CREATE TABLE users (
            id             uuid PRIMARY KEY,
            username       text        NOT NULL,
            password_hash  text        NOT NULL,
            role           text        NOT NULL CHECK (role IN ('customer', 'operator')),
            scopes         text[]      NOT NULL,
            created_at     timestamptz NOT NULL DEFAULT now(),
            disabled_at    timestamptz
        )
    """)
    op.execute("CREATE UNIQUE INDEX users_username_idx ON users (lower(username))")
    # Failed logins per account name, whether or not the account exists (a lock-out
    # that only real accounts could get would tell an attacker which names exist).
    op.execute("""
        CREATE TABLE login_throttle (
            username         text PRIMARY KEY,
            failures         integer     NOT NULL DEFAULT 0,
            locked_until     timestamptz,
            last_failure_at  timestamptz NOT NULL DEFAULT now()
        )
    """)
    # RS256 signing keys. The newest key whose activates_at has passed signs; every key
    # is published in the JWKS until publish_until (tokens it signed have expired by then).
    # Private keys are encrypted at rest (Fernet, AUTH_KEY_ENCRYPTION_KEYS).
    op.execute("""
        CREATE TABLE signing_keys (
            kid                    text PRIMARY KEY,
            alg                    text        NOT NULL DEFAULT 'RS256',
            public_jwk             jsonb       NOT NULL,
            private_key_encrypted  bytea       NOT NULL,
            created_at             timestamptz NOT NULL DEFAULT now(),
            activates_at           timestamptz NOT NULL DEFAULT now(),
            publish_until          timestamptz
        )
    """)
    op.execute("CREATE INDEX signing_keys_activation_idx ON signing_keys (activates_at DESC)")
    op.execute("""
        CREATE TABLE refresh_tokens (
            id                 uuid PRIMARY KEY,
            token_hash         text        NOT NULL UNIQUE,
            family_id          uuid        NOT NULL,
            client_id          text        NOT NULL REFERENCES clients (client_id),
            user_id            uuid        NOT NULL REFERENCES users (id),
            scope              text        NOT NULL,
            issued_at          timestamptz NOT NULL DEFAULT now(),
            expires_at         timestamptz NOT NULL,
            family_expires_at  timestamptz NOT NULL,
            rotated_at         timestamptz,
            replaced_by        uuid,
            revoked_at         timestamptz,
            revoked_reason     text
        )
    """)
    op.execute("CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family_id)")
    op.execute("CREATE INDEX refresh_tokens_user_idx ON refresh_tokens (user_id, client_id)")
    op.execute("CREATE INDEX refresh_tokens_expiry_idx ON refresh_tokens (expires_at)")


def downgrade() -> None:
    for table in ("refresh_tokens", "signing_keys", "login_throttle", "users", "clients"):
        op.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
