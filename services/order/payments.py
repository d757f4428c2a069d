"""The order service's client for the payment service: opening an order's payment at checkout.

``PUT /v1/payments/{order_id}`` with the order's lines at the catalog's prices
(the payment service computes the amount from them; no client ever gives
one) answers the PaymentIntent's id and client secret, which checkout hands
to the storefront. A :class:`services.order.peer.PeerClient` named ``payment``:
its breaker, a timeout (``ORDER_PAYMENT_TIMEOUT_S``), a retry for transient
errors only (``ORDER_PAYMENT_ATTEMPTS``; safe, the call is idempotent by order
id), and the order service's own token (scope ``payments:create``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from services.order.peer import PeerClient, PeerConfig, PeerUnavailable
from services.order.settings import OrderSettings
from shared.config import Settings, peer_url
from shared.resilience import BreakerRegistry
from shared.service_token import ServiceToken

BREAKER = "payment"
SCOPE = "payments:create"


@dataclass(frozen=True)
class OpenedPayment:
    intent_id: str
    client_secret: str
    amount_minor: int
    currency: str
    status: str


class PaymentServiceUnavailable(PeerUnavailable):
    """The payment could not be opened: the payment service or its provider is unavailable."""


PaymentConfig = PeerConfig


def payment_config(settings: Settings, own: OrderSettings) -> PaymentConfig:
    """``PAYMENT_URL`` (required in production; the local port otherwise) and the call's limits."""
    url = peer_url(settings, "payment")
    return PaymentConfig(url, own.payment_timeout_s, own.payment_attempts)


class PaymentClient:
    """Opens the payment of a new order."""

    def __init__(self, config: PaymentConfig, breakers: BreakerRegistry, token: ServiceToken,
                 session=None):
        self.peer = PeerClient(BREAKER, config, breakers, token, PaymentServiceUnavailable,
                               session)
        self.breaker = self.peer.breaker
        self.token = token

    def open(self, order_id: uuid.UUID, customer_id: str, currency: str, lines,
             correlation_id: str | None) -> OpenedPayment:
        """The order's payment (created, or the same one again); PaymentServiceUnavailable else.

        A 503 from the payment service (its provider is down or its breaker
        open) is unavailable like any other unexpected answer: checkout cannot
        go on without a payment.
        """
        body = {"customer_id": customer_id, "currency": currency,
                "lines": [{"sku": line.sku, "quantity": line.quantity,
                           "unit_price": str(line.unit_price)} for line in lines]}
        response = self.peer.call("PUT", f"/v1/payments/{order_id}", order_id, correlation_id,
                                  json=body)
        if response.status_code in (200, 201):
            data = response.json()
            return OpenedPayment(data["payment_intent_id"], data["client_secret"],
                                 int(data["amount_minor"]), data["currency"], data["status"])
        raise self.peer.refused(order_id, response)
