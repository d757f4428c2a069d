"""Payments end to end against localstripe over HTTP: checkout, authorize, capture, void, refund.

Real parts: the order, payment and inventory APIs (in-process HTTP servers and
test clients), PostgreSQL, and the Stripe API emulator (localstripe) through
the official ``stripe`` library. The queues are stood in for by reading each
producer's outbox rows and handing them to the consumer's handler in a
transaction, which is what the consumer does after a receive (the messaging
itself is tested elsewhere; the slow tier runs the real workers).
"""

from __future__ import annotations

import time
import uuid

import pytest
import requests
import stripe

from devstack.emulators import LOCALSTRIPE_SECRET_KEY
from services.inventory.reservations import on_order_cancelled as inventory_on_cancelled
from services.inventory.reservations import on_order_created as inventory_on_created
from services.inventory.restock import on_payment_refunded
from services.order.cancellation import expire_unpaid
from services.order.handlers import on_payment_event
from services.payment.app import gateway_for
from services.payment.handlers import order_event_handler
from services.payment.reconciliation import reconcile
from services.payment.settings import PaymentSettings
from shared.messaging.envelope import Envelope
from shared.resilience import BreakerRegistry
from tests.conftest import STRIPE_WEBHOOK_SECRET
from tests.support.asserts import assert_problem
from tests.support.payments import DECLINED_CARD, PaymentServer, pay, signed_event
from tests.support.tcp_proxy import TcpProxy

CUSTOMER = "customer-1"
ADDRESS = {"name": "Ada", "line1": "Main St 1", "city": "Berlin", "postal_code": "10115",
           "country": "DE"}
ADMIN = ("admin", "orders:read", "orders:write")


@pytest.fixture
def stripe_client(stripe_api):
    """The provider as the storefront's Stripe.js (or an attacker with the key) would reach it."""
    return stripe.StripeClient(LOCALSTRIPE_SECRET_KEY, base_addresses={"api": stripe_api},
                               max_network_retries=0)


@pytest.fixture
def customer_token(make_token):
    return make_token(CUSTOMER)


def place(order_client, auth_header, items=None) -> dict:
    response = order_client.post("/v1/orders", headers=auth_header(CUSTOMER), json={
        "items": items or [{"sku": "SKU-1", "quantity": 2}, {"sku": "SKU-2", "quantity": 3}],
        "shipping_address": ADDRESS, "customer_email": "ada@example.com"})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def outbox(db, event_type: str, queue: str | None = None) -> list[Envelope]:
    with db.transaction() as cur:
        cur.execute("SELECT queue, body FROM outbox WHERE event_type = %s ORDER BY id", (event_type,))
        rows = cur.fetchall()
    return [Envelope.from_json(row["body"]) for row in rows if queue is None or row["queue"] == queue]


def deliver(db, handler, envelope: Envelope) -> None:
    """What a consumer does with a received message: the handler in one transaction."""
    with db.transaction() as cur:
        handler(cur, envelope)


def order_row(order_db, order_id) -> dict:
    with order_db.transaction() as cur:
        cur.execute("SELECT * FROM orders WHERE id = %s", (order_id,))
        return cur.fetchone()


def stock(inventory_db, sku: str) -> tuple[int, int]:
    with inventory_db.transaction() as cur:
        cur.execute("SELECT on_hand, reserved FROM products WHERE sku = %s", (sku,))
        row = cur.fetchone()
    return row["on_hand"], row["reserved"]


def shipped(order_id: str) -> Envelope:
    return Envelope(event_type="order.status_changed", aggregate_id=order_id, producer="order-service",
                    data={"order_id": order_id, "customer_id": CUSTOMER,
                          "previous_status": "PENDING_SHIPMENT", "status": "SHIPPED",
                          "cause": "delivery.shipped"})


@pytest.fixture
def gateway(stripe_api):
    own = PaymentSettings.from_env({"STRIPE_API_BASE": stripe_api}, app_env="test")
    return gateway_for(own, BreakerRegistry({}))


