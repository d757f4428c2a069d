"""Verified access tokens, kept until they expire: RS256 once per token, not once per request.

A caller presents the same access token unchanged for its whole lifetime (15
minutes by default); verifying its RS256 signature on every request is the
largest part of what authentication costs. :class:`VerifiedTokens` keeps the
principal of each verified token keyed by the SHA-256 digest of the exact token
string, not by its (unverified) ``jti`` claim: a different string carrying the
same ``jti`` (an altered or forged token) can never be answered from the cache
and goes through full verification. Bounded LRU (``AUTH_TOKEN_CACHE_SIZE``
entries per process); an entry is never served past its token's ``exp`` plus the
clock skew verification allows. The caller checks revocation (by the verified
``jti``) on hits as on misses, and that the signing key is still published.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from typing import Generic, TypeVar

P = TypeVar("P")


class VerifiedTokens(Generic[P]):
    """A thread-safe LRU of ``sha256(token) -> (principal, kid, accept-until)``."""

    def __init__(self, max_entries: int, leeway_s: float):
        self.max_entries = max_entries
        self.leeway_s = leeway_s
        self._entries: OrderedDict[bytes, tuple[P, str | None, float]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(token: str) -> bytes:
        return hashlib.sha256(token.encode()).digest()

    def get(self, key: bytes) -> tuple[P, str | None] | None:
        """The principal and signing kid of the token with this key, or None."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            principal, kid, until = entry
            if time.time() >= until:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return principal, kid

    def put(self, key: bytes, principal: P, kid: str | None, expires_at: int) -> None:
        if self.max_entries <= 0:
            return
        with self._lock:
            self._entries[key] = (principal, kid, expires_at + self.leeway_s)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
