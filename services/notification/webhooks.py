"""Sending one webhook attempt: sign, POST through the SSRF guard and a per-endpoint breaker.

:class:`WebhookSender` makes exactly one HTTP attempt (the retry schedule is
SQS's job, see ``handlers.WebhookDeliverer``) and classifies the outcome:

* ``delivered`` — any 2xx;
* ``gone`` — 410: the receiver asks us to stop (the subscription is disabled);
* ``retry`` — a timeout (``NOTIFICATION_WEBHOOK_TIMEOUT_S``), a connection error
  or any other status (redirects are not followed);
* ``breaker_open`` — the endpoint's breaker is open: no request was made;
* ``blocked`` — the URL now resolves to an address the SSRF policy forbids.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import pybreaker
import requests

from services.notification.domain import (
    HEADER_ID,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    HEADER_TOPIC,
    sign,
)
from services.notification.settings import WebhookBreakerSettings
from services.notification.ssrf import UnsafeUrl, UrlPolicy, guarded_session
from shared.logging import get_logger
from shared.resilience import BreakerOpen, BreakerRegistry, BreakerSettings, TransientError, resilient_call

log = get_logger(__name__)

USER_AGENT = "order-platform-webhooks/1"
# What we keep of a receiver's answer: enough to debug, never a memory risk.
MAX_RESPONSE_READ_BYTES = 64 * 1024
RESPONSE_EXCERPT_CHARS = 500
ERROR_CHARS = 500


@dataclass(frozen=True)
class AttemptResult:
    """What one attempt did (one row of the deliveries log)."""

    outcome: str
    status_code: int | None = None
    duration_ms: int | None = None
    excerpt: str | None = None
    error: str | None = None

    @property
    def delivered(self) -> bool:
        return self.outcome == "delivered"


class EndpointFailed(TransientError):
    """The endpoint answered, but not with 2xx or 410 (counts against its breaker)."""

    def __init__(self, status: int, excerpt: str):
        super().__init__(f"HTTP {status}")
        self.status = status
        self.excerpt = excerpt


class EndpointBreakers(BreakerRegistry):
    """One breaker per endpoint (scheme://host:port), all with the ``webhook`` settings.

    ``BREAKER_WEBHOOK_FAIL_MAX`` / ``BREAKER_WEBHOOK_RESET_TIMEOUT_S`` tune them
    (defaults 5 failures / 60 s). Per process, like every breaker here.
    """

    def settings_for(self, name: str) -> BreakerSettings:
        thresholds = WebhookBreakerSettings.from_env(self._env)
        return BreakerSettings(thresholds.fail_max, thresholds.reset_timeout_s)

    def for_url(self, url: str) -> pybreaker.CircuitBreaker:
        """The breaker of the endpoint ``url`` points at."""
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return self.get(f"webhook:{parts.scheme}://{parts.hostname}:{port}")


class WebhookSender:
    """Signs and POSTs one delivery attempt."""

    def __init__(self, policy: UrlPolicy, breakers: EndpointBreakers, timeout_s: float,
                 session: requests.Session | None = None):
        self.policy = policy
        self.breakers = breakers
        self.timeout_s = timeout_s
        self.session = session or guarded_session(policy)

    def send(self, url: str, secret: str, delivery_id: str, topic: str, body: str) -> AttemptResult:
        """One signed POST of ``body``; never raises for anything the endpoint does."""
        payload = body.encode()
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            HEADER_ID: delivery_id,
            HEADER_TOPIC: topic,
            HEADER_TIMESTAMP: str(timestamp),
            HEADER_SIGNATURE: sign(secret, timestamp, payload),
        }
        started = time.perf_counter()

        def elapsed_ms() -> int:
            return int((time.perf_counter() - started) * 1000)

        # The failure that trips the breaker surfaces as BreakerOpen; keep what really happened.
        made: list[BaseException] = []

        def post() -> AttemptResult:
            try:
                with self.session.post(url, data=payload, headers=headers, timeout=self.timeout_s,
                                       allow_redirects=False, stream=True) as response:
                    excerpt = _excerpt(response)
                    status = response.status_code
            except requests.RequestException as exc:
                made.append(exc)
                raise
            if 200 <= status < 300:
                return AttemptResult("delivered", status, elapsed_ms(), excerpt)
            if status == 410:
                return AttemptResult("gone", status, elapsed_ms(), excerpt, "410 Gone")
            made.append(EndpointFailed(status, excerpt))
            raise made[-1]

        try:
            try:
                return resilient_call(self.breakers.for_url(url), post, attempts=1)
            except BreakerOpen:
                if made:  # this very attempt failed and opened the breaker
                    raise made[-1] from None
                raise
        except BreakerOpen as exc:
            return AttemptResult("breaker_open", error=f"circuit breaker open for this endpoint; "
                                                       f"retry in {exc.retry_after_s:.0f}s")
        except EndpointFailed as exc:
            return AttemptResult("retry", exc.status, elapsed_ms(), exc.excerpt,
                                 f"HTTP {exc.status}")
        except UnsafeUrl as exc:
            return AttemptResult("blocked", duration_ms=elapsed_ms(), error=str(exc)[:ERROR_CHARS])
        except requests.Timeout:
            return AttemptResult("retry", duration_ms=elapsed_ms(),
                                 error=f"timed out after {self.timeout_s:g}s")
        except requests.RequestException as exc:
            return AttemptResult("retry", duration_ms=elapsed_ms(),
                                 error=f"{type(exc).__name__}: {exc}"[:ERROR_CHARS])


def _excerpt(response: requests.Response) -> str:
    try:
        raw = response.raw.read(MAX_RESPONSE_READ_BYTES, decode_content=True) or b""
    except Exception:  # a body cut short is still an answer; its status is what counts
        raw = b""
    return raw.decode("utf-8", "replace")[:RESPONSE_EXCERPT_CHARS]
