"""All SQL of the auth service (schema ``auth_svc``), parameterized."""

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


# ----------------------------------------------------------- refresh tokens


def insert_refresh_token(cur, token_id: UUID, token_hash: str, family_id: UUID, client_id: str,
                         user_id: UUID, scope: str, ttl_s: int, family_max_s: int) -> bool:
    """A refresh token, unless its family has been revoked (False then).

    A new family starts its absolute lifetime now, a rotation inherits it. Run in the
    transaction that claimed the token it replaces; together with the re-scan in
    :func:`_revoke` no revocation can miss it.
    """
    cur.execute(
        """
        INSERT INTO refresh_tokens (id, token_hash, family_id, client_id, user_id, scope,
                                    expires_at, family_expires_at)
        SELECT %(id)s, %(hash)s, %(family)s, %(client)s, %(user)s, %(scope)s,
               LEAST(now() + make_interval(secs => %(ttl)s), fam.family_expires_at),
               fam.family_expires_at
          FROM (SELECT COALESCE(
                  (SELECT family_expires_at FROM refresh_tokens WHERE family_id = %(family)s LIMIT 1),
                  now() + make_interval(secs => %(family_max)s)) AS family_expires_at) fam
         WHERE NOT EXISTS (SELECT 1 FROM refresh_tokens
                            WHERE family_id = %(family)s AND revoked_at IS NOT NULL)
        """,
        {"id": token_id, "hash": token_hash, "family": family_id, "client": client_id,
         "user": user_id, "scope": scope, "ttl": ttl_s, "family_max": family_max_s})
    return cur.rowcount == 1


def get_refresh_token_by_hash(cur, token_hash: str) -> dict | None:
    cur.execute("SELECT * FROM refresh_tokens WHERE token_hash = %s", (token_hash,))
    return cur.fetchone()


def claim_refresh_token(cur, token_hash: str, client_id: str) -> dict | None:
    """Mark a live token as used (rotated) in one statement; None if it was not live.

    Two requests racing with the same token: exactly one claims it; the other
    sees a rotated token, which is treated as reuse. The successor is stored in the
    same transaction (:func:`insert_refresh_token`), so the claim's row lock holds
    off any revocation of the family until the successor is visible to it.
    """
    cur.execute(
        "UPDATE refresh_tokens SET rotated_at = now()"
        " WHERE token_hash = %s AND client_id = %s AND rotated_at IS NULL AND revoked_at IS NULL"
        "   AND expires_at > now()"
        " RETURNING *", (token_hash, client_id))
    return cur.fetchone()


def set_replaced_by(cur, token_id: UUID, replaced_by: UUID) -> None:
    cur.execute("UPDATE refresh_tokens SET replaced_by = %s WHERE id = %s", (replaced_by, token_id))


def _revoke(cur, statement: str, params: tuple) -> int:
    """Run a revoking UPDATE until it changes nothing; the number of tokens revoked.

    A rotation claims its old token (a row lock) and stores the successor in one
    transaction. A revocation that started before that commit waits on the claimed
    row, and its statement's snapshot does not hold the successor. In READ COMMITTED
    every statement takes a new snapshot, so the repeat sees each successor that was
    committed while the revocation waited, and no rotation outlives a revocation.
    """
    total = 0
    while True:
        cur.execute(statement, params)
        if cur.rowcount == 0:
            return total
        total += cur.rowcount


# Each revocation of refresh tokens also ends the access tokens already issued from them
# (deny_issued_access_tokens, after the refresh tokens so that it sees every successor).


def revoke_family(cur, family_id: UUID, reason: str) -> int:
    count = _revoke(cur, "UPDATE refresh_tokens SET revoked_at = now(), revoked_reason = %s"
                         " WHERE family_id = %s AND revoked_at IS NULL", (reason, family_id))
    deny_issued_access_tokens(cur, reason, family_id=family_id)
    return count


def revoke_user_tokens(cur, user_id: UUID, client_id: str | None, reason: str) -> int:
    count = _revoke(cur, "UPDATE refresh_tokens SET revoked_at = now(), revoked_reason = %s"
                         " WHERE user_id = %s AND (%s::text IS NULL OR client_id = %s)"
                         " AND revoked_at IS NULL", (reason, user_id, client_id, client_id))
    deny_issued_access_tokens(cur, reason, user_id=user_id, client_id=client_id)
    return count


def revoke_client_tokens(cur, client_id: str, reason: str) -> int:
    count = _revoke(cur, "UPDATE refresh_tokens SET revoked_at = now(), revoked_reason = %s"
                         " WHERE client_id = %s AND revoked_at IS NULL", (reason, client_id))
    deny_issued_access_tokens(cur, reason, client_id=client_id)
    return count