def authorize(order_client, auth_header, order_db, payment_db, payment_url, customer_token,
              items=None) -> dict:
    """Checkout, pay with the test card, and let the order see payment.authorized."""
    order = place(order_client, auth_header, items)
    response = pay(payment_url, order["id"], customer_token)
    assert response.status_code == 200, response.json()
    assert response.json()["status"] == "AUTHORIZED"
    (authorized,) = [e for e in outbox(payment_db, "payment.authorized")
                     if e.aggregate_id == order["id"]]
    deliver(order_db, on_payment_event, authorized)
    return order


# --- checkout ------------------------------------------------------------------------------
def test_checkout_answers_pending_payment_with_what_the_storefront_needs(
        order_client, auth_header, payment_db, stripe_client):
    order = place(order_client, auth_header)
    assert order["status"] == "PENDING_PAYMENT"
    payment = order["payment"]
    # 2 x 9.99 + 3 x 0.50 = 21.48 EUR, in cents, computed from the catalog's prices.
    assert payment["amount_minor"] == 2148 and payment["currency"] == "EUR"
    assert payment["client_secret"].startswith(payment["payment_intent_id"] + "_secret_")
    assert payment["expires_at"] is not None and payment["paid_at"] is None
    intent = stripe_client.v1.payment_intents.retrieve(payment["payment_intent_id"])
    assert (intent.amount, intent.currency, intent.capture_method) == (2148, "eur", "manual")
    assert intent.metadata["order_id"] == order["id"]
    with payment_db.transaction() as cur:
        cur.execute("SELECT status, amount_minor, intent_id FROM payments WHERE order_id = %s",
                    (order["id"],))
        row = cur.fetchone()
    assert row == {"status": "REQUIRES_PAYMENT", "amount_minor": 2148,
                   "intent_id": payment["payment_intent_id"]}
    # Nothing is shipped before it is paid: no order.paid yet, so delivery has nothing to do.
    assert outbox(payment_db, "payment.authorized") == []


def test_a_zero_decimal_currency_is_charged_in_whole_units(order_client, auth_header, inventory_db,
                                                           stripe_client):
    with inventory_db.transaction() as cur:  # the test catalog is in EUR; this product in yen
        cur.execute("UPDATE products SET currency = 'JPY', price = 1500 WHERE sku = 'SKU-1'")
    order = place(order_client, auth_header, [{"sku": "SKU-1", "quantity": 2}])
    assert order["payment"]["amount_minor"] == 3000 and order["currency"] == "JPY"
    intent = stripe_client.v1.payment_intents.retrieve(order["payment"]["payment_intent_id"])
    assert (intent.amount, intent.currency) == (3000, "jpy")


# --- authorize -> ship -> capture ----------------------------------------------------------
def test_authorize_then_ship_captures_exactly_once(order_client, auth_header, order_db, payment_db,
                                                   payment_url, customer_token, gateway,
                                                   stripe_client):
    order = authorize(order_client, auth_header, order_db, payment_db, payment_url, customer_token)
    row = order_row(order_db, order["id"])
    assert row["status"] == "PENDING_SHIPMENT" and row["paid_at"] is not None
    # Only now does delivery get something to ship.
    (paid,) = outbox(order_db, "order.paid", "order-paid.fifo")
    assert paid.data["order_id"] == order["id"]
    assert paid.data["shipping_address"] == {**ADDRESS, "line2": None, "region": None}
    changed = [e.data["status"] for e in outbox(order_db, "order.status_changed", "order-payments.fifo")]
    assert changed == ["PENDING_SHIPMENT"]

    handler = order_event_handler(gateway)
    deliver(payment_db, handler, shipped(order["id"]))
    deliver(payment_db, handler, shipped(order["id"]))  # a second SHIPPED (new event id)
    with payment_db.transaction() as cur:
        cur.execute("SELECT status, amount_captured FROM payments WHERE order_id = %s", (order["id"],))
        assert cur.fetchone() == {"status": "CAPTURED", "amount_captured": 2148}
        cur.execute("SELECT count(*) AS n FROM payment_history WHERE order_id = %s"
                    " AND action = 'capture' AND status = 'CAPTURED'", (order["id"],))
        assert cur.fetchone()["n"] == 1
    intent = stripe_client.v1.payment_intents.retrieve(order["payment"]["payment_intent_id"])
    assert intent.status == "succeeded"
    # A second copy of payment.authorized changes nothing on the order.
    (authorized,) = outbox(payment_db, "payment.authorized")
    deliver(order_db, on_payment_event, Envelope(**{**authorized.__dict__,
                                                    "event_id": str(uuid.uuid4())}))
    assert len(outbox(order_db, "order.paid")) == 1


