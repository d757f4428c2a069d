"""A service's own access token (OAuth2 client credentials) for calls to its peers.

The order service, for one, reserves stock at the inventory service with a
token of its own (scope ``inventory:reserve``). :class:`ServiceToken` asks the
auth service for one with ``client_credentials`` through the named breaker
``auth-token`` (timeout, transient-only retry), caches it, and asks again
``REFRESH_BEFORE_EXPIRY_S`` before it expires. Credentials come from
``<SERVICE>_CLIENT_ID`` / ``<SERVICE>_CLIENT_SECRET``.
"""

from __future__ import annotations

import threading
import time

from shared.config import ConfigError
from shared.logging import get_logger
from shared.resilience import BreakerRegistry, ResilientHttp
from shared.settings import secret_value

log = get_logger(__name__)

BREAKER_NAME = "auth-token"
TOKEN_PATH = "/oauth/token"
# Ask for a new token this long before the current one expires (clock skew, slow calls).
REFRESH_BEFORE_EXPIRY_S = 60.0
TIMEOUT_S = 3.0


class ServiceTokenError(RuntimeError):
    """The auth service refused our credentials (a configuration problem, not transient)."""


class ServiceToken:
    """A cached client-credentials access token; thread-safe."""

    def __init__(self, auth_url: str, client_id: str, client_secret: str, scope: str,
                 breakers: BreakerRegistry):
        self._http = ResilientHttp(auth_url, breakers.get(BREAKER_NAME), timeout_s=TIMEOUT_S)
        self._client = (client_id, client_secret)
        self._scope = scope
        self._token: str | None = None
        self._renew_at = 0.0
        self._lock = threading.Lock()

    def get(self) -> str:
        """A valid access token (cached; renewed shortly before expiry)."""
        if self._token is not None and time.monotonic() < self._renew_at:
            return self._token
        with self._lock:
            if self._token is not None and time.monotonic() < self._renew_at:
                return self._token
            response = self._http.request("POST", TOKEN_PATH, auth=self._client,
                                          data={"grant_type": "client_credentials", "scope": self._scope})
            if response.status_code != 200:
                # 400/401: wrong credentials or scope. Not transient; say so without the secret.
                raise ServiceTokenError(f"auth service refused client {self._client[0]}: "
                                        f"HTTP {response.status_code} {response.text[:200]}")
            body = response.json()
            self._token = body["access_token"]
            lifetime = float(body.get("expires_in", 300))
            self._renew_at = time.monotonic() + max(1.0, lifetime - REFRESH_BEFORE_EXPIRY_S)
            log.info("service_token_obtained", client_id=self._client[0], expires_in=lifetime)
            return self._token

    def header(self) -> str:
        """The ``Authorization`` header value."""
        return f"Bearer {self.get()}"

    def invalidate(self) -> None:
        """Forget the token (e.g. after a peer answered 401: keys rotated, client changed)."""
        with self._lock:
            self._token = None


def service_token_from(settings, client_id: str | None, client_secret, scope: str,
                       breakers: BreakerRegistry) -> ServiceToken:
    """A :class:`ServiceToken` from the service's ``<SERVICE>_CLIENT_ID`` / ``_CLIENT_SECRET``
    (already read by its settings; the secret may be a ``SecretStr``) and ``AUTH_URL``."""
    id_var, secret_var = settings.service_env("CLIENT_ID"), settings.service_env("CLIENT_SECRET")
    client_id, secret = (client_id or "").strip(), (secret_value(client_secret) or "").strip()
    if not client_id:
        raise ConfigError(id_var, "is required (create the client with services.auth.cli)")
    if not secret:
        raise ConfigError(secret_var, "is required")
    auth_url = settings.peers.get("auth")
    if not auth_url:
        raise ConfigError("AUTH_URL", "is required to obtain the service's own token")
    return ServiceToken(auth_url, client_id, secret, scope, breakers)
