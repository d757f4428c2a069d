"""Order creation is rate limited per customer: 429 problem+json with Retry-After, nothing written."""

from __future__ import annotations

import pytest

from tests.support.asserts import assert_problem

ADDRESS = {"name": "Ada Lovelace", "line1": "1 Main St", "city": "Berlin", "postal_code": "10115",
           "country": "DE"}
BODY = {"items": [{"sku": "SKU-1", "quantity": 1}], "customer_email": "ada@example.com",
        "shipping_address": ADDRESS}


@pytest.fixture
def limited_orders(app_for):
    return app_for("order", ORDER_RATE_LIMIT_PER_CUSTOMER="3/minute").test_client()


def _count(order_db, customer):
    with order_db.transaction() as cur:
        cur.execute("SELECT count(*) AS n FROM orders WHERE customer_id = %s", (customer,))
        return cur.fetchone()["n"]


def test_order_creation_is_limited_per_customer(limited_orders, auth_header, order_db):
    ada, bob = auth_header("ada"), auth_header("bob")
    for _ in range(3):
        assert limited_orders.post("/v1/orders", json=BODY, headers=ada).status_code == 201
    refused = limited_orders.post("/v1/orders", json=BODY, headers=ada)
    assert_problem(refused, 429, "too-many-requests")
    assert int(refused.headers["Retry-After"]) >= 1
    assert _count(order_db, "ada") == 3  # the refused one wrote nothing
    # Another customer has a quota of their own; reading is not limited.
    assert limited_orders.post("/v1/orders", json=BODY, headers=bob).status_code == 201
    assert limited_orders.get("/v1/orders", headers=ada).status_code == 200
    # No token is still a 401, not a 429.
    assert limited_orders.post("/v1/orders", json=BODY).status_code == 401