def test_a_declined_card_is_402_and_the_order_still_awaits_payment(
        order_client, auth_header, payment_url, customer_token, payment_db):
    order = place(order_client, auth_header)
    response = pay(payment_url, order["id"], customer_token, DECLINED_CARD)
    assert response.status_code == 402
    assert response.headers["Content-Type"].startswith("application/problem+json")
    assert response.json()["type"].endswith("payment-declined")
    assert payment_row_status(payment_db, order["id"]) == "REQUIRES_PAYMENT"
    assert outbox(payment_db, "payment.authorized") == []


def test_a_confirm_retried_after_the_provider_already_authorized_is_answered_not_declined(
        order_client, auth_header, order_db, payment_url, customer_token, payment_db, stripe_client):
    """The first confirm reached the provider but its answer was lost (API killed, timeout).

    The customer's retry must see the authorization, not a decline: the
    provider refuses a second confirm of a confirmed intent (localstripe keeps
    no idempotency keys), so the payment API looks at the intent itself.
    """
    order = place(order_client, auth_header)
    confirm_at_provider(stripe_client, order["payment"]["payment_intent_id"])
    assert payment_row_status(payment_db, order["id"]) == "REQUIRES_PAYMENT"
    response = pay(payment_url, order["id"], customer_token)
    assert response.status_code == 200, response.json()
    assert response.json()["status"] == "AUTHORIZED"
    assert len([e for e in outbox(payment_db, "payment.authorized")
                if e.aggregate_id == order["id"]]) == 1
    again = pay(payment_url, order["id"], customer_token)
    assert again.status_code == 200 and again.json()["status"] == "AUTHORIZED"
    assert len(outbox(payment_db, "payment.authorized")) == 1


def payment_row_status(payment_db, order_id) -> str:
    with payment_db.transaction() as cur:
        cur.execute("SELECT status FROM payments WHERE order_id = %s", (order_id,))
        return cur.fetchone()["status"]


# --- cancel -> void --------------------------------------------------------------------------
def test_cancel_after_authorization_voids_it(order_client, auth_header, order_db, payment_db,
                                             payment_url, customer_token, gateway, stripe_client):
    order = authorize(order_client, auth_header, order_db, payment_db, payment_url, customer_token)
    response = order_client.post(f"/v1/orders/{order['id']}/cancel", headers=auth_header(CUSTOMER))
    assert response.status_code == 200 and response.get_json()["status"] == "CANCELLED"
    (cancelled,) = outbox(order_db, "order.cancelled", "order-payments.fifo")
    deliver(payment_db, order_event_handler(gateway), cancelled)
    assert payment_row_status(payment_db, order["id"]) == "VOIDED"
    intent = stripe_client.v1.payment_intents.retrieve(order["payment"]["payment_intent_id"])
    assert intent.status == "canceled"


def test_cancel_before_payment_voids_the_intent_and_it_cannot_be_paid_later(
        order_client, auth_header, order_db, payment_db, payment_url, customer_token, gateway,
        stripe_client):
    order = place(order_client, auth_header)
    order_client.post(f"/v1/orders/{order['id']}/cancel", headers=auth_header(CUSTOMER))
    (cancelled,) = outbox(order_db, "order.cancelled", "order-payments.fifo")
    deliver(payment_db, order_event_handler(gateway), cancelled)
    assert payment_row_status(payment_db, order["id"]) == "VOIDED"
    response = pay(payment_url, order["id"], customer_token)
    assert response.status_code == 409 and response.json()["type"].endswith("payment-not-payable")
    intent = stripe_client.v1.payment_intents.retrieve(order["payment"]["payment_intent_id"])
    assert intent.status == "canceled"


