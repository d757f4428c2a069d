"""Hashing, key encryption and signing keys: every secret the auth service handles.

* Passwords are chosen by people (low entropy): argon2id, parameters from
  settings, upgraded on the next successful login when they change.
* Client secrets and refresh tokens are 256-bit random values made here: a
  brute force is hopeless, so a SHA-256 digest is enough and keeps the token
  endpoint fast (an argon2 hash per token request would cap it at a few dozen/s).
* Private signing keys are encrypted at rest with Fernet (AES-128-CBC +
  HMAC-SHA256) under ``AUTH_KEY_ENCRYPTION_KEYS``; the first key encrypts, all
  decrypt, so the key-encryption key itself can be rotated.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from cryptography.fernet import Fernet, MultiFernet
from joserfc.jwk import RSAKey

SECRET_BYTES = 32
SECRET_DIGEST_PREFIX = "sha256$"


class PasswordHashing:
    """argon2id with configurable cost."""

    def __init__(self, time_cost: int, memory_kib: int, parallelism: int):
        self._hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib,
                                      parallelism=parallelism)
        # Verified against when the account does not exist, so both cases take as long.
        self._dummy = self._hasher.hash(secrets.token_urlsafe(16))

    def hash(self, password: str) -> str:
        """A new argon2id hash of ``password``."""
        return self._hasher.hash(password)

    def verify(self, password_hash: str | None, password: str) -> bool:
        """True when ``password`` matches; a None hash burns the same time and fails."""
        try:
            return self._hasher.verify(password_hash or self._dummy, password) and password_hash is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        """Whether the hash was made with other parameters than the current ones."""
        return self._hasher.check_needs_rehash(password_hash)


def new_secret() -> str:
    """A new client secret or refresh token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(SECRET_BYTES)


def digest_secret(secret: str) -> str:
    """The stored form of a high-entropy secret."""
    return SECRET_DIGEST_PREFIX + hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(stored: str | None, secret: str) -> bool:
    """Constant-time comparison of ``secret`` with a stored digest."""
    if not stored:
        return False
    return hmac.compare_digest(stored, digest_secret(secret))


class KeyCipher:
    """Encrypts private keys at rest (MultiFernet: first key encrypts, any decrypts)."""

    def __init__(self, keys: tuple[str, ...]):
        self._fernet = MultiFernet([Fernet(k.encode()) for k in keys])

    def encrypt(self, data: bytes) -> bytes:
        return self._fernet.encrypt(data)

    def decrypt(self, token: bytes) -> bytes:
        return self._fernet.decrypt(token)

    def reencrypt(self, token: bytes) -> bytes:
        """The same plaintext under the current first key (after adding a new one)."""
        return self._fernet.rotate(token)


def new_signing_key(bits: int) -> RSAKey:
    """A fresh RSA key whose ``kid`` is its RFC 7638 thumbprint."""
    key = RSAKey.generate_key(bits, private=True, auto_kid=True)
    return key


def public_jwk(key: RSAKey) -> dict:
    """The public JWK as published in the JWKS."""
    jwk = key.as_dict(private=False)
    jwk.update({"use": "sig", "alg": "RS256"})
    return jwk


def private_pem(key: RSAKey) -> bytes:
    """The private key as unencrypted PKCS#8 PEM (only ever passed to KeyCipher)."""
    return key.as_pem(private=True)


def load_private_pem(pem: bytes, kid: str) -> RSAKey:
    """An RSAKey from PKCS#8 PEM, with its ``kid``."""
    return RSAKey.import_key(pem, parameters={"kid": kid})
