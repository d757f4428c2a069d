"""The auth service's SQL for tokens (schema ``auth_svc``), parameterized: refresh-token
families and their rotation, the access tokens issued, and their deny-list feed."""

from __future__ import annotations

from uuid import UUID

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