# --- refunds ---------------------------------------------------------------------------------
def captured_order(order_client, auth_header, order_db, payment_db, inventory_db, payment_url,
                   customer_token, gateway) -> dict:
    order = authorize(order_client, auth_header, order_db, payment_db, payment_url, customer_token)
    (created,) = outbox(order_db, "order.created", "inventory-events.fifo")
    deliver(inventory_db, inventory_on_created, created)  # the stock leaves on_hand
    deliver(payment_db, order_event_handler(gateway), shipped(order["id"]))
    return order


def test_partial_refund_restores_only_its_lines_once(order_client, auth_header, order_db,
                                                     payment_db, inventory_db, payment_url,
                                                     customer_token, gateway, stripe_client,
                                                     make_token):
    order = captured_order(order_client, auth_header, order_db, payment_db, inventory_db,
                           payment_url, customer_token, gateway)
    before = {sku: stock(inventory_db, sku) for sku in ("SKU-1", "SKU-2")}
    admin = make_token("operator", ADMIN)
    response = requests.post(f"{payment_url}/v1/payments/{order['id']}/refunds",
                             json={"lines": [{"sku": "SKU-1", "quantity": 1}]},
                             headers={"Authorization": f"Bearer {admin}", "Idempotency-Key": "r-1"},
                             timeout=30)
    assert response.status_code == 201, response.json()
    refund = response.json()
    assert refund["amount_minor"] == 999 and refund["lines"] == [{"sku": "SKU-1", "quantity": 1}]
    again = requests.post(f"{payment_url}/v1/payments/{order['id']}/refunds",
                          json={"lines": [{"sku": "SKU-1", "quantity": 1}]},
                          headers={"Authorization": f"Bearer {admin}", "Idempotency-Key": "r-1"},
                          timeout=30)
    assert again.status_code == 201 and again.json()["id"] == refund["id"]
    provider = stripe_client.v1.refunds.list(params={"payment_intent": order["payment"]["payment_intent_id"]})
    assert [r.amount for r in provider.data] == [999]

    (refunded,) = outbox(payment_db, "payment.refunded", "payment-refunds.fifo")
    assert refunded.data["lines"] == [{"sku": "SKU-1", "quantity": 1}]
    deliver(inventory_db, on_payment_refunded, refunded)
    # The same refund again (a replay under a new event id) restocks nothing more.
    deliver(inventory_db, on_payment_refunded, Envelope(**{**refunded.__dict__,
                                                         "event_id": str(uuid.uuid4())}))
    assert stock(inventory_db, "SKU-1") == (before["SKU-1"][0] + 1, before["SKU-1"][1])
    assert stock(inventory_db, "SKU-2") == before["SKU-2"]

    # More units than are left, and more money than is left, are refused.
    too_many = requests.post(f"{payment_url}/v1/payments/{order['id']}/refunds",
                             json={"lines": [{"sku": "SKU-1", "quantity": 2}]},
                             headers={"Authorization": f"Bearer {admin}"}, timeout=30)
    assert too_many.status_code == 409
    assert too_many.json()["errors"] == [{"field": "lines.0.quantity",
                                          "message": "Only 1 unit(s) left to refund."}]
    amount = requests.post(f"{payment_url}/v1/payments/{order['id']}/refunds",
                           json={"amount_minor": 100},
                           headers={"Authorization": f"Bearer {admin}"}, timeout=30)
    assert amount.status_code == 201 and amount.json()["lines"] == []
    full = requests.post(f"{payment_url}/v1/payments/{order['id']}/refunds", json={"full": True},
                         headers={"Authorization": f"Bearer {admin}"}, timeout=30)
    assert full.status_code == 201
    assert full.json()["amount_minor"] == 2148 - 999 - 100
    assert full.json()["lines"] == [{"sku": "SKU-1", "quantity": 1}, {"sku": "SKU-2", "quantity": 3}]
    assert payment_row_status(payment_db, order["id"]) == "REFUNDED"
    nothing_left = requests.post(f"{payment_url}/v1/payments/{order['id']}/refunds",
                                 json={"amount_minor": 1},
                                 headers={"Authorization": f"Bearer {admin}"}, timeout=30)
    assert nothing_left.status_code == 409


