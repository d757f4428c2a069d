"""What the chaos run's customers do, and the order statuses it knows — in one place.

Each step is one small function over HTTP, retried the way a careful client
retries: the same ``Idempotency-Key`` until the answer is definitive (a 2xx
or a 4xx), so an order is placed at most once whatever crashes in between.
Checkout answers ``PENDING_PAYMENT``; :func:`pay` then confirms the order's
payment as the storefront does (a Stripe test PaymentMethod id), retried on
the same rules (confirming is idempotent per order: a payment already
authorized is answered as it is), and a 402 (declined) is final.
Status names come from ``services.order.domain``; a change of the order flow
(a new status) is made there and in :data:`PLACED_STATUSES` below.
"""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass, field

import requests

from services.order.domain import ALLOWED_TRANSITIONS, OrderStatus

# The statuses an order never leaves (read from the domain: no allowed transition out).
TERMINAL_STATUSES = frozenset(s.value for s, targets in ALLOWED_TRANSITIONS.items() if not targets)
# What a freshly placed order may be in (the answer of POST /v1/orders).
PLACED_STATUSES = frozenset({OrderStatus.PENDING_PAYMENT.value})
CANCELLED = OrderStatus.CANCELLED.value
SHIPPED = OrderStatus.SHIPPED.value
DELIVERED = OrderStatus.DELIVERED.value
PENDING_PAYMENT = OrderStatus.PENDING_PAYMENT.value
# A Stripe test PaymentMethod id (no card data); localstripe authorizes it.
TEST_CARD = "pm_card_visa"
# A client gives up on one request after this long in all (it would show an error).
GIVE_UP_AFTER_S = 300.0
RETRY_PAUSE_S = 0.5
REQUEST_TIMEOUT_S = 10.0
SHIPPING_ADDRESS = {"name": "Chaos Customer", "line1": "1 Example Street", "city": "Berlin",
                    "postal_code": "10115", "country": "DE"}


@dataclass
class Placed:
    """One order the run asked for, and what it was answered."""

    key: str
    lines: list[dict]
    order_id: str | None = None
    status_code: int | None = None
    attempts: int = 0
    errors: list[str] = field(default_factory=list)
    status: str | None = None          # the order's status in the 201
    pay_status: int | None = None      # the confirm's definitive answer (None: not paid, or gave up)
    payment_status: str | None = None  # the payment's status in that answer
    cancel_status: int | None = None
    plan: str = ""                     # what the customer meant to do (see run.py)


def _definitive(response: requests.Response) -> bool:
    # 5xx (a killed or frozen peer, a breaker open) and anything that says when to come back
    # (429; 409 idempotency-key-in-progress: the first attempt still runs, or crashed and its
    # key goes stale) are worth a retry with the same key; the rest is final.
    return response.status_code < 500 and "Retry-After" not in response.headers


def _retrying(send, record: Placed, deadline: float) -> requests.Response | None:
    while time.monotonic() < deadline:
        record.attempts += 1
        try:
            response = send()
        except requests.RequestException as exc:
            record.errors.append(type(exc).__name__)
        else:
            if _definitive(response):
                return response
            record.errors.append(f"HTTP {response.status_code}")
        time.sleep(RETRY_PAUSE_S)
    return None


def random_lines(rng: random.Random, skus: list[str]) -> list[dict]:
    """1-3 distinct products, 1-3 of each."""
    return [{"sku": sku, "quantity": rng.randint(1, 3)}
            for sku in rng.sample(skus, rng.randint(1, min(3, len(skus))))]


def place_order(session: requests.Session, order_url: str, token: str, lines: list[dict],
                email: str) -> Placed:
    """POST /v1/orders with one Idempotency-Key until definitive; the 201's order id."""
    record = Placed(key=f"chaos-{uuid.uuid4()}", lines=lines)
    body = {"items": lines, "customer_email": email, "shipping_address": SHIPPING_ADDRESS}
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": record.key}
    response = _retrying(lambda: session.post(f"{order_url}/v1/orders", json=body, headers=headers,
                                              timeout=REQUEST_TIMEOUT_S),
                         record, time.monotonic() + GIVE_UP_AFTER_S)
    if response is not None:
        record.status_code = response.status_code
        if response.status_code == 201:
            body = response.json()
            record.order_id, record.status = body["id"], body["status"]
    return record


def pay(session: requests.Session, payment_url: str, token: str, record: Placed,
        payment_method: str = TEST_CARD) -> None:
    """POST /v1/payments/{id}/confirm until definitive (200; 402 declined and 409 are final)."""
    response = _retrying(lambda: session.post(
        f"{payment_url}/v1/payments/{record.order_id}/confirm",
        json={"payment_method": payment_method},
        headers={"Authorization": f"Bearer {token}"}, timeout=REQUEST_TIMEOUT_S),
        record, time.monotonic() + GIVE_UP_AFTER_S)
    if response is not None:
        record.pay_status = response.status_code
        if response.status_code == 200:
            record.payment_status = response.json().get("status")


def cancel_order(session: requests.Session, order_url: str, token: str, record: Placed) -> None:
    """POST /v1/orders/{id}/cancel until definitive (200, or 409 once it has shipped)."""
    response = _retrying(lambda: session.post(
        f"{order_url}/v1/orders/{record.order_id}/cancel", json={"reason": "chaos run"},
        headers={"Authorization": f"Bearer {token}"}, timeout=REQUEST_TIMEOUT_S),
        record, time.monotonic() + GIVE_UP_AFTER_S)
    record.cancel_status = None if response is None else response.status_code
