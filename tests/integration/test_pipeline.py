"""The whole flow through real Postgres and SQS: order -> shipment -> DELIVERED."""

from __future__ import annotations

import pytest

from tests.support.payments import authorize
from tests.support.wait import wait_until

# Every test here starts service processes: deselect with -m "not slow".
pytestmark = pytest.mark.slow

ORDER = {
    "items": [{"sku": "SKU-1", "quantity": 2}],
    "customer_email": "ada@example.com",
    "shipping_address": {"name": "Ada", "line1": "1 Main St", "city": "Berlin",
                         "postal_code": "10115", "country": "DE"},
}


def test_order_flows_to_delivered(order_client, order_db, processes, auth_header):
    processes.worker("order")
    processes.worker("delivery", DELIVERY_SIMULATOR_ENABLED="true", DELIVERY_SIMULATOR_STEP_S="0.2")
    headers = auth_header()
    created = order_client.post("/v1/orders", json=ORDER, headers=headers)
    assert created.status_code == 201, created.get_json()
    order_id = created.get_json()["id"]
    authorize(order_db, created.get_json())

    def delivered():
        order = order_client.get(f"/v1/orders/{order_id}", headers=headers).get_json()
        return order if order["status"] == "DELIVERED" else None

    order = wait_until(delivered, timeout=60, message="order DELIVERED")
    events = [h["event"] for h in order["history"]]
    assert events == ["order.created", "payment.authorized", "delivery.shipment_created", "delivery.shipped",
                      "delivery.in_transit", "delivery.out_for_delivery", "delivery.delivered"]
    assert all(h["applied"] for h in order["history"])
    assert order["shipment"]["tracking_number"]


def test_cancel_before_shipping_cancels_shipment(order_client, delivery_client, processes,
                                                 auth_header, delivery_db, order_db):
    processes.worker("order")
    processes.worker("delivery")
    headers = auth_header()
    placed = order_client.post("/v1/orders", json=ORDER, headers=headers).get_json()
    authorize(order_db, placed)  # paid, so delivery is told to ship it
    order_id = placed["id"]
    cancelled = order_client.post(f"/v1/orders/{order_id}/cancel", json={"reason": "changed mind"},
                                  headers=headers)
    assert cancelled.status_code == 200
    assert cancelled.get_json()["status"] == "CANCELLED"

    def shipment_state():
        with delivery_db.transaction() as cur:
            cur.execute("SELECT status FROM shipments WHERE order_id = %s", (order_id,))
            row = cur.fetchone()
            cur.execute("SELECT 1 FROM cancelled_orders WHERE order_id = %s", (order_id,))
            tombstone = cur.fetchone()
        # Either the create came first (shipment CANCELLED) or the cancel did (tombstone).
        if row and row["status"] == "CANCELLED":
            return "cancelled"
        if tombstone and row is None:
            return "tombstone"
        return None

    wait_until(shipment_state, timeout=30, message="shipment cancelled or tombstoned")
