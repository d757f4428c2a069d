"""The auth service's own logic behind the OAuth2 grants: accounts and refresh tokens.

* Login checks the password (rehashing it when the hashing parameters have
  changed) with per-account exponential lock-out: after
  ``AUTH_LOGIN_LOCK_THRESHOLD`` failures the account is locked for a time
  that doubles with every further failure, up to a maximum
  (:class:`AccountLocked`).
* Refresh tokens are stored hashed, in families (one per login). Each use
  rotates the token; presenting an already-rotated token again revokes its
  whole family (reuse detection), as does revocation (RFC 7009). A rotation
  claims the old token and stores its successor in ONE transaction, the
  successor only while its family is unrevoked (:meth:`AuthService.rotate_refresh_token`);
  a revocation, logout or reuse detection landing in between therefore ends the
  successor too, and the rotation answers ``invalid_grant`` or hands out a dead token.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from authlib.oauth2.rfc6749.errors import InvalidGrantError, InvalidScopeError

from services.auth import crypto
from services.auth import repository as repo
from services.auth import token_repository as token_repo
from services.auth.oauth_models import Client, IssuedAccessToken, RefreshToken, User
from services.auth.settings import AuthSettings
from shared.errors import DomainError
from shared.logging import get_logger

log = get_logger(__name__)

# Lock-out failures older than this are forgotten.
LOGIN_FAILURE_MEMORY_S = 24 * 3600


class AccountLocked(DomainError):
    """Too many failed logins: the account accepts none for ``retry_after_s`` seconds."""

    def __init__(self, retry_after_s: int):
        super().__init__("Too many failed logins for this account; try again later.")
        self.retry_after_s = retry_after_s


class AuthService:
    """Storage and policy behind the grants (one per app)."""

    def __init__(self, db, config: AuthSettings, passwords: crypto.PasswordHashing):
        self.db = db
        self.config = config
        self.passwords = passwords

    def client(self, client_id: str) -> Client | None:
        # No stored id holds a NUL (PostgreSQL text cannot): such an id is unknown, not a 500.
        if not client_id or len(client_id) > 64 or "\x00" in client_id:
            return None
        with self.db.transaction() as cur:
            row = repo.get_client(cur, client_id)
        return Client.from_row(row) if row else None

    def user(self, user_id) -> User | None:
        with self.db.transaction() as cur:
            row = repo.get_user(cur, user_id)
        return User.from_row(row) if row else None

    def login(self, username: str, password: str) -> User | None:
        """The account for these credentials, or None; raises AccountLocked while locked."""
        cfg = self.config
        if not username or len(username) > 254 or len(password) > cfg.password_max_length \
                or "\x00" in username:
            return None
        with self.db.transaction() as cur:
            locked_s = repo.login_lock(cur, username)
            row = None if locked_s else repo.get_user_by_username(cur, username)
        if locked_s:
            raise _locked(locked_s)
        if not self.passwords.verify(row["password_hash"] if row else None, password):
            with self.db.transaction() as cur:
                failures, lock_s = repo.record_login_failure(
                    cur, username, cfg.login_lock_threshold, cfg.login_lock_base_s,
                    cfg.login_lock_max_s, LOGIN_FAILURE_MEMORY_S)
            log.warning("login_failed", failures=failures, locked_s=lock_s)
            if lock_s:
                raise _locked(lock_s)
            return None
        with self.db.transaction() as cur:
            repo.clear_login_failures(cur, username)
            if self.passwords.needs_rehash(row["password_hash"]):
                repo.set_password_hash(cur, row["id"], self.passwords.hash(password))
        return User.from_row(row)

    def store_refresh_token(self, refresh: str, family_id: uuid.UUID, client_id: str,
                            user_id: uuid.UUID, scope: str,
                            access: IssuedAccessToken | None = None) -> None:
        """Store the first refresh token of a new family (its hash only), and record the
        access token issued with it."""
        with self.db.transaction() as cur:
            token_repo.insert_refresh_token(cur, uuid.uuid4(), crypto.digest_secret(refresh), family_id,
                                      client_id, user_id, scope, self.config.refresh_token_ttl_s,
                                      self.config.refresh_family_max_s)
            if access is not None:
                token_repo.record_access_token(cur, access.jti, client_id, user_id, family_id,
                                         access.expires_at)

    def record_access_token(self, access: IssuedAccessToken, client_id: str) -> None:
        """Record a client's own access token (client_credentials), revoked with the client."""
        with self.db.transaction() as cur:
            token_repo.record_access_token(cur, access.jti, client_id, None, None, access.expires_at)

    def use_refresh_token(self, token: str, client: Client, requested_scope: str | None):
        """The live refresh token ``token`` of ``client``, or None; detect reuse of a rotated one.

        Only looked up here: :meth:`rotate_refresh_token` claims it when the successor is saved.
        """
        digest = crypto.digest_secret(token)
        with self.db.transaction() as cur:
            row = token_repo.get_refresh_token_by_hash(cur, digest)
            if row is None or row["client_id"] != client.get_client_id():
                return None
            if row["rotated_at"] is not None and row["revoked_at"] is None:
                self._reuse_detected(cur, row, client.get_client_id())
                return None
        if row["rotated_at"] is not None or row["revoked_at"] is not None \
                or row["expires_at"] <= datetime.now(UTC):
            return None
        if requested_scope and not set(requested_scope.split()) <= set(row["scope"].split()):
            raise InvalidScopeError()
        return RefreshToken.from_row(row)

    def rotate_refresh_token(self, previous: RefreshToken, refresh: str, user_id: uuid.UUID,
                             access: IssuedAccessToken | None = None) -> None:
        """Claim ``previous`` and store ``refresh`` after it, in one transaction, recording the
        access token issued with it (so a revocation that waited on the claim denies it too).

        Raises InvalidGrantError, storing nothing, when ``previous`` is no longer live (another
        request rotated it: reuse, which revokes the family; or it was revoked or expired) or
        when its family has been revoked.
        """
        token_id = uuid.uuid4()
        with self.db.transaction() as cur:
            claimed = token_repo.claim_refresh_token(cur, previous.token_hash, previous.client_id)
            if claimed is None:
                row = token_repo.get_refresh_token_by_hash(cur, previous.token_hash)
                if row is not None and row["rotated_at"] is not None and row["revoked_at"] is None:
                    # Lost a race with another request using the same token: that is reuse too.
                    self._reuse_detected(cur, row, previous.client_id)
                stored = False
            else:
                stored = token_repo.insert_refresh_token(
                    cur, token_id, crypto.digest_secret(refresh), previous.family_id,
                    previous.client_id, user_id, previous.scope, self.config.refresh_token_ttl_s,
                    self.config.refresh_family_max_s)
                if stored:
                    token_repo.set_replaced_by(cur, previous.id, token_id)
                    if access is not None:
                        token_repo.record_access_token(cur, access.jti, previous.client_id, user_id,
                                                 previous.family_id, access.expires_at)
        # Raised after the commit: the claim and a reuse detection's revocation must stand.
        if not stored:
            log.info("refresh_rotation_refused", family_id=str(previous.family_id),
                     claimed=claimed is not None)
            raise InvalidGrantError("The refresh token is no longer valid.")

    @staticmethod
    def _reuse_detected(cur, row: dict, client_id: str) -> None:
        revoked = token_repo.revoke_family(cur, row["family_id"], "reuse_detected")
        log.warning("refresh_token_reuse_detected", family_id=str(row["family_id"]),
                    client_id=client_id, revoked=revoked)

    def find_refresh_token(self, token: str) -> RefreshToken | None:
        with self.db.transaction() as cur:
            row = token_repo.get_refresh_token_by_hash(cur, crypto.digest_secret(token))
        if row is None or row["revoked_at"] is not None:
            return None
        return RefreshToken.from_row(row)

    def deny_access_token(self, jti: str, expires_at: int, reason: str) -> bool:
        """Put one access token on the deny-list (RFC 7009 for an access token, logout)."""
        with self.db.transaction() as cur:
            added = token_repo.deny_access_token(cur, jti, expires_at, reason)
        log.info("access_token_revoked", reason=reason, added=added)
        return added

    def revoke_family(self, family_id, reason: str) -> int:
        with self.db.transaction() as cur:
            count = token_repo.revoke_family(cur, family_id, reason)
        log.info("refresh_family_revoked", family_id=str(family_id), reason=reason, tokens=count)
        return count


def _locked(seconds: float) -> AccountLocked:
    return AccountLocked(max(1, int(seconds + 0.999)))
