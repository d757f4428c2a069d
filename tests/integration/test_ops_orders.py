"""Order look-up for operators (services/ops/orders.py): the order service's order and
history, the delivery service's shipments, the notification service's notifications, each
asked over real HTTP with the operator's token; what cannot be reached is named.
"""

from __future__ import annotations

import uuid

import pytest

from services.notification.consumers import OrderEventHandler
from shared.messaging.envelope import Envelope
from tests.integration.test_order_api import ORDER
from tests.support.asserts import assert_problem
from tests.support.servers import AppServer

ADMIN = ("admin", "orders:read")


@pytest.fixture
def peers(app_for, catalog):
    servers = {name: AppServer(app_for(name), name) for name in ("order", "delivery", "notification")}
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture
def ops(app_for, peers):
    app = app_for("ops", ORDER_URL=peers["order"].url, DELIVERY_URL=peers["delivery"].url,
                  NOTIFICATION_URL=peers["notification"].url, OPS_PEER_ATTEMPTS="1",
                  OPS_PEER_TIMEOUT_S="2")
    return app.test_client()


def placed_order(peers, auth_header) -> dict:
    client = peers["order"].app.test_client()
    response = client.post("/v1/orders", json=ORDER, headers=auth_header("alice"))
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()


def test_an_order_with_its_history_and_notifications(ops, peers, auth_header, notification_db):
    order = placed_order(peers, auth_header)
    settings = peers["notification"].app.extensions["notification_settings"]
    with notification_db.transaction() as cur:
        OrderEventHandler(settings)(cur, Envelope(
            event_type="order.status_changed", aggregate_id=order["id"], producer="order-service",
            data={"order_id": order["id"], "customer_id": "alice", "status": "SHIPPED"}))
    response = ops.get(f"/v1/ops/orders/{order['id']}", headers=auth_header("op", ADMIN))
    assert response.status_code == 200, response.get_data(as_text=True)
    view = response.get_json()
    assert view["order"]["id"] == order["id"] and view["order"]["history"]
    assert view["shipments"] == []  # no delivery worker ran: no shipment yet
    assert [n["data"]["status"] for n in view["notifications"]] == ["SHIPPED"]
    assert view["unavailable"] == []


def test_a_service_that_cannot_be_reached_is_named(ops, peers, auth_header):
    order = placed_order(peers, auth_header)
    peers["notification"].stop()
    view = ops.get(f"/v1/ops/orders/{order['id']}", headers=auth_header("op", ADMIN)).get_json()
    assert view["order"]["id"] == order["id"]
    assert [u["service"] for u in view["unavailable"]] == ["notification"]


def test_search_filters_by_status_and_passes_refusals_on(ops, peers, auth_header):
    order = placed_order(peers, auth_header)
    admin = auth_header("op", ADMIN)
    found = ops.get(f"/v1/ops/orders?status={order['status']}", headers=admin).get_json()
    assert [o["id"] for o in found["items"]] == [order["id"]]
    assert ops.get("/v1/ops/orders?status=CANCELLED", headers=admin).get_json()["items"] == []
    assert_problem(ops.get("/v1/ops/orders?status=EXPLODED", headers=admin), 422,
                   "validation-error", ("status",))


@pytest.mark.parametrize("path, status, type_, field", [
    ("/v1/ops/orders?limit=0", 422, "validation-error", "limit"),
    ("/v1/ops/orders/not-a-uuid", 404, None, None),
])
def test_bad_queries_are_problems(ops, auth_header, path, status, type_, field):
    response = ops.get(path, headers=auth_header("op", ADMIN))
    if type_:
        assert_problem(response, status, type_, (field,))
    else:
        assert response.status_code == status


def test_unknown_order_is_404_and_customers_are_refused(ops, auth_header):
    assert_problem(ops.get(f"/v1/ops/orders/{uuid.uuid4()}", headers=auth_header("op", ADMIN)),
                   404, "not-found")
    assert_problem(ops.get("/v1/ops/orders", headers=auth_header("alice", ("orders:read",))),
                   403, "insufficient-scope")
    assert_problem(ops.get("/v1/ops/orders"), 401, "unauthorized")
