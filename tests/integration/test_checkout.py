"""Checkout: POST /v1/orders reserves stock in the inventory service before it commits.

The order API (Flask test client) calls a real inventory API over HTTP (the
session's server, see tests/support/inventory.py) backed by the same Postgres;
assertions read both schemas: orders, reservations, stock.
"""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from psycopg2 import sql

from services.order.idempotency import fingerprint as request_fingerprint
from services.order.schemas import CreateOrderSchema
from tests.support.asserts import assert_problem
from tests.support.inventory import set_stock
from tests.support.wait import wait_until

ADDRESS = {"name": "Ada Lovelace", "line1": "1 Main St", "city": "Berlin", "postal_code": "10115",
           "country": "DE"}
ORDER_TABLES = ("orders", "order_lines", "order_status_history", "outbox")
CONCURRENT_ORDERS = 50
LAST_UNITS = 10
FAST_FAIL_S = 0.05


def order(*items: tuple[str, int]) -> dict:
    return {"items": [{"sku": sku, "quantity": quantity} for sku, quantity in items],
            "customer_email": "ada@example.com", "shipping_address": ADDRESS}


def counts(order_db, inventory_db) -> dict[str, int]:
    """Rows of every order table, reservations, and the stock of every product."""
    result = {}
    with order_db.transaction() as cur:
        for table in ORDER_TABLES:
            cur.execute(sql.SQL("SELECT count(*) AS n FROM {}").format(sql.Identifier(table)))
            result[table] = cur.fetchone()["n"]
    with inventory_db.transaction() as cur:
        cur.execute("SELECT count(*) AS n FROM reservations")
        result["reservations"] = cur.fetchone()["n"]
        cur.execute("SELECT sku, on_hand, reserved FROM products ORDER BY sku")
        result.update({f"stock {r['sku']}": (r["on_hand"], r["reserved"]) for r in cur.fetchall()})
    return result


def stock(inventory_db, sku: str) -> tuple[int, int]:
    with inventory_db.transaction() as cur:
        cur.execute("SELECT on_hand, reserved FROM products WHERE sku = %s", (sku,))
        row = cur.fetchone()
    return row["on_hand"], row["reserved"]


def reservation(inventory_db, order_id) -> dict | None:
    with inventory_db.transaction() as cur:
        cur.execute("SELECT status, total, currency FROM reservations WHERE order_id = %s",
                    (order_id,))
        return cur.fetchone()


# --- the happy path ----------------------------------------------------------------------------
def test_prices_currency_and_total_come_from_the_catalog_and_the_stock_is_held(
        order_client, order_db, inventory_db, auth_header):
    response = order_client.post("/v1/orders", json=order(("SKU-1", 2), ("COFFEE-1KG", 1)),
                                 headers=auth_header())
    assert response.status_code == 201, response.get_data(as_text=True)
    body = response.get_json()
    assert (body["currency"], body["total"]) == ("EUR", "34.48")  # 2 x 9.99 + 14.50
    assert [(i["sku"], i["quantity"], i["unit_price"], i["line_total"]) for i in body["items"]] == [
        ("SKU-1", 2, "9.99", "19.98"), ("COFFEE-1KG", 1, "14.50", "14.50")]
    held = reservation(inventory_db, body["id"])
    assert (held["status"], str(held["total"]), held["currency"]) == ("HELD", "34.48", "EUR")
    assert stock(inventory_db, "SKU-1")[1] == 2
    assert stock(inventory_db, "COFFEE-1KG")[1] == 1


# --- refusals: nothing ordered, nothing held ----------------------------------------------------
def test_insufficient_stock_is_409_listing_each_short_line_and_orders_nothing(
        order_client, order_db, inventory_db, auth_header, catalog):
    set_stock(catalog, "SKU-2", 2)
    set_stock(catalog, "SKU-3", 0)
    before = counts(order_db, inventory_db)
    response = order_client.post(
        "/v1/orders", json=order(("SKU-1", 1), ("SKU-2", 3), ("SKU-3", 1)),
        headers={**auth_header(), "Idempotency-Key": "short-1"})
    body = assert_problem(response, 409, "insufficient-stock")
    assert body["lines"] == [{"sku": "SKU-2", "requested": 3, "available": 2},
                             {"sku": "SKU-3", "requested": 1, "available": 0}]
    assert body["errors"] == [{"field": "items.1.quantity", "message": "Only 2 available."},
                              {"field": "items.2.quantity", "message": "Only 0 available."}]
    assert counts(order_db, inventory_db) == before


def test_unknown_sku_is_422_on_the_item_and_orders_nothing(order_client, order_db, inventory_db,
                                                           auth_header):
    before = counts(order_db, inventory_db)
    response = order_client.post("/v1/orders", json=order(("SKU-1", 1), ("NO-SUCH-SKU", 1)),
                                 headers=auth_header())
    body = assert_problem(response, 422, "unknown-sku")
    assert [e["field"] for e in body["errors"]] == ["items.1.sku"]
    assert counts(order_db, inventory_db) == before


# --- idempotency: the order id is fixed before the reservation ----------------------------------
def _key_row(order_db, key: str) -> dict:
    with order_db.transaction() as cur:
        cur.execute("SELECT state, order_id FROM idempotency_keys WHERE key = %s", (key,))
        return cur.fetchone()