def test_refunds_need_admin_and_a_captured_payment_and_valid_bodies(
        order_client, auth_header, payment_url, make_token):
    order = place(order_client, auth_header)
    url = f"{payment_url}/v1/payments/{order['id']}/refunds"
    customer = requests.post(url, json={"full": True}, timeout=30,
                             headers={"Authorization": f"Bearer {make_token(CUSTOMER)}"})
    assert customer.status_code == 403
    admin = {"Authorization": f"Bearer {make_token('operator', ADMIN)}"}
    not_captured = requests.post(url, json={"full": True}, headers=admin, timeout=30)
    assert not_captured.status_code == 409 and not_captured.json()["type"].endswith("not-refundable")
    for body, field in (({}, "_schema"), ({"full": True, "amount_minor": 5}, "_schema"),
                        ({"amount_minor": 0}, "amount_minor"), ({"amount_minor": "5"}, "amount_minor"),
                        ({"lines": [{"sku": "SKU-1", "quantity": 1, "unit_price": "1"}]},
                         "lines.0.unit_price")):
        response = requests.post(url, json=body, headers=admin, timeout=30)
        assert response.status_code == 422, body
        assert field in {e["field"] for e in response.json()["errors"]}, response.json()


# --- unpaid expiry ---------------------------------------------------------------------------
def test_unpaid_orders_expire_release_stock_void_and_tell_the_customer(
        order_client, auth_header, order_db, payment_db, inventory_db, gateway, stripe_client):
    on_hand_before, _ = stock(inventory_db, "SKU-1")
    order = place(order_client, auth_header, [{"sku": "SKU-1", "quantity": 4}])
    (created,) = outbox(order_db, "order.created", "inventory-events.fifo")
    deliver(inventory_db, inventory_on_created, created)
    assert stock(inventory_db, "SKU-1") == (on_hand_before - 4, 0)
    assert expire_unpaid(order_db, ttl_s=3600) == 0  # not yet due
    time.sleep(0.2)
    assert expire_unpaid(order_db, ttl_s=0.1) == 1
    assert expire_unpaid(order_db, ttl_s=0.1) == 0  # once
    row = order_row(order_db, order["id"])
    assert (row["status"], row["cancel_reason"]) == ("CANCELLED", "payment_expired")
    queues = {q for q in ("inventory-events.fifo", "order-cancelled.fifo", "order-status.fifo",
                          "order-payments.fifo")
              if outbox(order_db, "order.cancelled", q)}
    assert queues == {"inventory-events.fifo", "order-cancelled.fifo", "order-status.fifo",
                      "order-payments.fifo"}  # stock, shipment, the customer's mail, the money
    (to_inventory,) = outbox(order_db, "order.cancelled", "inventory-events.fifo")
    deliver(inventory_db, inventory_on_cancelled, to_inventory)
    assert stock(inventory_db, "SKU-1") == (on_hand_before, 0)
    (to_payment,) = outbox(order_db, "order.cancelled", "order-payments.fifo")
    deliver(payment_db, order_event_handler(gateway), to_payment)
    assert payment_row_status(payment_db, order["id"]) == "VOIDED"
    assert stripe_client.v1.payment_intents.retrieve(
        order["payment"]["payment_intent_id"]).status == "canceled"


# --- amount mismatch --------------------------------------------------------------------------
def test_an_intent_whose_amount_is_not_the_orders_is_refused(order_client, auth_header,
                                                             payment_url, customer_token,
                                                             payment_db, stripe_client):
    order = place(order_client, auth_header)
    intent_id = order["payment"]["payment_intent_id"]
    stripe_client.v1.payment_intents.update(intent_id, params={"amount": 1})  # tampered with
    response = pay(payment_url, order["id"], customer_token)
    assert response.status_code == 409 and response.json()["type"].endswith("amount-mismatch")
    assert payment_row_status(payment_db, order["id"]) == "REFUSED"
    assert outbox(payment_db, "payment.authorized") == []
    assert stripe_client.v1.payment_intents.retrieve(intent_id).status == "canceled"


