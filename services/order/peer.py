"""What the order service's clients of its peers (inventory, payment, delivery) share.

Each peer is called through its named breaker (thresholds from
``BREAKER_<NAME>_FAIL_MAX`` / ``BREAKER_<NAME>_RESET_TIMEOUT_S``) with a
per-attempt timeout and a tenacity retry for transient errors only
(connection refused/reset, timeouts, 429/502/503/504): every call the order
service makes is idempotent by order id, so a retry is safe.

Authentication: the order service calls with its OWN token (client
``ORDER_CLIENT_ID``, one scope per peer), never the customer's. It gets it
from the auth service with client credentials (:mod:`shared.service_token`:
cached, renewed a minute before it expires, through the ``auth-token``
breaker); when a peer answers 401 the token is dropped and the next call gets
a new one.

:meth:`PeerClient.call` returns the peer's answer for the client to read, or
raises the client's "unavailable" exception (a :class:`PeerUnavailable`) with
the Retry-After the caller should pass on: the breaker's remaining open time,
else :data:`UNAVAILABLE_RETRY_AFTER_S`.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.logging import get_logger
from shared.pooled_http import PooledResponse, PooledSession
from shared.resilience import BreakerOpen, BreakerRegistry, ResilientHttp, is_transient
from shared.service_token import ServiceToken, ServiceTokenError

log = get_logger(__name__)

# A 503 that is not the breaker's own: the peer failed or was unreachable on every attempt.
UNAVAILABLE_RETRY_AFTER_S = 1.0


class PeerUnavailable(Exception):
    """The peer could not be used: breaker open, down, too slow, broken, or our token refused."""

    def __init__(self, reason: str, retry_after_s: float):
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class PeerConfig:
    base_url: str
    timeout_s: float
    attempts: int


class PeerClient:
    """Calls one peer (``name``: its breaker, and ``<name>_unavailable`` in the log)."""

    def __init__(self, name: str, config: PeerConfig, breakers: BreakerRegistry,
                 token: ServiceToken, unavailable: type[PeerUnavailable],
                 session=None):
        self.name = name
        self.breaker = breakers.get(name)
        self.http = ResilientHttp(config.base_url, self.breaker, timeout_s=config.timeout_s,
                                  attempts=config.attempts, session=session or peer_session())
        self.token = token
        self.unavailable = unavailable

    def call(self, method: str, path: str, order_id, correlation_id: str | None,
             **kwargs) -> PooledResponse:
        """The peer's answer (any status but the transient ones), or ``unavailable`` raised."""
        headers = {"X-Request-ID": correlation_id} if correlation_id else {}
        try:
            headers["Authorization"] = self.token.header()
            return self.http.request(method, path, headers=headers, **kwargs)
        except ServiceTokenError as exc:  # our credentials were refused: a deployment problem
            self.log_unavailable(order_id, str(exc))
            raise self.unavailable("service_token_refused", UNAVAILABLE_RETRY_AFTER_S) from None
        except BreakerOpen as exc:
            raise self.unavailable("breaker_open", exc.retry_after_s) from None
        except Exception as exc:
            if not is_transient(exc):
                raise
            body_text = getattr(exc, "body", "") or ""
            self.log_unavailable(order_id, f"{type(exc).__name__}: {exc} {body_text[:200]}")
            raise self.unavailable(type(exc).__name__, UNAVAILABLE_RETRY_AFTER_S) from None

    def refused(self, order_id, response: PooledResponse) -> PeerUnavailable:
        """An answer the client cannot use (401/403 our token, 404, 500): unavailable, retry later."""
        if response.status_code == 401:  # keys rotated or token revoked: get a new one next time
            self.token.invalidate()
        self.log_unavailable(order_id, f"HTTP {response.status_code}: "
                                       f"{problem_of(response).get('type')}")
        return self.unavailable(f"HTTP {response.status_code}", UNAVAILABLE_RETRY_AFTER_S)

    def log_unavailable(self, order_id, error: str) -> None:
        log.warning(f"{self.name}_unavailable", order_id=str(order_id), error=error[:300],
                    breaker=self.breaker.current_state, failures=self.breaker.fail_counter)


def peer_session() -> PooledSession:
    """A keep-alive transport for one internal peer (urllib3: see :mod:`shared.pooled_http`).

    It reads no proxy or netrc settings from the environment: a call between
    two services must not go through an outbound proxy meant for the internet.
    """
    return PooledSession()


def problem_of(response: PooledResponse) -> dict:
    """The answer's problem document (``{}`` when it has none)."""
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
