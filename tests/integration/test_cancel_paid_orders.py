"""Cancelling a paid order goes through the delivery service first, so it cannot cross the
carrier's pick-up (docs/architecture.md, "Cancelling a paid order").

The order API under test is a Flask test client; the delivery API it asks is the
session's real HTTP server (``delivery_url``), on the same PostgreSQL. The events
the workers would carry (``order.paid`` to delivery, ``delivery.shipment_cancelled``
back) are taken from the outboxes and handed to the consumers' handlers.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from devstack.tokens import mint_dev_token
from services.delivery import handlers as delivery
from services.delivery import repository as delivery_repo
from services.delivery.domain import ShipmentStatus
from services.order.handlers import on_delivery_event, on_payment_event
from shared.messaging.envelope import Envelope
from tests.support.asserts import assert_problem, nothing_written
from tests.support.tokens import TEST_SIGNER

ORDER = {"items": [{"sku": "SKU-1", "quantity": 2}], "customer_email": "ada@example.com",
         "shipping_address": {"name": "Ada Lovelace", "line1": "1 Main St", "city": "Berlin",
                              "postal_code": "10115", "country": "DE"}}
ORDER_TABLES = ("orders", "order_lines", "order_status_history", "outbox", "idempotency_keys")
DELIVERY_TABLES = ("shipments", "shipment_events", "cancelled_orders", "outbox")
CANCEL_SCOPES = ("shipments:cancel",)


def outbox_events(db, event_type: str) -> list[Envelope]:
    """The events of ``event_type`` in ``db``'s outbox, once each (an event has a row per queue)."""
    with db.transaction() as cur:
        cur.execute("SELECT body FROM outbox WHERE event_type = %s ORDER BY id", (event_type,))
        events = [Envelope.from_json(row["body"]) for row in cur.fetchall()]
    return list({event.event_id: event for event in events}.values())


def paid_order(order_client, order_db, headers) -> str:
    """A placed order, paid the way the order worker applies ``payment.authorized``."""
    response = order_client.post("/v1/orders", json=ORDER, headers=headers)
    assert response.status_code == 201, response.get_data(as_text=True)
    order_id = response.get_json()["id"]
    with order_db.transaction() as cur:
        on_payment_event(cur, Envelope(
            event_type="payment.authorized", aggregate_id=order_id, producer="payment-service",
            data={"order_id": order_id, "payment_intent_id": "pi_test", "currency": "EUR",
                  "amount_minor": 100, "authorized_at": datetime.now(UTC).isoformat()}))
    return order_id


def ship_order_paid(order_db, delivery_db, order_id: str) -> dict:
    """Deliver the order's ``order.paid`` to delivery, as its worker would; the shipment row."""
    (paid,) = [e for e in outbox_events(order_db, "order.paid") if e.aggregate_id == order_id]
    with delivery_db.transaction() as cur:
        delivery.on_order_paid(cur, paid)
        return delivery_repo.lock_shipment_by_order(cur, order_id)


def pick_up(delivery_db, shipment: dict) -> None:
    """The carrier takes the parcel (the simulator's and carriers' path)."""
    with delivery_db.transaction() as cur:
        delivery.record_status(cur, delivery_repo.lock_shipment(cur, shipment["id"]),
                               ShipmentStatus.SHIPPED, "carrier:test")


def order_status(order_db, order_id: str) -> str:
    with order_db.transaction() as cur:
        cur.execute("SELECT status FROM orders WHERE id = %s", (order_id,))
        return cur.fetchone()["status"]


def shipment_status(delivery_db, order_id: str) -> str | None:
    with delivery_db.transaction() as cur:
        cur.execute("SELECT status FROM shipments WHERE order_id = %s", (order_id,))
        row = cur.fetchone()
    return row and row["status"]


def reservation_status(inventory_db, order_id: str) -> str:
    with inventory_db.transaction() as cur:
        cur.execute("SELECT status FROM reservations WHERE order_id = %s", (order_id,))
        return cur.fetchone()["status"]


