"""The payment API as a real HTTP server for tests that place orders, and how tests pay.

Checkout opens a payment over HTTP (order -> payment -> Stripe), so every test
that places an order needs a payment API listening, and that API needs a
Stripe: the session's localstripe (``devstack.emulators.start_localstripe``).
:class:`PaymentServer` serves ``services.payment.app``'s ``create_app()`` with
werkzeug's threaded server on a free loopback port, in this process.

:func:`pay` is what a storefront does after checkout: it confirms the order's
PaymentIntent with a Stripe test PaymentMethod id (``pm_card_visa``; no card
data), here through the payment API's confirm endpoint.
:func:`signed_event` builds a webhook delivery signed as Stripe signs them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid

import requests

from shared.db import Database
from tests.support.servers import ServiceServer

TEST_CARD = "pm_card_visa"
# localstripe declines this one when the intent is confirmed (card_declined, 402).
DECLINED_CARD = "pm_card_chargeCustomerFail"


class PaymentServer(ServiceServer):
    """``create_app(config)`` of the payment service, listening until :meth:`stop`."""

    def __init__(self, config: dict[str, str]):
        super().__init__("payment", config)


def pay(payment_url: str, order_id, token: str, payment_method: str = TEST_CARD) -> requests.Response:
    """Confirm the order's payment as its customer (``token``) would from the storefront."""
    return requests.post(f"{payment_url}/v1/payments/{order_id}/confirm",
                         json={"payment_method": payment_method},
                         headers={"Authorization": f"Bearer {token}"}, timeout=30)


def signed_event(secret: str, event_type: str, obj: dict, event_id: str | None = None,
                 at: float | None = None) -> tuple[bytes, dict[str, str]]:
    """A Stripe event delivery: (body, headers) with a ``Stripe-Signature`` for ``secret``."""
    created = int(at if at is not None else time.time())
    body = json.dumps({"id": event_id or f"evt_{uuid.uuid4().hex[:24]}", "object": "event",
                       "type": event_type, "created": created, "api_version": "2017-08-15",
                       "livemode": False, "data": {"object": obj}}).encode()
    signature = hmac.new(secret.encode(), f"{created}.".encode() + body, hashlib.sha256).hexdigest()
    return body, {"Content-Type": "application/json",
                  "Stripe-Signature": f"t={created},v1={signature}"}


def payment_row(database_url: str, order_id) -> dict | None:
    """The payment service's row for an order (what the black-box checks read)."""
    db = Database(database_url, "payment_svc", 1, 1)
    try:
        with db.transaction() as cur:
            cur.execute("SELECT * FROM payments WHERE order_id = %s", (str(order_id),))
            return cur.fetchone()
    finally:
        db.close()


def authorize(order_db, order: dict, traceparent: str | None = None) -> None:
    """Record ``order``'s payment as authorized, as the order worker does on ``payment.authorized``.

    For tests about what happens after payment (shipping, cancellation, faults in the
    delivery pipeline): the order service's own handler runs in one transaction, so the
    order becomes PENDING_SHIPMENT and ``order.paid`` goes to its outbox for the relay.
    ``traceparent`` is what the payment service would carry had the confirm request sent one.
    The payment side itself (confirm, webhooks, Stripe) is tested against localstripe in
    tests/integration/test_payments.py and end to end in tests/e2e.
    """
    from datetime import UTC, datetime

    from services.order.handlers import on_payment_event
    from shared import tracecontext
    from shared.messaging.envelope import Envelope

    payment = order["payment"]
    event = Envelope(event_type="payment.authorized", aggregate_id=order["id"],
                     producer="payment-service",
                     data={"order_id": order["id"], "payment_intent_id": payment["payment_intent_id"],
                           "currency": order["currency"], "amount_minor": payment["amount_minor"],
                           "authorized_at": datetime.now(UTC).isoformat()},
                     traceparent=traceparent)
    # As the order worker's consumer does: the handler runs in the event's trace.
    with tracecontext.continued(event.traceparent), order_db.transaction() as cur:
        on_payment_event(cur, event)
