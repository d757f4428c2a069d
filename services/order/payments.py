"""The order service's client for the payment service: opening an order's payment at checkout.

``PUT /v1/payments/{order_id}`` with the order's lines at the catalog's prices
(the payment service computes the amount from them; no client ever gives
one) answers the PaymentIntent's id and client secret, which checkout hands
to the storefront. Like the inventory client: the named breaker ``payment``,
a timeout (``ORDER_PAYMENT_TIMEOUT_S``), a retry for transient errors only
(``ORDER_PAYMENT_ATTEMPTS``; safe, the call is idempotent by order id), and
the order service's own token (scope ``payments:create``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import requests

from services.order.inventory import _problem, _session
from services.order.settings import OrderSettings
from shared.config import Settings, peer_url
from shared.logging import get_logger
from shared.resilience import BreakerOpen, BreakerRegistry, ResilientHttp, is_transient
from shared.service_token import ServiceToken, ServiceTokenError

log = get_logger(__name__)

BREAKER = "payment"
SCOPE = "payments:create"
UNAVAILABLE_RETRY_AFTER_S = 1.0


@dataclass(frozen=True)
class OpenedPayment:
    intent_id: str
    client_secret: str
    amount_minor: int
    currency: str
    status: str


class PaymentServiceUnavailable(Exception):
    """The payment could not be opened: the payment service or its provider is unavailable."""

    def __init__(self, reason: str, retry_after_s: float):
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class PaymentConfig:
    base_url: str
    timeout_s: float
    attempts: int


def payment_config(settings: Settings, own: OrderSettings) -> PaymentConfig:
    """``PAYMENT_URL`` (required in production; the local port otherwise) and the call's limits."""
    url = peer_url(settings, "payment")
    return PaymentConfig(url, own.payment_timeout_s, own.payment_attempts)


class PaymentClient:
    """Opens the payment of a new order."""

    def __init__(self, config: PaymentConfig, breakers: BreakerRegistry, token: ServiceToken,
                 session: requests.Session | None = None):
        self.breaker = breakers.get(BREAKER)
        self.http = ResilientHttp(config.base_url, self.breaker, timeout_s=config.timeout_s,
                                  attempts=config.attempts, session=session or _session())
        self.token = token

    def open(self, order_id: uuid.UUID, customer_id: str, currency: str, lines,
             correlation_id: str | None) -> OpenedPayment:
        """The order's payment (created, or the same one again); PaymentServiceUnavailable else.

        A 503 from the payment service (its provider is down or its breaker
        open) passes its Retry-After on; anything else unexpected is a 503 too:
        checkout cannot go on without a payment.
        """
        headers = {"X-Request-ID": correlation_id} if correlation_id else {}
        body = {"customer_id": customer_id, "currency": currency,
                "lines": [{"sku": line.sku, "quantity": line.quantity,
                           "unit_price": str(line.unit_price)} for line in lines]}
        try:
            headers["Authorization"] = self.token.header()
            response = self.http.request("PUT", f"/v1/payments/{order_id}", json=body,
                                         headers=headers)
        except ServiceTokenError as exc:
            self._log_unavailable(order_id, str(exc))
            raise PaymentServiceUnavailable("service_token_refused", UNAVAILABLE_RETRY_AFTER_S) from None
        except BreakerOpen as exc:
            raise PaymentServiceUnavailable("breaker_open", exc.retry_after_s) from None
        except Exception as exc:
            if not is_transient(exc):
                raise
            retry_after = UNAVAILABLE_RETRY_AFTER_S
            body_text = getattr(exc, "body", "")
            self._log_unavailable(order_id, f"{type(exc).__name__}: {exc} {body_text[:200]}")
            raise PaymentServiceUnavailable(type(exc).__name__, retry_after) from None
        if response.status_code in (200, 201):
            data = response.json()
            return OpenedPayment(data["payment_intent_id"], data["client_secret"],
                                 int(data["amount_minor"]), data["currency"], data["status"])
        if response.status_code == 401:
            self.token.invalidate()
        problem = _problem(response)
        self._log_unavailable(order_id, f"HTTP {response.status_code}: {problem.get('type')}")
        raise PaymentServiceUnavailable(f"HTTP {response.status_code}", UNAVAILABLE_RETRY_AFTER_S)

    def _log_unavailable(self, order_id, error: str) -> None:
        log.warning("payment_unavailable", order_id=str(order_id), error=error[:300],
                    breaker=self.breaker.current_state, failures=self.breaker.fail_counter)