def purge_expired_refresh_tokens(cur, older_than_s: int) -> int:
    cur.execute("DELETE FROM refresh_tokens WHERE family_expires_at < now() - make_interval(secs => %s)"
                " OR expires_at < now() - make_interval(secs => %s)", (older_than_s, older_than_s))
    return cur.rowcount


# ------------------------------------------------- access tokens and their deny-list


def record_access_token(cur, jti: str, client_id: str, user_id: UUID | None, family_id: UUID | None,
                        expires_at: int) -> None:
    """Remember an issued access token (its jti, never the token) until it expires."""
    cur.execute("INSERT INTO issued_access_tokens (jti, client_id, user_id, family_id, expires_at)"
                " VALUES (%s, %s, %s, %s, to_timestamp(%s))",
                (jti, client_id, user_id, family_id, expires_at))


def _lock_revocations(cur) -> None:
    """Serialize deny-list writers until commit, so seq values become visible in order and
    a feed reader's cursor (the last seq it saw) never passes a row still uncommitted."""
    cur.execute("SELECT pg_advisory_xact_lock(hashtext('auth_svc.revoked_access_tokens'))")


def _notify_revocations(cur) -> None:
    # Delivered at commit to every auth process LISTENing (services/auth/revocations.py).
    cur.execute("SELECT pg_notify('auth_revocations', '')")


def deny_access_token(cur, jti: str, expires_at: int, reason: str) -> bool:
    """Put one access token on the deny-list; False if it already was."""
    _lock_revocations(cur)
    cur.execute("INSERT INTO revoked_access_tokens (jti, expires_at, reason)"
                " VALUES (%s, to_timestamp(%s), %s) ON CONFLICT (jti) DO NOTHING",
                (jti, expires_at, reason))
    if cur.rowcount:
        _notify_revocations(cur)
    return cur.rowcount == 1


def deny_issued_access_tokens(cur, reason: str, *, family_id: UUID | None = None,
                              user_id: UUID | None = None, client_id: str | None = None) -> int:
    """Put every unexpired access token issued to the family, the user (with ``client_id``,
    only through that client) or the client on the deny-list; how many were added.

    Run after the refresh tokens' revocation in the same transaction: a rotation that
    committed while that revocation waited is visible to this statement's snapshot.
    """
    if family_id is not None:
        where, params = "family_id = %s", (family_id,)
    elif user_id is not None:
        where, params = "user_id = %s AND (%s::text IS NULL OR client_id = %s)", (user_id, client_id,
                                                                                    client_id)
    elif client_id is not None:
        where, params = "client_id = %s", (client_id,)
    else:
        raise ValueError("a family, a user or a client is required")
    _lock_revocations(cur)
    cur.execute("INSERT INTO revoked_access_tokens (jti, expires_at, reason)"
                " SELECT jti, expires_at, %s FROM issued_access_tokens"
                f" WHERE {where} AND expires_at > now() ORDER BY jti"
                " ON CONFLICT (jti) DO NOTHING", (reason, *params))
    if cur.rowcount:
        _notify_revocations(cur)
    return cur.rowcount


def revocations_after(cur, cursor: int, limit: int, skew_s: int) -> list[dict]:
    """Deny-list entries past ``cursor`` whose token a verifier could still accept."""
    cur.execute("SELECT seq, jti, extract(epoch FROM expires_at)::bigint AS exp"
                " FROM revoked_access_tokens"
                " WHERE seq > %s AND expires_at > now() - make_interval(secs => %s)"
                " ORDER BY seq LIMIT %s", (cursor, skew_s, limit))
    return cur.fetchall()


def latest_revocation_seq(cur) -> int:
    cur.execute("SELECT COALESCE(max(seq), 0) AS seq FROM revoked_access_tokens")
    return cur.fetchone()["seq"]


def is_access_token_denied(cur, jti: str) -> bool:
    cur.execute("SELECT 1 FROM revoked_access_tokens WHERE jti = %s", (jti,))
    return cur.fetchone() is not None


def purge_expired_access_tokens(cur, skew_s: int) -> int:
    """Forget issued and denied access tokens no verifier accepts any more (past exp + skew)."""
    cur.execute("DELETE FROM issued_access_tokens WHERE expires_at < now() - make_interval(secs => %s)",
                (skew_s,))
    issued = cur.rowcount
    cur.execute("DELETE FROM revoked_access_tokens WHERE expires_at < now() - make_interval(secs => %s)",
                (skew_s,))
    return issued + cur.rowcount
