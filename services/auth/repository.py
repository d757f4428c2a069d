"""The auth service's SQL for clients, users, the login throttle and signing keys (schema
``auth_svc``), parameterized; refresh and access tokens are :mod:`services.auth.token_repository`."""

from __future__ import annotations

import json
from uuid import UUID

from shared.backoff import backoff_delay

# ------------------------------------------------------------------ clients


def insert_client(cur, client_id: str, name: str, secret_hash: str, scopes: list[str],
                  grant_types: list[str], first_party: bool, carrier: str | None = None) -> None:
    cur.execute(
        "INSERT INTO clients (client_id, name, secret_hash, allowed_scopes, grant_types, first_party,"
        " carrier) VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (client_id, name, secret_hash, scopes, grant_types, first_party, carrier))


def get_client(cur, client_id: str, include_deleted: bool = False) -> dict | None:
    cur.execute("SELECT * FROM clients WHERE client_id = %s"
                " AND (%s OR deleted_at IS NULL)", (client_id, include_deleted))
    return cur.fetchone()


def list_clients(cur) -> list[dict]:
    cur.execute("SELECT client_id, name, allowed_scopes, grant_types, first_party, carrier,"
                " created_at, secret_rotated_at, deleted_at FROM clients ORDER BY client_id")
    return cur.fetchall()


def rotate_client_secret(cur, client_id: str, secret_hash: str, grace_s: int) -> bool:
    """New secret; the old one keeps working for ``grace_s`` seconds (0: not at all)."""
    cur.execute(
        "UPDATE clients SET previous_secret_hash = CASE WHEN %(grace)s > 0 THEN secret_hash END,"
        " previous_secret_expires_at = CASE WHEN %(grace)s > 0"
        "   THEN now() + make_interval(secs => %(grace)s) END,"
        " secret_hash = %(hash)s, secret_rotated_at = now()"
        " WHERE client_id = %(id)s AND deleted_at IS NULL",
        {"grace": grace_s, "hash": secret_hash, "id": client_id})
    return cur.rowcount == 1


def update_client(cur, client_id: str, scopes: list[str] | None, grant_types: list[str] | None) -> bool:
    cur.execute(
        "UPDATE clients SET allowed_scopes = COALESCE(%s, allowed_scopes),"
        " grant_types = COALESCE(%s, grant_types) WHERE client_id = %s AND deleted_at IS NULL",
        (scopes, grant_types, client_id))
    return cur.rowcount == 1


def set_client_carrier(cur, client_id: str, carrier: str | None) -> bool:
    """Bind the client to ``carrier`` (None: to no carrier)."""
    cur.execute("UPDATE clients SET carrier = %s WHERE client_id = %s AND deleted_at IS NULL",
                (carrier, client_id))
    return cur.rowcount == 1


def delete_client(cur, client_id: str) -> bool:
    cur.execute("UPDATE clients SET deleted_at = now(), secret_hash = '', previous_secret_hash = NULL"
                " WHERE client_id = %s AND deleted_at IS NULL", (client_id,))
    return cur.rowcount == 1


# -------------------------------------------------------------------- users


def insert_user(cur, user_id: UUID, username: str, password_hash: str, role: str,
                scopes: list[str]) -> None:
    cur.execute("INSERT INTO users (id, username, password_hash, role, scopes)"
                " VALUES (%s, %s, %s, %s, %s)", (user_id, username, password_hash, role, scopes))


def get_user(cur, user_id: UUID | str) -> dict | None:
    cur.execute("SELECT * FROM users WHERE id = %s AND disabled_at IS NULL", (str(user_id),))
    return cur.fetchone()


def get_user_by_username(cur, username: str) -> dict | None:
    cur.execute("SELECT * FROM users WHERE lower(username) = lower(%s) AND disabled_at IS NULL",
                (username,))
    return cur.fetchone()


def set_password_hash(cur, user_id: UUID, password_hash: str) -> None:
    cur.execute("UPDATE users SET password_hash = %s WHERE id = %s", (password_hash, user_id))


def set_user_password_and_scopes(cur, user_id: UUID, password_hash: str, scopes: list[str]) -> None:
    cur.execute("UPDATE users SET password_hash = %s, scopes = %s, disabled_at = NULL WHERE id = %s",
                (password_hash, scopes, user_id))


def disable_user(cur, user_id: UUID) -> bool:
    cur.execute("UPDATE users SET disabled_at = now() WHERE id = %s AND disabled_at IS NULL",
                (user_id,))
    return cur.rowcount == 1


# ------------------------------------------------------------ login throttle


def login_lock(cur, username: str) -> float | None:
    """Seconds the account name stays locked, or None."""
    cur.execute("SELECT EXTRACT(EPOCH FROM locked_until - now())::float AS remaining"
                " FROM login_throttle WHERE username = lower(%s) AND locked_until > now()",
                (username,))
    row = cur.fetchone()
    return row["remaining"] if row else None


def record_login_failure(cur, username: str, threshold: int, base_s: int, max_s: int,
                         forget_after_s: int) -> tuple[int, float | None]:
    """Count a failure; from ``threshold`` on, lock for base * 2^(failures - threshold).

    Returns (failures, seconds locked or None). Failures older than
    ``forget_after_s`` no longer count.
    """
    cur.execute(
        """
        INSERT INTO login_throttle AS t (username, failures, last_failure_at)
        VALUES (lower(%(u)s), 1, now())
        ON CONFLICT (username) DO UPDATE
           SET failures = CASE WHEN t.last_failure_at < now() - make_interval(secs => %(forget)s)
                               THEN 1 ELSE t.failures + 1 END,
               last_failure_at = now()
        RETURNING failures
        """, {"u": username, "forget": forget_after_s})
    failures = cur.fetchone()["failures"]
    if failures < threshold:
        return failures, None
    # backoff_delay caps the exponent before the power: a long attack cannot overflow it.
    lock_s = float(backoff_delay(failures - threshold, base_s, max_s))
    cur.execute("UPDATE login_throttle SET locked_until = now() + make_interval(secs => %s)"
                " WHERE username = lower(%s)", (lock_s, username))
    return failures, lock_s


def clear_login_failures(cur, username: str) -> None:
    cur.execute("DELETE FROM login_throttle WHERE username = lower(%s)", (username,))


def purge_login_throttle(cur, older_than_s: int) -> int:
    cur.execute("DELETE FROM login_throttle WHERE last_failure_at < now() - make_interval(secs => %s)"
                " AND (locked_until IS NULL OR locked_until < now())", (older_than_s,))
    return cur.rowcount


# ------------------------------------------------------------- signing keys


def lock_signing_keys(cur) -> None:
    """Serialize key creation and rotation (several processes may try at once)."""
    cur.execute("SELECT pg_advisory_xact_lock(hashtext('auth_svc.signing_keys'))")


def insert_signing_key(cur, kid: str, public_jwk: dict, private_key_encrypted: bytes,
                       activates_in_s: int) -> None:
    cur.execute(
        "INSERT INTO signing_keys (kid, public_jwk, private_key_encrypted, activates_at)"
        " VALUES (%s, %s, %s, now() + make_interval(secs => %s))",
        (kid, json.dumps(public_jwk), private_key_encrypted, activates_in_s))


def current_signing_key(cur) -> dict | None:
    """The key that signs now: the newest one already active and still published."""
    cur.execute("SELECT * FROM signing_keys WHERE activates_at <= now()"
                " AND (publish_until IS NULL OR publish_until > now())"
                " ORDER BY activates_at DESC, created_at DESC LIMIT 1")
    return cur.fetchone()


def retire_signing_keys_except(cur, kid: str, publish_until_after_s: int) -> int:
    """Every other unretired key stops signing when ``kid`` activates and stays
    published for ``publish_until_after_s`` seconds after that."""
    cur.execute(
        "UPDATE signing_keys SET publish_until = (SELECT activates_at FROM signing_keys WHERE kid = %s)"
        "   + make_interval(secs => %s)"
        " WHERE kid <> %s AND publish_until IS NULL", (kid, publish_until_after_s, kid))
    return cur.rowcount


def delete_pending_signing_keys(cur) -> int:
    cur.execute("DELETE FROM signing_keys WHERE activates_at > now()")
    return cur.rowcount


def published_signing_keys(cur) -> list[dict]:
    cur.execute("SELECT kid, public_jwk, activates_at, publish_until, created_at FROM signing_keys"
                " WHERE publish_until IS NULL OR publish_until > now()"
                " ORDER BY activates_at DESC, created_at DESC")
    return cur.fetchall()


def all_signing_keys(cur) -> list[dict]:
    cur.execute("SELECT kid, activates_at, publish_until, created_at,"
                " (activates_at <= now() AND (publish_until IS NULL OR publish_until > now())) AS usable"
                " FROM signing_keys ORDER BY activates_at DESC, created_at DESC")
    return cur.fetchall()


def delete_expired_signing_keys(cur) -> int:
    cur.execute("DELETE FROM signing_keys WHERE publish_until < now()")
    return cur.rowcount


def encrypted_private_keys(cur) -> list[dict]:
    cur.execute("SELECT kid, private_key_encrypted FROM signing_keys FOR UPDATE")
    return cur.fetchall()


def set_encrypted_private_key(cur, kid: str, private_key_encrypted: bytes) -> None:
    cur.execute("UPDATE signing_keys SET private_key_encrypted = %s WHERE kid = %s",
                (private_key_encrypted, kid))