# --- webhooks ---------------------------------------------------------------------------------
def confirm_at_provider(stripe_client, intent_id: str) -> dict:
    """What Stripe.js does in the browser: confirm the intent without our API."""
    stripe_client.v1.payment_intents.update(intent_id, params={"payment_method": "pm_card_visa"})
    return stripe_client.v1.payment_intents.confirm(intent_id).to_dict()


def post_event(payment_client, event_type: str, obj: dict, event_id: str | None = None, **kw):
    body, headers = signed_event(STRIPE_WEBHOOK_SECRET, event_type, obj, event_id, **kw)
    return payment_client.post("/v1/payments/stripe-events", data=body, headers=headers)


def test_webhook_signature_refused_changes_nothing(order_client, auth_header, payment_client,
                                                   payment_db, stripe_client):
    order = place(order_client, auth_header)
    obj = confirm_at_provider(stripe_client, order["payment"]["payment_intent_id"])
    body, headers = signed_event("whsec_not_ours", "payment_intent.amount_capturable_updated", obj)
    for attempt in (
            {"data": body, "headers": headers},                                   # wrong secret
            {"data": body, "headers": {"Content-Type": "application/json"}},       # no signature
            {"data": body + b" ", "headers": signed_event(
                STRIPE_WEBHOOK_SECRET, "payment_intent.amount_capturable_updated", obj)[1]},
    ):
        response = payment_client.post("/v1/payments/stripe-events", **attempt)
        assert_problem(response, 400, "bad-webhook-signature", ["Stripe-Signature"])
    stale = post_event(payment_client, "payment_intent.amount_capturable_updated", obj,
                       at=time.time() - 3600)
    assert_problem(stale, 400, "bad-webhook-signature", ["Stripe-Signature"])
    with payment_db.transaction() as cur:
        cur.execute("SELECT count(*) AS n FROM stripe_events")
        assert cur.fetchone()["n"] == 0
    assert payment_row_status(payment_db, order["id"]) == "REQUIRES_PAYMENT"
    assert outbox(payment_db, "payment.authorized") == []


def test_webhook_authorizes_once_and_duplicate_or_reordered_events_are_harmless(
        order_client, auth_header, payment_client, payment_db, stripe_client, gateway):
    order = place(order_client, auth_header)
    obj = confirm_at_provider(stripe_client, order["payment"]["payment_intent_id"])
    assert obj["status"] == "requires_capture"
    first = post_event(payment_client, "payment_intent.amount_capturable_updated", obj, "evt_auth_1")
    assert first.status_code == 200 and first.get_json()["outcome"] == "authorized"
    duplicate = post_event(payment_client, "payment_intent.amount_capturable_updated", obj, "evt_auth_1")
    assert duplicate.get_json()["outcome"] == "duplicate"
    assert len(outbox(payment_db, "payment.authorized")) == 1

    deliver(payment_db, order_event_handler(gateway), shipped(order["id"]))
    assert payment_row_status(payment_db, order["id"]) == "CAPTURED"
    # Late and out of order: an authorization and a cancellation after the capture.
    late = post_event(payment_client, "payment_intent.amount_capturable_updated", obj, "evt_auth_2")
    assert late.get_json()["outcome"] == "ignored"
    cancelled_obj = {**obj, "status": "canceled"}
    stale_cancel = post_event(payment_client, "payment_intent.canceled", cancelled_obj, "evt_cxl_1")
    assert stale_cancel.get_json()["outcome"] == "ignored"
    assert payment_row_status(payment_db, order["id"]) == "CAPTURED"
    assert len(outbox(payment_db, "payment.authorized")) == 1
    unknown = post_event(payment_client, "payment_intent.succeeded", {**obj, "id": "pi_not_ours"})
    assert unknown.get_json()["outcome"] == "unknown_intent"


