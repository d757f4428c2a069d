"""The auth service's signing keys as seen by a resource server: a cached JWKS.

* Fetched over HTTP through the named breaker ``auth-jwks`` with the shared
  transient-only retry and a timeout (:class:`shared.resilience.ResilientHttp`).
* Cached for ``JWKS_CACHE_TTL_S``; refreshed early when a token names a
  ``kid`` we do not know (a key rotation), at most once per
  ``JWKS_MIN_REFRESH_INTERVAL_S`` so garbage ``kid`` values cannot make us
  hammer the auth service.
* When a refresh fails, the keys we already have keep working (the auth
  service being down must not log everybody out); with no keys at all the
  caller gets :class:`KeysUnavailable` (a 503, not a 401).
"""

from __future__ import annotations

import threading
import time
from urllib.parse import urlsplit

import jwt

from shared.logging import get_logger
from shared.resilience import BreakerOpen, BreakerRegistry, ResilientHttp, TransientHttpError

log = get_logger(__name__)

BREAKER_NAME = "auth-jwks"
JWKS_PATH = "/.well-known/jwks.json"
DEFAULT_CACHE_TTL_S = 300.0
DEFAULT_MIN_REFRESH_INTERVAL_S = 10.0
FETCH_TIMEOUT_S = 2.0
FETCH_ATTEMPTS = 2
# Only these may verify access tokens: "none" and HMAC are never accepted.
ALLOWED_KEY_TYPES = ("RSA",)


class KeysUnavailable(Exception):
    """No verification keys could be obtained (the auth service is unreachable)."""

    def __init__(self, message: str, retry_after_s: float = 5.0):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class JwksCache:
    """Thread-safe, lazily fetched, kid-indexed public keys."""

    def __init__(self, url: str, breakers: BreakerRegistry | None = None,
                 ttl_s: float = DEFAULT_CACHE_TTL_S,
                 min_refresh_interval_s: float = DEFAULT_MIN_REFRESH_INTERVAL_S):
        self.url = url
        self.ttl_s = ttl_s
        self.min_refresh_interval_s = min_refresh_interval_s
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = 0.0
        self._attempted_at = float("-inf")
        self._lock = threading.Lock()
        parts = urlsplit(url)
        registry = breakers or BreakerRegistry()
        self._http = ResilientHttp(f"{parts.scheme}://{parts.netloc}", registry.get(BREAKER_NAME),
                                   timeout_s=FETCH_TIMEOUT_S, attempts=FETCH_ATTEMPTS)
        self._path = (parts.path or JWKS_PATH) + (f"?{parts.query}" if parts.query else "")

    def key_for(self, kid: str | None) -> jwt.PyJWK | None:
        """The key named ``kid`` (None if the auth service does not publish it)."""
        now = time.monotonic()
        key = self._keys.get(kid or "")
        if key is not None and now - self._fetched_at < self.ttl_s:
            return key
        self._refresh(force=key is None)
        return self._keys.get(kid or "")

    def _refresh(self, force: bool) -> None:
        with self._lock:
            now = time.monotonic()
            fresh = now - self._fetched_at < self.ttl_s
            if (fresh and not force) or now - self._attempted_at < self.min_refresh_interval_s:
                if not self._keys and now - self._attempted_at < self.min_refresh_interval_s:
                    raise KeysUnavailable("no signing keys yet",
                                          self.min_refresh_interval_s - (now - self._attempted_at))
                return
            self._attempted_at = now
            try:
                document = self._fetch()
                keys = {}
                for jwk in document.get("keys", []):
                    if jwk.get("kty") in ALLOWED_KEY_TYPES and jwk.get("kid") \
                            and jwk.get("use", "sig") == "sig":
                        keys[jwk["kid"]] = jwt.PyJWK(jwk, algorithm="RS256")
            except (BreakerOpen, TransientHttpError, OSError, ValueError, jwt.PyJWTError) as exc:
                log.warning("jwks_refresh_failed", url=self.url, error=type(exc).__name__,
                            cached_keys=len(self._keys))
                if not self._keys:
                    raise KeysUnavailable(f"JWKS unavailable: {type(exc).__name__}",
                                          getattr(exc, "retry_after_s", 5.0)) from None
                return
            added = sorted(set(keys) - set(self._keys))
            self._keys = keys
            self._fetched_at = now
            if added:
                log.info("jwks_refreshed", keys=len(keys), added=added)

    def _fetch(self) -> dict:
        response = self._http.request("GET", self._path)
        if response.status_code != 200:
            raise ValueError(f"JWKS answered HTTP {response.status_code}")
        return response.json()


def jwks_url_from(jwks_url: str | None, app_env: str, auth_url: str | None) -> str:
    """``AUTH_JWKS_URL``, else the JWKS path of ``AUTH_URL`` (the local port outside production)."""
    from shared.config import ConfigError
    from shared.services import port_of

    url = jwks_url
    if not url:
        if not auth_url:
            if app_env == "production":
                raise ConfigError("AUTH_URL", "is required (or AUTH_JWKS_URL): tokens are verified "
                                              "with the auth service's keys")
            auth_url = f"http://127.0.0.1:{port_of('auth')}"
        url = auth_url.rstrip("/") + JWKS_PATH
    if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
        raise ConfigError("AUTH_JWKS_URL", f"must be an http(s) URL, got {url!r}")
    return url
