"""The money, seen from outside: real workers, real queues, localstripe over HTTP.

Orders are placed over the order API and paid over the payment API as a
storefront would; the order, inventory, delivery (with its carrier simulator)
and payment workers run as processes on moto's SQS. Some orders are delivered,
one is cancelled after it was paid, one is never paid and expires, and one
delivered order gets a line refunded. Then, asking only the provider and the
services' own tables:

* every order that reached DELIVERED was captured exactly once (one capture
  in its payment's history, and the intent is ``succeeded`` at Stripe);
* every cancelled order holds no authorization (its payment is VOIDED and the
  intent ``canceled`` at Stripe);
* the refunded units are back in stock, and only those.
"""

from __future__ import annotations

import pytest
import requests
import stripe

from devstack.emulators import LOCALSTRIPE_SECRET_KEY
from tests.support.payments import pay
from tests.support.wait import wait_until

pytestmark = pytest.mark.slow

ADDRESS = {"name": "Ada", "line1": "Main St 1", "city": "Berlin", "postal_code": "10115",
           "country": "DE"}
ITEMS = [{"sku": "SKU-1", "quantity": 2}, {"sku": "SKU-3", "quantity": 1}]
TIMEOUT_S = 90


def rows(db, sql: str, *args) -> list[dict]:
    with db.transaction() as cur:
        cur.execute(sql, args)
        return cur.fetchall()


def on_hand(inventory_db, sku: str) -> int:
    return rows(inventory_db, "SELECT on_hand FROM products WHERE sku = %s", sku)[0]["on_hand"]


@pytest.mark.timeout(420)  # four workers, the carrier simulator and the waits, on a loaded machine
def test_delivered_orders_are_captured_once_cancelled_hold_nothing_refunds_restock(
        processes, order_client, auth_header, make_token, payment_url, stripe_api, order_db,
        payment_db, inventory_db):
    # Long enough that a paid order's payment.authorized is handled first on a loaded machine.
    processes.worker("order", ORDER_PAYMENT_TTL_S="15", ORDER_EXPIRY_INTERVAL_S="0.5")
    processes.worker("inventory")
    processes.worker("payment")
    processes.worker("delivery", DELIVERY_SIMULATOR_ENABLED="true", DELIVERY_SIMULATOR_STEP_S="1.5")
    provider = stripe.StripeClient(LOCALSTRIPE_SECRET_KEY, base_addresses={"api": stripe_api})
    customer = make_token("customer-1")
    before = {sku: on_hand(inventory_db, sku) for sku in ("SKU-1", "SKU-3")}

    def place() -> str:
        response = order_client.post("/v1/orders", headers=auth_header("customer-1"), json={
            "items": ITEMS, "shipping_address": ADDRESS, "customer_email": "ada@example.com"})
        assert response.status_code == 201, response.get_json()
        return response.get_json()["id"]

    delivered = [place(), place()]
    cancelled_paid, unpaid = place(), place()
    for order_id in (*delivered, cancelled_paid):
        assert pay(payment_url, order_id, customer).json()["status"] == "AUTHORIZED"
    response = order_client.post(f"/v1/orders/{cancelled_paid}/cancel",
                                 headers=auth_header("customer-1"), json={"reason": "no"})
    assert response.get_json()["status"] == "CANCELLED", response.get_json()

    def statuses() -> dict[str, str]:
        return {str(r["id"]): r["status"] for r in rows(order_db, "SELECT id, status FROM orders")}

    def payments() -> dict[str, str]:
        return {str(r["order_id"]): r["status"]
                for r in rows(payment_db, "SELECT order_id, status FROM payments")}

    wait_until(lambda: all(statuses()[o] == "DELIVERED" for o in delivered)
               and statuses()[unpaid] == "CANCELLED", timeout=TIMEOUT_S,
               message="paid orders delivered, the unpaid one expired")
    wait_until(lambda: all(payments()[o] == "CAPTURED" for o in delivered)
               and payments()[cancelled_paid] == payments()[unpaid] == "VOIDED",
               timeout=TIMEOUT_S, message="captures and voids done by the payment worker")

    admin = {"Authorization": f"Bearer {make_token('operator', ('admin',))}"}
    refund = requests.post(f"{payment_url}/v1/payments/{delivered[0]}/refunds", headers=admin,
                           json={"lines": [{"sku": "SKU-3", "quantity": 1}]}, timeout=30)
    assert refund.status_code == 201, refund.text

    # Stock: the delivered orders' units left for good, except the refunded one; the
    # cancelled and the expired orders' units all came back.
    wait_until(lambda: on_hand(inventory_db, "SKU-3") == before["SKU-3"] - 2 + 1,
               timeout=TIMEOUT_S, message="the refunded unit back in stock")
    assert on_hand(inventory_db, "SKU-1") == before["SKU-1"] - 2 * 2
    wait_until(lambda: not rows(inventory_db, "SELECT 1 FROM products WHERE reserved <> 0"),
               timeout=TIMEOUT_S, message="nothing held any more")

    # The black-box view over every order there is.
    final = statuses()
    assert sorted(final.values()) == ["CANCELLED", "CANCELLED", "DELIVERED", "DELIVERED"]
    for order_id, status in final.items():
        (payment,) = rows(payment_db, "SELECT * FROM payments WHERE order_id = %s", order_id)
        intent = provider.v1.payment_intents.retrieve(payment["intent_id"])
        captures = rows(payment_db, "SELECT 1 FROM payment_history WHERE order_id = %s"
                        " AND action = 'capture'", order_id)
        if status == "DELIVERED":
            assert payment["status"] in ("CAPTURED", "REFUNDED"), order_id
            assert len(captures) == 1 and payment["amount_captured"] == payment["amount_minor"]
            assert intent.status == "succeeded", order_id
        else:
            assert payment["status"] == "VOIDED" and captures == [], order_id
            assert intent.status == "canceled", order_id  # no authorization left on the card
    restocked = rows(inventory_db, "SELECT sku, delta FROM stock_adjustments WHERE reason = 'returned'")
    assert restocked == [{"sku": "SKU-3", "delta": 1}]
    expired = rows(order_db, "SELECT cancel_reason FROM orders WHERE id = %s", unpaid)
    assert expired == [{"cancel_reason": "payment_expired"}]