def test_webhook_with_another_amount_is_refused(order_client, auth_header, payment_client,
                                               payment_db, stripe_client):
    order = place(order_client, auth_header)
    obj = confirm_at_provider(stripe_client, order["payment"]["payment_intent_id"])
    response = post_event(payment_client, "payment_intent.amount_capturable_updated",
                          {**obj, "amount": obj["amount"] + 1})
    assert response.get_json()["outcome"] == "refused"
    assert payment_row_status(payment_db, order["id"]) == "REFUSED"
    assert outbox(payment_db, "payment.authorized") == []


def test_reconciliation_finds_an_authorization_whose_webhook_never_came(
        order_client, auth_header, payment_db, stripe_client, gateway):
    order = place(order_client, auth_header)
    confirm_at_provider(stripe_client, order["payment"]["payment_intent_id"])
    assert reconcile(payment_db, gateway, older_than_s=3600) == 0  # too recent to ask about
    time.sleep(0.2)
    assert reconcile(payment_db, gateway, older_than_s=0.1) == 1
    assert payment_row_status(payment_db, order["id"]) == "AUTHORIZED"
    assert len(outbox(payment_db, "payment.authorized")) == 1


# --- provider down ----------------------------------------------------------------------------
def test_provider_down_checkout_503_nothing_half_done_breaker_opens_and_recovers(
        app_for, auth_header, order_db, payment_db, inventory_db, database_url, jwks_server,
        stripe_api):
    from tests.conftest import stripe_env
    with TcpProxy.to_url(stripe_api) as proxy:
        server = PaymentServer({"APP_ENV": "test", "DATABASE_URL": database_url,
                                "LOG_LEVEL": "WARNING", "AUTH_JWKS_URL": jwks_server.url,
                                **stripe_env(proxy.url), "PAYMENT_STRIPE_TIMEOUT_S": "1",
                                "PAYMENT_STRIPE_ATTEMPTS": "2", "BREAKER_STRIPE_FAIL_MAX": "2",
                                "BREAKER_STRIPE_RESET_TIMEOUT_S": "2"})
        try:
            client = app_for("order", PAYMENT_URL=server.url, ORDER_PAYMENT_ATTEMPTS="1").test_client()
            body = {"items": [{"sku": "SKU-1", "quantity": 1}], "shipping_address": ADDRESS,
                    "customer_email": "ada@example.com"}
            on_hand, reserved = stock(inventory_db, "SKU-1")
            proxy.go_down()
            first = client.post("/v1/orders", headers=auth_header(CUSTOMER), json=body)
            assert_problem(first, 503, "payment-unavailable")
            assert int(first.headers["Retry-After"]) >= 1
            # The breaker is open now: the next checkout fails fast, still with nothing kept.
            started = time.monotonic()
            second = client.post("/v1/orders", headers=auth_header(CUSTOMER), json=body)
            assert_problem(second, 503, "payment-unavailable")
            assert time.monotonic() - started < 1.0
            assert server.app.extensions["breakers"].snapshot()["stripe"]["state"] == "open"
            with order_db.transaction() as cur:
                cur.execute("SELECT count(*) AS n FROM orders")
                assert cur.fetchone()["n"] == 0
            with payment_db.transaction() as cur:
                cur.execute("SELECT count(*) AS n FROM payments")
                assert cur.fetchone()["n"] == 0
            assert stock(inventory_db, "SKU-1") == (on_hand, reserved)  # reservations released
            with inventory_db.transaction() as cur:
                cur.execute("SELECT DISTINCT status, release_reason FROM reservations")
                assert cur.fetchall() == [{"status": "RELEASED",
                                           "release_reason": "checkout_abandoned"}]
            proxy.go_up()
            time.sleep(2.2)  # the breaker's reset timeout: the next call is its trial
            recovered = client.post("/v1/orders", headers=auth_header(CUSTOMER), json=body)
            assert recovered.status_code == 201, recovered.get_json()
            assert recovered.get_json()["status"] == "PENDING_PAYMENT"
            assert server.app.extensions["breakers"].snapshot()["stripe"]["state"] == "closed"
        finally:
            server.stop()


