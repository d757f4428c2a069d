"""Webhook signing secrets at rest: Fernet-encrypted under ``NOTIFICATION_SECRET_KEYS``.

The service must know each secret to sign with it (HMAC), so it cannot store
a hash. A database dump alone must still not let anyone forge our webhooks:
secrets are stored as ``fernet:<token>``. The first key encrypts, every key
decrypts, so keys rotate by prepending a new one (and dropping the old one
after re-saving the subscriptions). A stored value without the prefix is read
as plaintext (rows written before encryption existed).
"""

from __future__ import annotations

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

PREFIX = "fernet:"


class SecretUnreadable(RuntimeError):
    """No configured key decrypts this secret (a key was dropped too early)."""


class SecretBox:
    """Seals and opens webhook secrets."""

    def __init__(self, keys: tuple[str, ...]):
        if not keys:
            raise ValueError("at least one key is required")
        self._fernet = MultiFernet([Fernet(key.encode()) for key in keys])

    def seal(self, secret: str) -> str:
        return PREFIX + self._fernet.encrypt(secret.encode()).decode()

    def open(self, stored: str) -> str:
        if not stored.startswith(PREFIX):
            return stored
        try:
            return self._fernet.decrypt(stored[len(PREFIX):].encode()).decode()
        except InvalidToken:
            raise SecretUnreadable("no NOTIFICATION_SECRET_KEYS key decrypts this secret") from None


@lru_cache(maxsize=8)
def secret_box(keys: tuple[str, ...]) -> SecretBox:
    """One box per key set (Fernet objects are cheap, but there is no need to rebuild them)."""
    return SecretBox(keys)
