"""The order service's reports against real Postgres: totals, sales by period, customer stats.

Orders are placed through the API (and one in USD, back-dated, written with the
repository) so the buckets, currencies and cancellations are the real rows'.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace

import pytest

from services.order import repository as repo
from services.order.domain import OrderStatus
from tests.support.asserts import assert_problem

ADDRESS = {"name": "Ada Lovelace", "line1": "1 Main St", "city": "Berlin",
           "postal_code": "10115", "country": "DE"}
ADMIN = ("admin",)
CUSTOMER_SCOPES = ("orders:read", "orders:write")


def _place(client, auth_header, customer: str, quantity: int) -> dict:
    response = client.post("/v1/orders", headers=auth_header(customer, CUSTOMER_SCOPES), json={
        "items": [{"sku": "SKU-1", "quantity": quantity}], "customer_email": "a@example.com",
        "shipping_address": ADDRESS})
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.json


class _Line:
    def __init__(self, sku, quantity, unit_price):
        self.sku, self.quantity, self.unit_price = sku, quantity, unit_price
        self.total = unit_price * quantity


@pytest.fixture
def sales_world(order_client, order_db, auth_header):
    """customer-a: two EUR orders (one then cancelled) today, one USD order 40 days ago;
    customer-b: one EUR order today."""
    kept = _place(order_client, auth_header, "customer-a", 2)
    cancelled = _place(order_client, auth_header, "customer-a", 5)
    response = order_client.post(f"/v1/orders/{cancelled['id']}/cancel",
                                 headers=auth_header("customer-a", CUSTOMER_SCOPES), json={})
    assert response.status_code == 200 and response.json["status"] == "CANCELLED"
    other = _place(order_client, auth_header, "customer-b", 1)
    unpaid = _place(order_client, auth_header, "customer-b", 1)  # stays PENDING_PAYMENT: no sale
    with order_db.transaction() as cur:
        # What payment.authorized does to the two paid orders (tests/integration/test_payments.py
        # drives the real payment flow).
        cur.execute("UPDATE orders SET status = 'PENDING_SHIPMENT' WHERE id IN (%s, %s)",
                    (kept["id"], other["id"]))
    old_id = uuid.uuid4()
    long_ago = datetime.now(UTC) - timedelta(days=40)
    with order_db.transaction() as cur:
        repo.insert_order(cur, old_id, "customer-a", "a@example.com", "USD", Decimal("30.00"),
                          ADDRESS, [_Line("SKU-9", 3, Decimal("10.00"))],
                          SimpleNamespace(intent_id="pi_old", client_secret="pi_old_secret",
                                          amount_minor=3000))
        cur.execute("UPDATE orders SET created_at = %s, status = 'DELIVERED' WHERE id = %s",
                    (long_ago, old_id))
    return {"kept": kept, "cancelled": cancelled, "other": other, "unpaid": unpaid,
            "old_id": str(old_id),
            "long_ago": long_ago}


def test_totals_count_every_status_of_the_domain(order_client, auth_header, sales_world):
    response = order_client.get("/v1/reports/orders/totals", headers=auth_header("op", ADMIN))
    assert response.status_code == 200, response.get_data(as_text=True)
    by_status = response.json["by_status"]
    assert set(by_status) == {str(s) for s in OrderStatus}  # zeros included
    assert by_status["PENDING_SHIPMENT"] == 2
    assert by_status["PENDING_PAYMENT"] == 1
    assert by_status["DELIVERED"] == 1
    assert by_status["CANCELLED"] == 1
    assert response.json["total"] == 5


def test_sales_leave_cancelled_and_unpaid_orders_out(order_client, auth_header, sales_world):
    response = order_client.get("/v1/reports/sales?period=day", headers=auth_header("op", ADMIN))
    assert response.status_code == 200, response.get_data(as_text=True)
    buckets = response.json["buckets"]
    # Default window: the last 30 days, so the 40-day-old USD order is outside it.
    assert [(b["currency"], b["orders"], b["items"]) for b in buckets] == [("EUR", 2, 3)]
    expected = Decimal(sales_world["kept"]["total"]) + Decimal(sales_world["other"]["total"])
    assert Decimal(buckets[0]["revenue"]) == expected


def test_sales_by_month_over_a_window_split_currencies(order_client, auth_header, sales_world):
    start = (sales_world["long_ago"] - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S")
    end = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    response = order_client.get("/v1/reports/sales", query_string={
        "period": "month", "from": start, "to": end}, headers=auth_header("op", ADMIN))
    assert response.status_code == 200, response.get_data(as_text=True)
    usd = [b for b in response.json["buckets"] if b["currency"] == "USD"]
    assert len(usd) == 1 and usd[0]["orders"] == 1 and usd[0]["items"] == 3
    assert usd[0]["revenue"] == "30.00"
    assert usd[0]["period_start"].startswith(sales_world["long_ago"].strftime("%Y-%m-01"))
    assert sum(b["orders"] for b in response.json["buckets"] if b["currency"] == "EUR") == 2


@pytest.mark.parametrize("query, field", [
    ({"period": "year"}, "period"),
    ({"from": "yesterday"}, "from"),
    ({"from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "from"),
    ({"from": "2000-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "from"),
    ({"perod": "day"}, "perod"),  # a misspelt parameter is refused, not ignored
])
def test_bad_sales_queries_are_problems(order_client, auth_header, query, field):
    response = order_client.get("/v1/reports/sales", query_string=query,
                                headers=auth_header("op", ADMIN))
    assert_problem(response, 422, "validation-error", [field])


def test_customer_stats_for_the_customer_and_for_admin(order_client, auth_header, sales_world):
    for headers in (auth_header("customer-a", ("orders:read",)), auth_header("op", ADMIN)):
        response = order_client.get("/v1/customers/customer-a/stats", headers=headers)
        assert response.status_code == 200, response.get_data(as_text=True)
        body = response.json
        assert body["orders"] == 3 and body["cancelled_or_unsold"] == 1
        value = {v["currency"]: (v["orders"], v["total"]) for v in body["lifetime_value"]}
        assert value == {"EUR": (1, sales_world["kept"]["total"]), "USD": (1, "30.00")}
        assert body["last_order_id"] == sales_world["cancelled"]["id"]


def test_customer_stats_of_someone_else_are_not_found(order_client, auth_header, sales_world):
    response = order_client.get("/v1/customers/customer-a/stats",
                                headers=auth_header("customer-b", ("orders:read",)))
    assert_problem(response, 404, "not-found")


def test_customer_without_orders_has_empty_stats(order_client, auth_header):
    response = order_client.get("/v1/customers/nobody/stats", headers=auth_header("op", ADMIN))
    assert response.status_code == 200
    assert response.json == {"customer_id": "nobody", "orders": 0, "cancelled_or_unsold": 0,
                             "lifetime_value": [], "last_order_at": None, "last_order_id": None}


def test_reports_refuse_customers(order_client, auth_header):
    for path in ("/v1/reports/orders/totals", "/v1/reports/sales"):
        response = order_client.get(path, headers=auth_header("customer-a", CUSTOMER_SCOPES))
        assert_problem(response, 403, "insufficient-scope")