def test_a_retry_after_a_refusal_reuses_the_order_id(order_client, order_db, inventory_db,
                                                     auth_header, catalog):
    set_stock(catalog, "SKU-2", 1)
    headers = {**auth_header(), "Idempotency-Key": "retry-after-409"}
    body = order(("SKU-2", 2))
    assert_problem(order_client.post("/v1/orders", json=body, headers=headers), 409, "insufficient-stock")
    first = _key_row(order_db, "retry-after-409")
    assert first["state"] == "released"
    set_stock(catalog, "SKU-2", 5)
    created = order_client.post("/v1/orders", json=body, headers=headers)
    assert created.status_code == 201
    assert created.get_json()["id"] == str(first["order_id"])
    assert _key_row(order_db, "retry-after-409")["state"] == "completed"
    assert reservation(inventory_db, first["order_id"])["status"] == "HELD"


def test_a_crashed_attempt_is_retried_with_its_own_reservation(order_client, order_db,
                                                               inventory_db, inventory_url,
                                                               auth_header, make_token):
    """A request that reserved, then died before committing: its retry must not hold twice."""
    import requests

    body = order(("SKU-3", 4))
    order_id = uuid.uuid4()
    service_token = make_token("order-service", ("inventory:reserve",))
    reserved = requests.put(f"{inventory_url}/v1/reservations/{order_id}", timeout=5,
                            json={"lines": [{"sku": "SKU-3", "quantity": 4}]},
                            headers={"Authorization": f"Bearer {service_token}"})
    assert reserved.status_code == 201
    with order_db.transaction() as cur:  # the crashed request's claim, abandoned 61 s ago
        cur.execute(
            "INSERT INTO idempotency_keys (customer_id, key, request_hash, state, created_at,"
            " expires_at, order_id) VALUES ('customer-1', 'crashed', %s, 'in_progress',"
            " now() - interval '61 seconds', now() + interval '1 hour', %s)",
            (request_fingerprint(CreateOrderSchema().load(body)), order_id))
    response = order_client.post("/v1/orders", json=body,
                                 headers={**auth_header(), "Idempotency-Key": "crashed"})
    assert response.status_code == 201, response.get_data(as_text=True)
    assert response.get_json()["id"] == str(order_id)
    assert stock(inventory_db, "SKU-3")[1] == 4  # held once, not twice


# --- inventory unusable: 503 with Retry-After, fast once the breaker is open ----------------------
def test_unreachable_inventory_is_503_then_fails_fast_with_the_breaker_open(
        app_for, order_db, inventory_db, auth_header, port):
    app = app_for("order", INVENTORY_URL=f"http://127.0.0.1:{port}",  # nothing listens there
                  BREAKER_INVENTORY_FAIL_MAX="2", BREAKER_INVENTORY_RESET_TIMEOUT_S="30",
                  ORDER_INVENTORY_ATTEMPTS="2")
    client = app.test_client()
    before = counts(order_db, inventory_db)
    first = client.post("/v1/orders", json=order(("SKU-1", 1)), headers=auth_header())
    assert_problem(first, 503, "inventory-unavailable")
    assert int(first.headers["Retry-After"]) >= 1
    ready = client.get("/health/ready")
    assert ready.status_code == 200  # an open breaker is reported, not a reason to leave the LB
    assert ready.get_json()["breakers"]["inventory"]["state"] == "open"
    for _ in range(5):
        started = time.perf_counter()
        response = client.post("/v1/orders", json=order(("SKU-1", 1)), headers=auth_header())
        elapsed = time.perf_counter() - started
        assert_problem(response, 503, "inventory-unavailable")
        assert elapsed < FAST_FAIL_S, f"{elapsed * 1000:.1f} ms with the breaker open"
        assert 1 <= int(response.headers["Retry-After"]) <= 30
    assert counts(order_db, inventory_db) == before


# --- the concurrency test --------------------------------------------------------------
@pytest.mark.slow
def test_50_concurrent_orders_for_the_last_10_units(order_app, order_db, inventory_db, processes,
                                                     auth_header, catalog):
    set_stock(catalog, "SKU-3", LAST_UNITS)
    start = threading.Barrier(CONCURRENT_ORDERS)
    headers = auth_header()

    def buy(_):
        client = order_app.test_client()
        start.wait()
        response = client.post("/v1/orders", json=order(("SKU-3", 1)), headers=headers)
        return response.status_code, response.get_json()

    with ThreadPoolExecutor(CONCURRENT_ORDERS) as pool:
        results = list(pool.map(buy, range(CONCURRENT_ORDERS)))
    statuses = [status for status, _ in results]
    assert statuses.count(201) == LAST_UNITS, statuses
    assert statuses.count(409) == CONCURRENT_ORDERS - LAST_UNITS
    assert all(body["type"] == "/problems/insufficient-stock" for status, body in results
               if status == 409)
    assert stock(inventory_db, "SKU-3") == (LAST_UNITS, LAST_UNITS)  # all held, none confirmed yet

    processes.worker("order")       # relays order.created to inventory-events.fifo
    processes.worker("inventory")   # confirms the reservations
    placed = {body["id"] for status, body in results if status == 201}

    def confirmed():
        with inventory_db.transaction() as cur:
            cur.execute("SELECT order_id::text FROM reservations WHERE status = 'CONFIRMED'")
            return {r["order_id"] for r in cur.fetchall()} == placed

    wait_until(confirmed, timeout=60, message="every placed order's reservation confirmed")
    assert stock(inventory_db, "SKU-3") == (0, 0)  # sold out: nothing on hand, nothing held
    with order_db.transaction() as cur:
        cur.execute("SELECT count(*) AS n FROM orders")
        assert cur.fetchone()["n"] == LAST_UNITS
    with inventory_db.transaction() as cur:
        cur.execute("SELECT count(*) AS n FROM products WHERE on_hand < 0 OR reserved < 0"
                    " OR on_hand - reserved < 0")
        assert cur.fetchone()["n"] == 0
