"""Signing keys: the active key (cached per process), the JWKS, rotation.

Rotation without downtime: a new key is published at once but signs only
from ``activates_at`` (``AUTH_KEY_ACTIVATION_DELAY_S`` later, so verifiers
holding a cached JWKS pick it up on their normal refresh, and those that
refresh on an unknown ``kid`` never miss it). The key it replaces stops
signing then and stays published for signing-key cache + access-token TTL +
clock skew, so every token it signed expires before it disappears.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from joserfc.jwk import RSAKey

from services.auth import crypto
from services.auth import repository as repo
from shared.logging import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class RotationResult:
    kid: str
    activates_in_s: int
    retired: int


class SigningKeys:
    """Per-process view of the signing keys in ``auth_svc.signing_keys``."""

    def __init__(self, db, cipher: crypto.KeyCipher, rsa_bits: int, cache_s: int,
                 publish_grace_s: int):
        self._db = db
        self._cipher = cipher
        self._rsa_bits = rsa_bits
        self._cache_s = cache_s
        self._publish_grace_s = publish_grace_s
        self._lock = threading.Lock()
        self._active: RSAKey | None = None
        self._loaded_at = 0.0

    def active(self) -> RSAKey:
        """The key to sign with now (decrypted once, re-read every ``cache_s`` seconds)."""
        now = time.monotonic()
        key = self._active
        if key is not None and now - self._loaded_at < self._cache_s:
            return key
        with self._lock:
            if self._active is not None and time.monotonic() - self._loaded_at < self._cache_s:
                return self._active
            with self._db.transaction() as cur:
                row = repo.current_signing_key(cur)
            if row is None:
                self.ensure_key()
                with self._db.transaction() as cur:
                    row = repo.current_signing_key(cur)
            if row is None:
                raise RuntimeError("no signing key is active")
            if self._active is None or self._active.kid != row["kid"]:
                pem = self._cipher.decrypt(bytes(row["private_key_encrypted"]))
                self._active = crypto.load_private_pem(pem, row["kid"])
                log.info("signing_key_loaded", kid=row["kid"])
            self._loaded_at = time.monotonic()
            return self._active

    def ensure_key(self) -> str | None:
        """Create the first key if none is usable (idempotent across processes)."""
        with self._db.transaction() as cur:
            repo.lock_signing_keys(cur)
            if repo.current_signing_key(cur) is not None:
                return None
            kid = self._insert(cur, activates_in_s=0)
            repo.retire_signing_keys_except(cur, kid, self._publish_grace_s)
        log.info("signing_key_created", kid=kid)
        return kid

    def rotate(self, activates_in_s: int) -> RotationResult:
        """A new key, signing in ``activates_in_s`` s; the current one retires then."""
        with self._db.transaction() as cur:
            repo.lock_signing_keys(cur)
            # A key still waiting to activate has signed nothing: the new one replaces it.
            repo.delete_pending_signing_keys(cur)
            kid = self._insert(cur, activates_in_s)
            retired = repo.retire_signing_keys_except(cur, kid, self._publish_grace_s)
        log.info("signing_key_rotated", kid=kid, activates_in_s=activates_in_s, retired=retired)
        return RotationResult(kid, activates_in_s, retired)

    def jwks(self) -> dict:
        """Every published public key (active, upcoming and retiring)."""
        with self._db.transaction() as cur:
            rows = repo.published_signing_keys(cur)
        if not rows:
            self.ensure_key()
            with self._db.transaction() as cur:
                rows = repo.published_signing_keys(cur)
        return {"keys": [row["public_jwk"] for row in rows]}

    def prune(self) -> int:
        """Delete keys whose publication window has ended (their tokens have expired)."""
        with self._db.transaction() as cur:
            return repo.delete_expired_signing_keys(cur)

    def reencrypt_all(self) -> int:
        """Re-encrypt every private key under the first key-encryption key."""
        with self._db.transaction() as cur:
            rows = repo.encrypted_private_keys(cur)
            for row in rows:
                repo.set_encrypted_private_key(
                    cur, row["kid"], self._cipher.reencrypt(bytes(row["private_key_encrypted"])))
        return len(rows)

    def _insert(self, cur, activates_in_s: int) -> str:
        key = crypto.new_signing_key(self._rsa_bits)
        repo.insert_signing_key(cur, key.kid, crypto.public_jwk(key),
                                self._cipher.encrypt(crypto.private_pem(key)), activates_in_s)
        return key.kid
