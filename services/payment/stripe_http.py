"""The ``stripe`` library's HTTP client on a urllib3 pool instead of ``requests``.

Every paid order makes three Stripe calls from the payment API (create the
intent, attach the method, confirm). Through ``stripe.RequestsClient`` each
call also builds a ``requests`` ``PreparedRequest``, merges session settings
and hooks and wraps the answer — CPU this process spends again on every call
(the payment API was the hottest process per order; BENCHMARKS.md). This
client hands the request the library has already built (method, URL, headers,
form body) to a thread-safe urllib3 pool with kept-alive connections, and
gives back what the library expects: ``(body, status, headers)``.

The library keeps its part: signing headers, idempotency keys, the answer's
parsing and errors. Like the requests client it verifies TLS against the CA
bundle the library ships, and it turns every transport failure into
``stripe.APIConnectionError`` (connect and timeout failures marked retryable,
as the library's own clients do), which the gateway counts as transient.
Retries and redirects stay off here: the gateway's tenacity policy and
breaker own retrying, and Stripe never redirects an API call.
"""

from __future__ import annotations

from collections.abc import Mapping

import stripe
import urllib3

# Connections kept to the provider: one per gunicorn thread (8) calling at once, and room.
POOL_MAXSIZE = 16


class PooledStripeHttpClient(stripe.HTTPClient):
    """``stripe.HTTPClient`` over one kept-alive urllib3 pool (safe across threads)."""

    name = "urllib3"

    def __init__(self, timeout_s: float, maxsize: int = POOL_MAXSIZE):
        super().__init__(verify_ssl_certs=True)
        self._timeout = urllib3.Timeout(connect=timeout_s, read=timeout_s)
        self._pools = urllib3.PoolManager(
            num_pools=4, maxsize=maxsize, block=False, retries=False,
            cert_reqs="CERT_REQUIRED", ca_certs=stripe.ca_bundle_path)

    def request(self, method: str, url: str, headers: Mapping[str, str] | None,
                post_data=None) -> tuple[bytes, int, Mapping[str, str]]:
        try:
            answer = self._pools.request(method.upper(), url, body=post_data,
                                         headers=dict(headers or {}), redirect=False,
                                         retries=False, timeout=self._timeout)
        except urllib3.exceptions.HTTPError as exc:
            raise _connection_error(exc) from exc
        return answer.data, answer.status, answer.headers

    def close(self) -> None:
        self._pools.clear()


def _connection_error(exc: urllib3.exceptions.HTTPError) -> stripe.APIConnectionError:
    # TLS verification failures are not worth a retry; connect, read and
    # protocol failures are (the request may not have reached Stripe).
    retryable = not isinstance(exc, urllib3.exceptions.SSLError)
    return stripe.APIConnectionError(
        f"Unexpected error communicating with Stripe ({type(exc).__name__}: {exc})",
        should_retry=retryable)