def test_confirm_and_read_are_the_customers_own(order_client, auth_header, payment_url,
                                                make_token):
    order = place(order_client, auth_header)
    other = make_token("customer-2")
    assert pay(payment_url, order["id"], other).status_code == 404
    response = requests.get(f"{payment_url}/v1/payments/{order['id']}",
                            headers={"Authorization": f"Bearer {other}"}, timeout=30)
    assert response.status_code == 404
    mine = requests.get(f"{payment_url}/v1/payments/{order['id']}",
                        headers={"Authorization": f"Bearer {make_token(CUSTOMER)}"}, timeout=30)
    assert mine.status_code == 200 and mine.json()["status"] == "REQUIRES_PAYMENT"
    # Card data is refused outright: only a PaymentMethod id is accepted.
    card = requests.post(f"{payment_url}/v1/payments/{order['id']}/confirm",
                         json={"payment_method": "pm_card_visa", "card": {"number": "4242"}},
                         headers={"Authorization": f"Bearer {make_token(CUSTOMER)}"}, timeout=30)
    assert card.status_code == 422
    bad = requests.post(f"{payment_url}/v1/payments/{order['id']}/confirm",
                        json={"payment_method": "4242424242424242"},
                        headers={"Authorization": f"Bearer {make_token(CUSTOMER)}"}, timeout=30)
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "payment_method"
    # Opening a payment is the order service's business, not a customer's.
    opened = requests.put(f"{payment_url}/v1/payments/{uuid.uuid4()}", json={
        "customer_id": CUSTOMER, "currency": "EUR",
        "lines": [{"sku": "SKU-1", "quantity": 1, "unit_price": "0.01"}]},
        headers={"Authorization": f"Bearer {make_token(CUSTOMER)}"}, timeout=30)
    assert opened.status_code == 403


# --- stuck orders -------------------------------------------------------------------------------
def test_stuck_orders_are_listed_for_operators_and_the_policy_rejects_and_voids_them(
        order_client, auth_header, order_db, payment_db, payment_url, customer_token, gateway,
        stripe_client):
    from services.order.cancellation import reject_stuck
    paid = authorize(order_client, auth_header, order_db, payment_db, payment_url, customer_token)
    unpaid = place(order_client, auth_header)
    time.sleep(0.3)
    admin = auth_header("operator", ADMIN)
    listed = order_client.get("/v1/orders/stuck?older_than_s=1", headers=admin)
    assert listed.status_code == 200 and listed.get_json()["items"] == []  # not old enough
    time.sleep(1.0)
    listed = order_client.get("/v1/orders/stuck?older_than_s=1", headers=admin).get_json()
    assert {o["id"]: o["status"] for o in listed["items"]} == {
        paid["id"]: "PENDING_SHIPMENT", unpaid["id"]: "PENDING_PAYMENT"}
    assert order_client.get("/v1/orders/stuck", headers=auth_header(CUSTOMER)).status_code == 403
    bad = order_client.get("/v1/orders/stuck?older_than_s=0", headers=admin)
    assert_problem(bad, 422, "validation-error", ["older_than_s"])

    # The policy rejects paid-but-unshipped orders only (unpaid ones expire on their own clock).
    # Like a customer's cancel, through the delivery API first (the order app's own client).
    assert reject_stuck(order_db, order_client.application.extensions["delivery"],
                        older_than_s=1) == 1
    assert order_row(order_db, paid["id"])["status"] == "CANCELLED"
    assert order_row(order_db, paid["id"])["cancel_reason"] == "stuck_auto_rejected"
    assert order_row(order_db, unpaid["id"])["status"] == "PENDING_PAYMENT"
    (cancelled,) = outbox(order_db, "order.cancelled", "order-payments.fifo")
    deliver(payment_db, order_event_handler(gateway), cancelled)
    assert payment_row_status(payment_db, paid["id"]) == "VOIDED"
    assert stripe_client.v1.payment_intents.retrieve(
        paid["payment"]["payment_intent_id"]).status == "canceled"