@pytest.fixture
def customer(auth_header):
    return auth_header()


@pytest.fixture
def service(auth_header):
    return auth_header("order-service", CANCEL_SCOPES)


# --- the order API ------------------------------------------------------------------------------
def test_a_cancel_after_the_pick_up_is_409_and_changes_nothing(
        order_client, order_db, delivery_db, inventory_db, customer):
    order_id = paid_order(order_client, order_db, customer)
    pick_up(delivery_db, ship_order_paid(order_db, delivery_db, order_id))
    held = reservation_status(inventory_db, order_id)
    with nothing_written(order_db, ORDER_TABLES), nothing_written(delivery_db, DELIVERY_TABLES):
        response = order_client.post(f"/v1/orders/{order_id}/cancel", json={}, headers=customer)
        body = assert_problem(response, 409, "order-not-cancellable")
    assert (body["status_now"], body["shipment_status"]) == ("SHIPPED", "SHIPPED")
    assert order_status(order_db, order_id) == "PENDING_SHIPMENT"  # delivery's event moves it on
    # No order.cancelled: the stock stays reserved and the payment is neither voided nor refunded.
    assert outbox_events(order_db, "order.cancelled") == []
    assert reservation_status(inventory_db, order_id) == held != "RELEASED"
    assert shipment_status(delivery_db, order_id) == "SHIPPED"


def test_a_paid_order_with_a_created_shipment_is_cancelled_with_its_shipment(
        order_client, order_db, delivery_db, customer):
    order_id = paid_order(order_client, order_db, customer)
    ship_order_paid(order_db, delivery_db, order_id)
    response = order_client.post(f"/v1/orders/{order_id}/cancel", json={"reason": "too late"},
                                 headers=customer)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["status"] == "CANCELLED"
    assert shipment_status(delivery_db, order_id) == "CANCELLED"
    assert len(outbox_events(delivery_db, "delivery.shipment_cancelled")) == 1
    assert len(outbox_events(order_db, "order.cancelled")) == 1
    # The usual echo: delivery's event after the order's own cancel is only recorded.
    (stopped,) = outbox_events(delivery_db, "delivery.shipment_cancelled")
    with order_db.transaction() as cur:
        on_delivery_event(cur, stopped)
    again = order_client.post(f"/v1/orders/{order_id}/cancel", json={}, headers=customer)
    assert again.status_code == 200 and again.get_json()["status"] == "CANCELLED"
    assert len(outbox_events(order_db, "order.cancelled")) == 1
    # The order.cancelled consumer in delivery finds the shipment cancelled already.
    (cancelled,) = outbox_events(order_db, "order.cancelled")
    with delivery_db.transaction() as cur:
        delivery.on_order_cancelled(cur, cancelled)
    assert len(outbox_events(delivery_db, "delivery.shipment_cancelled")) == 1


def test_a_paid_order_without_a_shipment_yet_gets_none(order_client, order_db, delivery_db,
                                                       customer):
    order_id = paid_order(order_client, order_db, customer)
    response = order_client.post(f"/v1/orders/{order_id}/cancel", json={}, headers=customer)
    assert response.status_code == 200 and response.get_json()["status"] == "CANCELLED"
    assert ship_order_paid(order_db, delivery_db, order_id) is None  # the tombstone holds


def test_an_unpaid_order_is_cancelled_without_asking_delivery(order_client, order_db, delivery_db,
                                                              customer):
    response = order_client.post("/v1/orders", json=ORDER, headers=customer)
    order_id = response.get_json()["id"]
    with nothing_written(delivery_db, DELIVERY_TABLES):
        cancelled = order_client.post(f"/v1/orders/{order_id}/cancel", json={}, headers=customer)
    assert cancelled.get_json()["status"] == "CANCELLED"


