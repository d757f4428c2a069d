"""What every producer actually emits matches its event type's contract (shared/contracts.py).

Every producer is driven through its real code path against a real Postgres,
each consumer fed the events the producers really wrote (no hand-built
data): orders placed, paid (over the payment API, against localstripe) and
cancelled over the order API; each ``order.*`` event applied by delivery,
inventory, payment and notification; each ``payment.*`` event by the order
service and inventory; every carrier status posted over the delivery API;
each ``delivery.*`` event applied by the order service; a refund over the
payment API; webhook attempts requested by a new event, by a failed attempt's
retry and by the redeliver API. Then every outbox row of order_svc,
delivery_svc, payment_svc and notification_svc is checked against the registry, and the
event types written must be exactly the registry's: a producer emitting a
type without a contract, or a contract no producer emits, fails here.
"""

from __future__ import annotations

from collections import Counter

import pytest
import requests

from services.delivery.handlers import on_order_cancelled as delivery_on_cancelled
from services.delivery.handlers import on_order_paid as delivery_on_paid
from services.inventory.reservations import on_order_cancelled as inventory_on_cancelled
from services.inventory.reservations import on_order_created as inventory_on_created
from services.inventory.restock import on_payment_refunded
from services.notification.consumers import (
    DELIVERY_REQUESTED,
    OrderEventHandler,
    WebhookDeliverer,
)
from services.notification.ssrf import UrlPolicy
from services.notification.webhooks import EndpointBreakers, WebhookSender
from services.order.handlers import on_delivery_event, on_payment_event
from services.payment.app import gateway_for
from services.payment.handlers import order_event_handler
from services.payment.settings import PaymentSettings
from shared.contracts import EVENT_DATA_SCHEMAS, event_data, load_data
from shared.messaging.envelope import Envelope
from shared.resilience import BreakerRegistry
from tests.support.payments import pay
from tests.support.receiver import Receiver
from tests.support.tokens import TEST_SIGNER

ORDER = {
    "items": [{"sku": "SKU-1", "quantity": 1}, {"sku": "SKU-2", "quantity": 2}],
    "customer_email": "ada@example.com",
    "shipping_address": {"name": "Ada Lovelace", "line1": "1 Main St", "line2": "Flat 2",
                         "city": "Berlin", "postal_code": "10115", "country": "DE"},
}
CARRIER_SCOPES = ("shipments:write",)
ADMIN_WEBHOOKS = ("webhooks:manage", "admin")
# Carrier reports per shipment: one delivered through every step, one lost.
DELIVERED_PATH = ("SHIPPED", "IN_TRANSIT", "OUT_FOR_DELIVERY", "DELIVERED")
FAILED_PATH = ("SHIPPED", "FAILED")


@pytest.fixture
def failing_receiver():
    """A webhook endpoint that answers 500: every first attempt schedules a retry."""
    receiver = Receiver(script=lambda _n: 500).start()
    yield receiver
    receiver.stop()


def outbox(db) -> list[dict]:
    with db.transaction() as cur:
        cur.execute("SELECT id, queue, event_type, body FROM outbox ORDER BY id")
        return cur.fetchall()


def new_events(db, seen: set[str]) -> list[Envelope]:
    """Events in ``db``'s outbox not handed on yet, oldest first, once per event id."""
    events = []
    for row in outbox(db):
        envelope = Envelope.from_json(row["body"])
        if envelope.event_id not in seen:
            seen.add(envelope.event_id)
            events.append(envelope)
    return events


def apply(db, handler, event: Envelope) -> None:
    with db.transaction() as cur:
        handler(cur, event)


def place(order_client, headers) -> str:
    response = order_client.post("/v1/orders", json=ORDER, headers=headers)
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()["id"]


def shipment_of(delivery_client, reader, order_id: str) -> dict:
    page = delivery_client.get(f"/v1/shipments?order_id={order_id}", headers=reader).get_json()
    [shipment] = page["items"]
    return shipment


def carrier_header(carrier: str) -> dict:
    """A token of ``carrier``'s own client: a carrier reaches only its own shipments."""
    claims = TEST_SIGNER.claims(f"carrier-{carrier.lower()}", CARRIER_SCOPES, 600, carrier=carrier)
    return {"Authorization": f"Bearer {TEST_SIGNER.sign(claims)}"}


