"""A registered customer can manage webhooks of their own, through the storefront.

The documented path, end to end: the demo storefront (``services/auth/demo.py``)
registers a customer and logs them in with the password grant, asking for
``webhooks:manage``; the token the auth service signs is accepted by the
notification API, the customer creates a subscription, and the notification
worker delivers to it the events of that customer's orders only, never
another customer's.
"""

from __future__ import annotations

import base64
import json
import uuid

import pytest

from services.auth import demo
from shared.messaging.envelope import Envelope
from tests.support.receiver import Receiver
from tests.support.tokens import JwksServer
from tests.support.wait import wait_until

PASSWORD = "a long enough password 1"
WORKER_ENV = {"NOTIFICATION_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
              "NOTIFICATION_WEBHOOK_RETRY_BASE_S": "1", "NOTIFICATION_WEBHOOK_RETRY_CAP_S": "1",
              "NOTIFICATION_WEBHOOK_TIMEOUT_S": "1"}


@pytest.fixture
def storefront(auth_app, tmp_path):
    """The demo storefront's client id and secret, as ``make run`` creates them."""
    ext = auth_app.extensions
    credentials = tmp_path / "credentials.json"
    demo.ensure_demo_identities(ext["db"], ext["passwords"], ext["auth_config"], credentials,
                                "development", "http://127.0.0.1:9")
    return demo.STOREFRONT, json.loads(credentials.read_text())["clients"][demo.STOREFRONT]


@pytest.fixture
def notification_with_auth(app_for, auth_client):
    jwks = JwksServer(lambda: auth_client.get("/.well-known/jwks.json").json).start()
    yield app_for("notification", AUTH_JWKS_URL=jwks.url).test_client()
    jwks.stop()


def _register_and_login(auth_client, storefront, username: str) -> tuple[str, dict]:
    client_id, secret = storefront
    basic = {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}
    registered = auth_client.post("/v1/customers", json={"username": username, "password": PASSWORD},
                                  headers=basic)
    assert registered.status_code == 201, registered.get_data(as_text=True)
    login = auth_client.post("/oauth/token", auth=(client_id, secret), data={
        "grant_type": "password", "username": username, "password": PASSWORD,
        "scope": "orders:read webhooks:manage"})
    assert login.status_code == 200, login.get_data(as_text=True)
    assert "webhooks:manage" in login.json["scope"].split()
    return registered.json["id"], {"Authorization": f"Bearer {login.json['access_token']}"}


def _created(order_id: str, customer_id: str) -> Envelope:
    return Envelope(event_type="order.created", aggregate_id=order_id, producer="order-service",
                    data={"order_id": order_id, "customer_id": customer_id,
                          "customer_email": "someone@example.com", "currency": "EUR",
                          "total": "1.00", "lines": [{"sku": "SKU-1", "quantity": 1,
                                                      "unit_price": "1.00", "line_total": "1.00"}],
                          "shipping_address": {"name": "A", "line1": "1 St", "city": "Berlin",
                                               "postal_code": "10115", "country": "DE"},
                          "created_at": "2026-12-03T07:00:00+00:00"})


def _drained(sqs, queue_url: str) -> bool:
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages",
                                            "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return (attributes["ApproximateNumberOfMessages"],
            attributes["ApproximateNumberOfMessagesNotVisible"]) == ("0", "0")


def _deliveries(client, headers: dict, sub_id: str) -> list[dict]:
    response = client.get(f"/v1/webhooks/{sub_id}/deliveries", headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.json["items"]


def test_a_registered_customer_subscribes_and_gets_only_their_own_orders(
        auth_client, storefront, notification_with_auth, processes, sqs, queues):
    ada_id, ada = _register_and_login(auth_client, storefront, "ada@example.com")
    bob_id, bob = _register_and_login(auth_client, storefront, "bob@example.com")
    ada_hook, bob_hook = Receiver().start(), Receiver().start()
    try:
        subs = []
        for headers, hook in ((ada, ada_hook), (bob, bob_hook)):
            response = notification_with_auth.post("/v1/webhooks", headers=headers, json={
                "name": "my orders", "topic": "order.created", "delivery_url": hook.url})
            assert response.status_code == 201, response.get_data(as_text=True)
            subs.append(response.json["id"])
        listed = notification_with_auth.get("/v1/webhooks", headers=ada).json
        assert [s["delivery_url"] for s in listed["items"]] == [ada_hook.url]
        processes.worker("notification", **WORKER_ENV)

        ada_order, bob_order = str(uuid.uuid4()), str(uuid.uuid4())
        for event in (_created(ada_order, ada_id), _created(bob_order, bob_id)):
            sqs.send_message(QueueUrl=queues["order-status.fifo"], MessageBody=event.to_json(),
                             MessageGroupId=event.aggregate_id, MessageDeduplicationId=event.event_id,
                             MessageAttributes={"event_type": {"DataType": "String",
                                                               "StringValue": event.event_type}})
        # Both events consumed (every delivery they route to exists), then each delivery made.
        wait_until(lambda: _drained(sqs, queues["order-status.fifo"]), 30, message="events consumed")
        owners = ((ada, subs[0]), (bob, subs[1]))

        def all_delivered() -> bool:
            return all(d["status"] == "delivered" for headers, sub in owners
                       for d in _deliveries(notification_with_auth, headers, sub))

        wait_until(all_delivered, 30, message="the deliveries made")
        assert [len(_deliveries(notification_with_auth, h, s)) for h, s in owners] == [1, 1]
        assert [json.loads(r.body)["data"]["order_id"] for r in ada_hook.requests] == [ada_order]
        assert [json.loads(r.body)["data"]["order_id"] for r in bob_hook.requests] == [bob_order]
    finally:
        ada_hook.stop()
        bob_hook.stop()