def test_with_delivery_down_a_paid_cancel_is_503_and_changes_nothing(
        app_for, order_db, delivery_db, customer, port):
    client = app_for("order", DELIVERY_URL=f"http://127.0.0.1:{port}",
                     ORDER_DELIVERY_ATTEMPTS="1").test_client()
    order_id = paid_order(client, order_db, customer)
    with nothing_written(order_db, ORDER_TABLES), nothing_written(delivery_db, DELIVERY_TABLES):
        response = client.post(f"/v1/orders/{order_id}/cancel", json={}, headers=customer)
        assert_problem(response, 503, "delivery-unavailable")
    assert int(response.headers["Retry-After"]) >= 1
    assert order_status(order_db, order_id) == "PENDING_SHIPMENT"


def test_a_cancel_lost_after_delivery_said_yes_converges(order_client, order_db, delivery_db,
                                                         customer, delivery_url):
    """The order service crashed between delivery's answer and its own commit."""
    import requests

    order_id = paid_order(order_client, order_db, customer)
    ship_order_paid(order_db, delivery_db, order_id)
    token = mint_dev_token(TEST_SIGNER, "order-service", list(CANCEL_SCOPES))
    answer = requests.put(f"{delivery_url}/v1/shipment-cancellations/{order_id}", json={},
                          headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert answer.status_code == 200 and answer.json()["status"] == "CANCELLED"
    assert order_status(order_db, order_id) == "PENDING_SHIPMENT"  # its commit never happened
    # Without a retry, delivery's event finishes the cancel.
    (stopped,) = outbox_events(delivery_db, "delivery.shipment_cancelled")
    with order_db.transaction() as cur:
        on_delivery_event(cur, stopped)
    assert order_status(order_db, order_id) == "CANCELLED"
    assert len(outbox_events(order_db, "order.cancelled")) == 1  # stock, payment, customer
    with order_db.transaction() as cur:
        cur.execute("SELECT event, previous_status, source_event_id::text AS source"
                    " FROM order_status_history WHERE order_id = %s AND status = 'CANCELLED'",
                    (order_id,))
        assert cur.fetchall() == [{"event": "delivery.shipment_cancelled",
                                   "previous_status": "PENDING_SHIPMENT",
                                   "source": stopped.event_id}]
    # And the customer's retry is answered 200 (delivery says yes again, the order is cancelled).
    retry = order_client.post(f"/v1/orders/{order_id}/cancel", json={}, headers=customer)
    assert retry.status_code == 200 and retry.get_json()["status"] == "CANCELLED"


def test_a_cancel_lost_before_there_was_a_shipment_converges_too(
        order_client, order_db, delivery_db, customer, delivery_url):
    """The same crash when delivery had no shipment yet: it answered with a tombstone.

    The order's ``order.paid`` then meets the tombstone; delivery says so with a
    ``delivery.shipment_cancelled`` (no shipment id), and the order finishes its cancel.
    """
    import requests

    order_id = paid_order(order_client, order_db, customer)
    token = mint_dev_token(TEST_SIGNER, "order-service", list(CANCEL_SCOPES))
    answer = requests.put(f"{delivery_url}/v1/shipment-cancellations/{order_id}", json={},
                          headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert answer.status_code == 200 and answer.json()["shipment_id"] is None
    assert ship_order_paid(order_db, delivery_db, order_id) is None  # the tombstone holds
    (stopped,) = outbox_events(delivery_db, "delivery.shipment_cancelled")
    assert stopped.data["shipment_id"] is None and stopped.data["status"] == "CANCELLED"
    with order_db.transaction() as cur:
        on_delivery_event(cur, stopped)
    assert order_status(order_db, order_id) == "CANCELLED"
    assert len(outbox_events(order_db, "order.cancelled")) == 1
    # Delivered again (a redelivery, or the event of an order that did cancel): nothing more.
    with order_db.transaction() as cur:
        on_delivery_event(cur, stopped)
    assert len(outbox_events(order_db, "order.cancelled")) == 1


def test_a_retried_cancel_after_a_lost_commit_converges(order_client, order_db, delivery_db,
                                                        customer, delivery_url):
    import requests

    order_id = paid_order(order_client, order_db, customer)
    ship_order_paid(order_db, delivery_db, order_id)
    token = mint_dev_token(TEST_SIGNER, "order-service", list(CANCEL_SCOPES))
    requests.put(f"{delivery_url}/v1/shipment-cancellations/{order_id}", json={},
                 headers={"Authorization": f"Bearer {token}"}, timeout=10)
    retry = order_client.post(f"/v1/orders/{order_id}/cancel", json={}, headers=customer)
    assert retry.status_code == 200 and retry.get_json()["status"] == "CANCELLED"
    assert len(outbox_events(delivery_db, "delivery.shipment_cancelled")) == 1


# --- the delivery API ---------------------------------------------------------------------------
def test_the_endpoint_answers_the_same_again_and_409_after_the_pick_up(
        delivery_client, delivery_db, service):
    order_id = uuid.uuid4()
    path = f"/v1/shipment-cancellations/{order_id}"
    first = delivery_client.put(path, json={"reason": "changed my mind"}, headers=service)
    assert first.status_code == 200
    assert first.get_json() == {"order_id": str(order_id), "status": "CANCELLED",
                                "shipment_id": None}
    assert delivery_client.put(path, headers=service).get_json() == first.get_json()
    with delivery_db.transaction() as cur:
        assert delivery_repo.is_cancelled(cur, order_id)

    other = uuid.uuid4()
    with delivery_db.transaction() as cur:
        delivery_repo.insert_shipment(cur, uuid.uuid4(), other, "customer-1", "DHL", "DHL1",
                                      {"city": "Berlin"})
        shipment = delivery_repo.lock_shipment_by_order(cur, other)
    pick_up(delivery_db, shipment)
    with nothing_written(delivery_db, DELIVERY_TABLES):
        refused = delivery_client.put(f"/v1/shipment-cancellations/{other}", json={},
                                      headers=service)
        assert assert_problem(refused, 409, "shipment-underway")["status_now"] == "SHIPPED"


@pytest.mark.parametrize(("body", "status", "type_", "fields"), [
    ({"reason": "x" * 501}, 422, "validation-error", ("reason",)),
    ({"reason": 7}, 422, "validation-error", ("reason",)),
    ({"unknown": 1}, 422, "validation-error", ("unknown",)),
    ([1, 2], 422, "validation-error", ()),
])
def test_bad_input_is_a_problem_and_writes_nothing(delivery_client, delivery_db, service, body,
                                                   status, type_, fields):
    with nothing_written(delivery_db, DELIVERY_TABLES):
        response = delivery_client.put(f"/v1/shipment-cancellations/{uuid.uuid4()}", json=body,
                                       headers=service)
        assert_problem(response, status, type_, fields)
        assert_problem(delivery_client.put("/v1/shipment-cancellations/not-a-uuid", json={},
                                           headers=service), 404, "not-found")
        malformed = delivery_client.put(f"/v1/shipment-cancellations/{uuid.uuid4()}",
                                        data="{", headers={**service,
                                                           "Content-Type": "application/json"})
        assert malformed.status_code == 400 and malformed.mimetype == "application/problem+json"


def test_only_the_order_services_scope_may_stop_a_shipment(delivery_client, delivery_db,
                                                           auth_header, make_token):
    path = f"/v1/shipment-cancellations/{uuid.uuid4()}"
    carrier = {"Authorization": "Bearer " + TEST_SIGNER.sign(TEST_SIGNER.claims(
        "carrier-1", ["shipments:read", "shipments:write"], carrier="DHL"))}
    with nothing_written(delivery_db, DELIVERY_TABLES):
        assert_problem(delivery_client.put(path, json={}), 401, "unauthorized")
        for headers in (auth_header(), carrier, auth_header("ops", ("admin",))):
            assert_problem(delivery_client.put(path, json={}, headers=headers), 403,
                           "insufficient-scope")