def test_every_producer_emits_data_its_contract_accepts_and_every_contract_is_emitted(
        order_client, order_db, delivery_client, delivery_db, inventory_db, notification_client,
        notification_app, notification_db, payment_db, payment_url, stripe_api, make_token,
        auth_header, failing_receiver):
    customer, operator = auth_header(), auth_header("ops-2", ("admin",))
    admin = auth_header("ops-1", ADMIN_WEBHOOKS)
    subscribed = notification_client.post("/v1/webhooks", headers=admin, json={
        "name": "every event", "topic": "*", "delivery_url": failing_receiver.url})
    assert subscribed.status_code == 201, subscribed.get_data(as_text=True)
    settings = notification_app.extensions["notification_settings"]
    notify = OrderEventHandler(settings)
    handed_on: dict[str, set[str]] = {"order": set(), "delivery": set(), "payment": set()}
    payment_consumer = order_event_handler(gateway_for(
        PaymentSettings.from_env({"STRIPE_API_BASE": stripe_api}, app_env="test"),
        BreakerRegistry({})))

    def hand_on_order_events() -> None:
        """What the order service's queues carry, to each of their consumers."""
        for event in new_events(order_db, handed_on["order"]):
            if event.event_type == "order.created":
                apply(inventory_db, inventory_on_created, event)
            elif event.event_type == "order.paid":
                apply(delivery_db, delivery_on_paid, event)
                continue  # not on the customer's stream
            elif event.event_type == "order.cancelled":
                apply(inventory_db, inventory_on_cancelled, event)
                apply(delivery_db, delivery_on_cancelled, event)
            if event.event_type in ("order.cancelled", "order.status_changed"):
                apply(payment_db, payment_consumer, event)
            apply(notification_db, notify, event)

    def hand_on_payment_events() -> None:
        for event in new_events(payment_db, handed_on["payment"]):
            if event.event_type == "payment.authorized":
                apply(order_db, on_payment_event, event)
            else:
                apply(inventory_db, on_payment_refunded, event)

    def hand_on_delivery_events() -> None:
        for event in new_events(delivery_db, handed_on["delivery"]):
            apply(order_db, on_delivery_event, event)

    # order.created -> (paid) payment.authorized -> order.paid -> delivery.shipment_created ->
    # order.status_changed (with the carrier)
    delivered, failed, cancelled = (place(order_client, customer) for _ in range(3))
    for order_id in (delivered, failed, cancelled):
        assert pay(payment_url, order_id, make_token()).status_code == 200
    hand_on_order_events()
    hand_on_payment_events()
    hand_on_order_events()
    hand_on_delivery_events()

    # Every carrier status: delivery.shipped ... delivery.delivered / delivery.failed.
    for order_id, path in ((delivered, DELIVERED_PATH), (failed, FAILED_PATH)):
        shipment = shipment_of(delivery_client, operator, order_id)
        shipment_id, carrier = shipment["id"], carrier_header(shipment["carrier"])
        for status in path:
            posted = delivery_client.post(f"/v1/shipments/{shipment_id}/events", headers=carrier,
                                          json={"status": status, "location": "Berlin hub"})
            assert posted.status_code == 200, posted.get_data(as_text=True)

    # order.cancelled + order.status_changed -> delivery.shipment_cancelled.
    response = order_client.post(f"/v1/orders/{cancelled}/cancel", headers=customer,
                                 json={"reason": "changed my mind"})
    assert response.status_code == 200, response.get_data(as_text=True)
    hand_on_order_events()
    hand_on_delivery_events()
    hand_on_order_events()  # the status changes the delivery events caused (SHIPPED captures)

    # payment.refunded: one unit of the delivered order comes back.
    refunded = requests.post(f"{payment_url}/v1/payments/{delivered}/refunds",
                             json={"lines": [{"sku": "SKU-2", "quantity": 1}]}, timeout=30,
                             headers={"Authorization": f"Bearer {make_token('ops-1', ('admin',))}"})
    assert refunded.status_code == 201, refunded.text
    hand_on_payment_events()

    # webhook.delivery_requested: first attempts (above), a retry after a 500, a redelivery.
    with notification_db.transaction() as cur:
        cur.execute("SELECT body FROM outbox WHERE event_type = %s ORDER BY id LIMIT 1",
                    (DELIVERY_REQUESTED,))
        first_attempt = Envelope.from_json(cur.fetchone()["body"])
    sender = WebhookSender(UrlPolicy(("127.0.0.1",)), EndpointBreakers({}), 1.0)
    apply(notification_db, WebhookDeliverer(settings, sender), first_attempt)
    assert failing_receiver.count() == 1
    sub_id = subscribed.get_json()["id"]
    deliveries = notification_client.get(f"/v1/webhooks/{sub_id}/deliveries",
                                         headers=admin).get_json()["items"]
    redeliver = notification_client.post(
        f"/v1/webhooks/{sub_id}/deliveries/{deliveries[-1]['id']}/redeliver", headers=admin)
    assert redeliver.status_code == 202, redeliver.get_data(as_text=True)

    rows = [(service, row) for service, db in (("order", order_db), ("delivery", delivery_db),
                                               ("payment", payment_db),
                                               ("notification", notification_db))
            for row in outbox(db)]
    emitted: Counter[str] = Counter()
    for service, row in rows:
        envelope = Envelope.from_json(row["body"])
        assert envelope.event_type in EVENT_DATA_SCHEMAS, (
            f"{service} emits {envelope.event_type}, which has no contract")
        assert event_data(envelope.event_type, envelope.data) == envelope.data, row
        load_data(envelope.event_type, envelope.data)  # every required field, every type
        emitted[envelope.event_type] += 1
    assert set(emitted) == set(EVENT_DATA_SCHEMAS), (
        f"contracts no test path emitted: {sorted(set(EVENT_DATA_SCHEMAS) - set(emitted))}")

    # The paths above really were taken (each would have emitted its events otherwise).
    requested = [Envelope.from_json(row["body"]) for service, row in rows
                 if row["event_type"] == DELIVERY_REQUESTED]
    assert any(e.causation_id == first_attempt.event_id for e in requested)  # the retry
    assert any(e.causation_id is None for e in requested)  # the redelivery (an HTTP request)
    status_changes = [Envelope.from_json(row["body"]).data for _, row in rows
                      if row["event_type"] == "order.status_changed"]
    assert any(data.get("carrier") for data in status_changes)  # caused by a delivery event
    assert any(data["cause"] == "order.cancelled" for data in status_changes)
