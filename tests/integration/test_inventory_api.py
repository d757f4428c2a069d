"""The inventory HTTP API against a real Postgres (Flask test client, no worker).

Bad input on every endpoint must be refused with an ``application/problem+json``
document with a stable ``type`` and must write NOTHING: those tests count the
rows of every inventory table before and after. Reservations are checked for
all-or-nothing, idempotency by order id, and no overselling under concurrency
(many real database transactions at once, from threads).
"""

from __future__ import annotations

import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from tests.support import asserts
from tests.support.asserts import assert_problem

INVENTORY_TABLES = ("products", "stock_adjustments", "reservations", "reservation_lines")
ADMIN = ("admin",)
CUSTOMER = ("orders:read", "orders:write")
SERVICE = ("inventory:reserve",)
TTL_S = 600
CONCURRENT_BUYERS = 50
LAST_UNITS = 10
PAGE_SIZE = 10
PRODUCTS_FOR_PAGING = 25

COFFEE = {"sku": "COFFEE-1KG", "name": "Espresso beans, 1 kg", "price": "14.50",
          "currency": "EUR", "on_hand": 20}
MUG = {"sku": "MUG-1", "name": "Mug", "price": "9.00", "currency": "EUR", "on_hand": 5}
KETTLE = {"sku": "KETTLE-1", "name": "Kettle", "price": "49.00", "currency": "EUR", "on_hand": 0,
          "allow_backorder": True}
EMPTY = {"sku": "FILTER-1", "name": "Filters", "price": "3.20", "currency": "EUR", "on_hand": 0}
USD_ITEM = {"sku": "USD-1", "name": "Priced in dollars", "price": "1.00", "currency": "USD",
            "on_hand": 5}


# --- helpers ---------------------------------------------------------------------------
def row_counts(db) -> dict[str, int]:
    """Rows in every inventory table."""
    return asserts.row_counts(db, INVENTORY_TABLES)


def stock(db, sku: str) -> dict:
    with db.transaction() as cur:
        cur.execute("SELECT on_hand, reserved, version FROM products WHERE sku = %s", (sku,))
        return cur.fetchone()


def nothing_written(db):
    """The block leaves every inventory table (and every product's stock) as it found it."""
    def products():
        with db.transaction() as cur:
            cur.execute("SELECT sku, name, price, on_hand, reserved, version, deleted_at"
                        " FROM products ORDER BY sku")
            return cur.fetchall()

    return asserts.nothing_written(db, INVENTORY_TABLES, products)


@pytest.fixture
def admin(auth_header):
    return auth_header("ops", ADMIN)


@pytest.fixture
def service(auth_header):
    return auth_header("order-service", SERVICE)


@pytest.fixture
def catalog(inventory_client, admin):
    """COFFEE (20), MUG (5), KETTLE (backorder), EMPTY (0), USD_ITEM, created through the API."""
    for product in (COFFEE, MUG, KETTLE, EMPTY, USD_ITEM):
        response = inventory_client.post("/v1/products", json=product, headers=admin)
        assert response.status_code == 201, response.get_data(as_text=True)


def reserve(client, headers, order_id=None, lines=None):
    order_id = order_id or uuid.uuid4()
    return client.put(f"/v1/reservations/{order_id}",
                      json={"lines": lines or [{"sku": "COFFEE-1KG", "quantity": 2}]},
                      headers=headers)


# --- products ----------------------------------------------------------------------------
def test_create_and_get_product(inventory_client, inventory_db, admin, auth_header):
    response = inventory_client.post("/v1/products", json=COFFEE, headers=admin)
    assert response.status_code == 201
    assert response.headers["Location"] == "/v1/products/COFFEE-1KG"
    body = response.get_json()
    assert {k: body[k] for k in ("sku", "name", "price", "currency", "on_hand", "reserved",
                                 "available", "stock_status", "allow_backorder")} == {
        "sku": "COFFEE-1KG", "name": "Espresso beans, 1 kg", "price": "14.50", "currency": "EUR",
        "on_hand": 20, "reserved": 0, "available": 20, "stock_status": "instock",
        "allow_backorder": False}
    fetched = inventory_client.get("/v1/products/COFFEE-1KG", headers=auth_header("c", CUSTOMER))
    assert fetched.status_code == 200
    assert fetched.get_json() == body
    assert row_counts(inventory_db)["products"] == 1


def test_stock_status_is_derived(inventory_client, catalog, admin):
    statuses = {p["sku"]: p["stock_status"] for p in
                inventory_client.get("/v1/products?limit=100", headers=admin).get_json()["items"]}
    assert statuses == {"COFFEE-1KG": "instock", "MUG-1": "instock", "KETTLE-1": "onbackorder",
                        "FILTER-1": "outofstock", "USD-1": "instock"}


def test_list_filters(inventory_client, catalog, admin):
    def skus(query: str) -> set[str]:
        response = inventory_client.get(f"/v1/products?{query}", headers=admin)
        assert response.status_code == 200, response.get_data(as_text=True)
        return {p["sku"] for p in response.get_json()["items"]}

    assert skus("stock_status=outofstock") == {"FILTER-1"}
    assert skus("stock_status=onbackorder") == {"KETTLE-1"}
    assert skus("currency=USD") == {"USD-1"}
    assert skus("q=mug") == {"MUG-1"}
    assert skus("q=espresso") == {"COFFEE-1KG"}
    assert skus("q=%25") == set()  # a literal %, not a wildcard
    assert skus("q=coffee&stock_status=outofstock") == set()


def test_cursor_pagination_walks_every_product_once(inventory_client, inventory_db, admin):
    for n in range(PRODUCTS_FOR_PAGING):
        product = {"sku": f"P-{n:03}", "name": f"Product {n}", "price": "1.00", "currency": "EUR"}
        assert inventory_client.post("/v1/products", json=product, headers=admin).status_code == 201
    with inventory_db.transaction() as cur:  # ties on created_at: the id breaks them
        cur.execute("UPDATE products SET created_at = %s WHERE sku BETWEEN 'P-005' AND 'P-016'",
                    (datetime(2026, 1, 1, tzinfo=UTC),))
        cur.execute("SELECT sku FROM products ORDER BY created_at DESC, id DESC")
        expected = [r["sku"] for r in cur.fetchall()]
    walked, cursor, pages = [], None, 0
    while True:
        url = f"/v1/products?limit={PAGE_SIZE}" + (f"&cursor={cursor}" if cursor else "")
        page = inventory_client.get(url, headers=admin).get_json()
        walked += [p["sku"] for p in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None or pages > 10:
            break
    assert pages == 3
    assert walked == expected


def test_update_product(inventory_client, catalog, admin):
    response = inventory_client.put("/v1/products/MUG-1", headers=admin, json={
        "name": "Big mug", "price": "11.00", "currency": "EUR", "allow_backorder": True})
    assert response.status_code == 200
    body = response.get_json()
    assert (body["name"], body["price"], body["allow_backorder"], body["on_hand"]) == (
        "Big mug", "11.00", True, 5)


def test_delete_product_then_create_it_again(inventory_client, inventory_db, catalog, admin):
    assert inventory_client.delete("/v1/products/MUG-1", headers=admin).status_code == 204
    assert_problem(inventory_client.get("/v1/products/MUG-1", headers=admin), 404, "not-found")
    assert "MUG-1" not in {p["sku"] for p in inventory_client.get(
        "/v1/products?limit=100", headers=admin).get_json()["items"]}
    assert_problem(inventory_client.delete("/v1/products/MUG-1", headers=admin), 404, "not-found")
    again = inventory_client.post("/v1/products", json={**MUG, "on_hand": 2}, headers=admin)
    assert again.status_code == 201
    assert (again.get_json()["on_hand"], again.get_json()["reserved"]) == (2, 0)


def test_product_with_held_stock_cannot_be_deleted(inventory_client, inventory_db, catalog, admin,
                                                   service):
    assert reserve(inventory_client, service).status_code == 201
    with nothing_written(inventory_db):
        body = assert_problem(inventory_client.delete("/v1/products/COFFEE-1KG", headers=admin),
                              409, "product-in-use")
    assert body["reserved"] == 2


def test_turning_backorders_off_with_negative_availability_is_409(inventory_client, inventory_db,
                                                                  catalog, admin, service):
    assert reserve(inventory_client, service,
                   lines=[{"sku": "KETTLE-1", "quantity": 3}]).status_code == 201
    with nothing_written(inventory_db):
        response = inventory_client.put("/v1/products/KETTLE-1", headers=admin, json={
            "name": "Kettle", "price": "49.00", "currency": "EUR", "allow_backorder": False})
        assert_problem(response, 409, "stock-would-go-negative", ("allow_backorder",))


# --- stock adjustments ---------------------------------------------------------------------
def test_stock_adjustments_change_on_hand_and_keep_an_audit_row(inventory_client, inventory_db,
                                                                catalog, admin):
    response = inventory_client.post("/v1/products/MUG-1/stock-adjustments", headers=admin,
                                     json={"delta": 7, "reason": "received", "note": "PO-17"})
    assert response.status_code == 201
    body = response.get_json()
    assert (body["delta"], body["on_hand_after"], body["actor"], body["note"]) == (7, 12, "ops",
                                                                                  "PO-17")
    assert body["product"]["on_hand"] == 12
    down = inventory_client.post("/v1/products/MUG-1/stock-adjustments", headers=admin,
                                 json={"delta": -12, "reason": "damaged"})
    assert down.status_code == 201
    assert down.get_json()["product"]["stock_status"] == "outofstock"
    with inventory_db.transaction() as cur:
        cur.execute("SELECT delta, reason, on_hand_after FROM stock_adjustments ORDER BY id")
        assert cur.fetchall() == [{"delta": 7, "reason": "received", "on_hand_after": 12},
                                  {"delta": -12, "reason": "damaged", "on_hand_after": 0}]


def test_adjustment_may_not_take_stock_below_zero_or_below_what_is_held(
        inventory_client, inventory_db, catalog, admin, service):
    with nothing_written(inventory_db):
        response = inventory_client.post("/v1/products/MUG-1/stock-adjustments", headers=admin,
                                         json={"delta": -6, "reason": "lost"})
        body = assert_problem(response, 409, "stock-would-go-negative", ("delta",))
        assert (body["on_hand"], body["reserved"]) == (5, 0)
    assert reserve(inventory_client, service, lines=[{"sku": "MUG-1", "quantity": 4}]).status_code == 201
    with nothing_written(inventory_db):  # 5 on hand, 4 held: only 1 may go
        assert_problem(inventory_client.post("/v1/products/MUG-1/stock-adjustments", headers=admin,
                                             json={"delta": -2, "reason": "lost"}),
                       409, "stock-would-go-negative")
    assert inventory_client.post("/v1/products/MUG-1/stock-adjustments", headers=admin,
                                 json={"delta": -1, "reason": "lost"}).status_code == 201
    assert stock(inventory_db, "MUG-1")["on_hand"] == 4


def test_backorder_product_may_go_below_zero(inventory_client, catalog, admin):
    response = inventory_client.post("/v1/products/KETTLE-1/stock-adjustments", headers=admin,
                                     json={"delta": -2, "reason": "correction"})
    assert response.status_code == 201
    assert (response.get_json()["product"]["on_hand"],
            response.get_json()["product"]["stock_status"]) == (-2, "onbackorder")


# --- availability ----------------------------------------------------------------------------
def test_availability_reports_each_line_and_holds_nothing(inventory_client, inventory_db, catalog,
                                                          auth_header):
    with nothing_written(inventory_db):
        response = inventory_client.post("/v1/availability", headers=auth_header("c", CUSTOMER),
                                         json={"lines": [{"sku": "MUG-1", "quantity": 6},
                                                         {"sku": "COFFEE-1KG", "quantity": 2},
                                                         {"sku": "KETTLE-1", "quantity": 9}]})
    assert response.status_code == 200
    body = response.get_json()
    assert body["all_available"] is False
    assert [(x["sku"], x["requested"], x["available"], x["sufficient"], x["unit_price"],
             x["stock_status"]) for x in body["lines"]] == [
        ("MUG-1", 6, 5, False, "9.00", "instock"),
        ("COFFEE-1KG", 2, 20, True, "14.50", "instock"),
        ("KETTLE-1", 9, 0, True, "49.00", "onbackorder")]


# --- reservations ------------------------------------------------------------------------------
def test_reservation_holds_stock_with_catalog_prices_and_a_ttl(inventory_client, inventory_db,
                                                              catalog, service):
    order_id = uuid.uuid4()
    before = datetime.now(UTC)
    response = reserve(inventory_client, service, order_id, [{"sku": "COFFEE-1KG", "quantity": 2},
                                                             {"sku": "MUG-1", "quantity": 1}])
    assert response.status_code == 201
    assert response.headers["Location"] == f"/v1/reservations/{order_id}"
    body = response.get_json()
    assert (body["order_id"], body["status"], body["currency"], body["total"]) == (
        str(order_id), "HELD", "EUR", "38.00")
    assert [(x["sku"], x["quantity"], x["unit_price"], x["line_total"]) for x in body["lines"]] == [
        ("COFFEE-1KG", 2, "14.50", "29.00"), ("MUG-1", 1, "9.00", "9.00")]
    expires = datetime.fromisoformat(body["expires_at"])
    assert before + timedelta(seconds=TTL_S - 5) < expires < before + timedelta(seconds=TTL_S + 5)
    assert stock(inventory_db, "COFFEE-1KG")["on_hand"] == 20
    assert stock(inventory_db, "COFFEE-1KG")["reserved"] == 2
    assert stock(inventory_db, "MUG-1")["reserved"] == 1
    fetched = inventory_client.get(f"/v1/reservations/{order_id}", headers=service)
    assert fetched.status_code == 200
    assert fetched.get_json() == body


def test_same_lines_again_replay_the_reservation(inventory_client, inventory_db, catalog, service):
    order_id = uuid.uuid4()
    lines = [{"sku": "COFFEE-1KG", "quantity": 2}, {"sku": "MUG-1", "quantity": 1}]
    first = reserve(inventory_client, service, order_id, lines)
    with nothing_written(inventory_db):
        again = reserve(inventory_client, service, order_id, list(reversed(lines)))
    assert again.status_code == 200
    assert again.get_json() == first.get_json()


def test_different_lines_for_the_same_order_are_409(inventory_client, inventory_db, catalog,
                                                    service):
    order_id = uuid.uuid4()
    reserve(inventory_client, service, order_id)
    with nothing_written(inventory_db):
        response = reserve(inventory_client, service, order_id, [{"sku": "COFFEE-1KG", "quantity": 3}])
        body = assert_problem(response, 409, "reservation-conflict")
    assert body["status_now"] == "HELD"


def test_insufficient_stock_is_409_listing_each_short_line_and_holds_nothing(
        inventory_client, inventory_db, catalog, service):
    with nothing_written(inventory_db):
        response = reserve(inventory_client, service, lines=[
            {"sku": "COFFEE-1KG", "quantity": 2}, {"sku": "MUG-1", "quantity": 6},
            {"sku": "FILTER-1", "quantity": 1}, {"sku": "KETTLE-1", "quantity": 4}])
        body = assert_problem(response, 409, "insufficient-stock")
    assert body["lines"] == [{"sku": "MUG-1", "requested": 6, "available": 5},
                             {"sku": "FILTER-1", "requested": 1, "available": 0}]


def test_backorder_lines_can_be_reserved_beyond_stock(inventory_client, inventory_db, catalog,
                                                      service):
    assert reserve(inventory_client, service,
                   lines=[{"sku": "KETTLE-1", "quantity": 4}]).status_code == 201
    assert stock(inventory_db, "KETTLE-1")["reserved"] == 4


def test_concurrent_reservations_for_the_last_units_never_oversell(inventory_app, inventory_db,
                                                                   catalog, make_token):
    headers = {"Authorization": f"Bearer {make_token('order-service', SERVICE)}"}
    with inventory_db.transaction() as cur:
        cur.execute("UPDATE products SET on_hand = %s WHERE sku = 'MUG-1'", (LAST_UNITS,))
    start = threading.Barrier(CONCURRENT_BUYERS)

    def buy(_):
        client = inventory_app.test_client()
        start.wait()
        return reserve(client, headers, lines=[{"sku": "MUG-1", "quantity": 1}]).status_code

    with ThreadPoolExecutor(CONCURRENT_BUYERS) as pool:
        statuses = list(pool.map(buy, range(CONCURRENT_BUYERS)))
    assert statuses.count(201) == LAST_UNITS
    assert statuses.count(409) == CONCURRENT_BUYERS - LAST_UNITS
    assert stock(inventory_db, "MUG-1")["on_hand"] == LAST_UNITS
    assert stock(inventory_db, "MUG-1")["reserved"] == LAST_UNITS
    with inventory_db.transaction() as cur:
        cur.execute("SELECT count(*) AS n, sum(quantity) AS units FROM reservation_lines"
                    " WHERE sku = 'MUG-1'")
        assert cur.fetchone() == {"n": LAST_UNITS, "units": LAST_UNITS}


def test_concurrent_multi_line_reservations_in_opposite_order_do_not_deadlock(
        inventory_app, inventory_db, catalog, make_token):
    headers = {"Authorization": f"Bearer {make_token('order-service', SERVICE)}"}
    forward = [{"sku": "COFFEE-1KG", "quantity": 1}, {"sku": "MUG-1", "quantity": 1}]
    start = threading.Barrier(20)

    def buy(n):
        client = inventory_app.test_client()
        start.wait()
        return reserve(client, headers, lines=forward if n % 2 else forward[::-1]).status_code

    with ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(buy, range(20)))
    # MUG-1 has 5: five orders get both lines, the rest get neither (all-or-nothing).
    assert sorted(statuses) == [201] * 5 + [409] * 15
    assert stock(inventory_db, "MUG-1")["reserved"] == 5
    assert stock(inventory_db, "COFFEE-1KG")["reserved"] == 5


def test_concurrent_identical_requests_hold_stock_once(inventory_app, inventory_db, catalog,
                                                       make_token):
    headers = {"Authorization": f"Bearer {make_token('order-service', SERVICE)}"}
    order_id = uuid.uuid4()
    start = threading.Barrier(10)

    def send(_):
        client = inventory_app.test_client()
        start.wait()
        response = reserve(client, headers, order_id)
        return response.status_code, response.get_json()["order_id"]

    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(send, range(10)))
    assert sorted(status for status, _ in results) == [200] * 9 + [201]
    assert {oid for _, oid in results} == {str(order_id)}
    assert stock(inventory_db, "COFFEE-1KG")["reserved"] == 2


# --- auth ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("method", "path", "body"), [
    ("get", "/v1/products", None),
    ("get", "/v1/products/COFFEE-1KG", None),
    ("post", "/v1/products", COFFEE),
    ("put", "/v1/products/COFFEE-1KG", {"name": "x", "price": "1", "currency": "EUR",
                                        "allow_backorder": False}),
    ("delete", "/v1/products/COFFEE-1KG", None),
    ("post", "/v1/products/COFFEE-1KG/stock-adjustments", {"delta": 1, "reason": "received"}),
    ("post", "/v1/availability", {"lines": [{"sku": "COFFEE-1KG", "quantity": 1}]}),
    ("put", f"/v1/reservations/{uuid.UUID(int=1)}", {"lines": [{"sku": "COFFEE-1KG", "quantity": 1}]}),
    ("get", f"/v1/reservations/{uuid.UUID(int=1)}", None),
])
def test_every_endpoint_needs_a_token(inventory_client, inventory_db, catalog, method, path, body):
    with nothing_written(inventory_db):
        response = getattr(inventory_client, method)(path, json=body)
        assert_problem(response, 401, "unauthorized")
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(("scopes", "method", "path", "body"), [
    (CUSTOMER, "post", "/v1/products", {**COFFEE, "sku": "NEW-1"}),
    (CUSTOMER, "put", "/v1/products/COFFEE-1KG", {"name": "x", "price": "1", "currency": "EUR",
                                                  "allow_backorder": False}),
    (CUSTOMER, "delete", "/v1/products/COFFEE-1KG", None),
    (CUSTOMER, "post", "/v1/products/COFFEE-1KG/stock-adjustments",
     {"delta": 1, "reason": "received"}),
    (SERVICE, "post", "/v1/products/COFFEE-1KG/stock-adjustments",
     {"delta": 1, "reason": "received"}),
    (CUSTOMER, "put", f"/v1/reservations/{uuid.UUID(int=1)}",
     {"lines": [{"sku": "COFFEE-1KG", "quantity": 1}]}),
    (CUSTOMER, "get", f"/v1/reservations/{uuid.UUID(int=1)}", None),
    (("shipments:read",), "get", "/v1/products", None),
    (("shipments:read",), "post", "/v1/availability",
     {"lines": [{"sku": "COFFEE-1KG", "quantity": 1}]}),
])
def test_missing_scope_is_403(inventory_client, inventory_db, catalog, auth_header, scopes, method,
                              path, body):
    with nothing_written(inventory_db):
        response = getattr(inventory_client, method)(path, json=body, headers=auth_header("x", scopes))
        assert_problem(response, 403, "insufficient-scope")
        assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]


def test_admin_may_reserve_and_read_reservations(inventory_client, catalog, admin):
    order_id = uuid.uuid4()
    assert reserve(inventory_client, admin, order_id).status_code == 201
    assert inventory_client.get(f"/v1/reservations/{order_id}", headers=admin).status_code == 200


# --- bad input: problem+json, nothing written ---------------------------------------------------
LINE = {"sku": "COFFEE-1KG", "quantity": 1}
ADJUST = {"delta": 1, "reason": "received"}
UPDATE = {"name": "Coffee", "price": "14.50", "currency": "EUR", "allow_backorder": False}
RESERVATION_PATH = f"/v1/reservations/{uuid.UUID(int=7)}"

NEW = {**COFFEE, "sku": "NEW-1"}
VALIDATION = "validation-error"
BAD_BODIES = [
    # POST /v1/products
    ("post", "/v1/products", {**NEW, "price": "-1"}, 422, VALIDATION, ("price",)),
    ("post", "/v1/products", {**NEW, "price": "1.005"}, 422, VALIDATION, ("price",)),
    ("post", "/v1/products", {**NEW, "price": "NaN"}, 422, VALIDATION, ("price",)),
    ("post", "/v1/products", {**COFFEE, "sku": "bad sku!"}, 422, VALIDATION, ("sku",)),
    ("post", "/v1/products", {**NEW, "currency": "XXX"}, 422, VALIDATION,
     ("currency",)),
    ("post", "/v1/products", {**NEW, "on_hand": -1}, 422, VALIDATION, ("on_hand",)),
    ("post", "/v1/products", {**NEW, "on_hand": 1.5}, 422, VALIDATION, ("on_hand",)),
    ("post", "/v1/products", {**NEW, "allow_backorder": "yes"}, 422,
     VALIDATION, ("allow_backorder",)),
    ("post", "/v1/products", {**NEW, "reserved": 3}, 422, VALIDATION,
     ("reserved",)),
    ("post", "/v1/products", {"sku": "NEW-1"}, 422, VALIDATION, ("name", "price", "currency")),
    ("post", "/v1/products", {**NEW, "name": ""}, 422, VALIDATION, ("name",)),
    ("post", "/v1/products", [COFFEE], 422, VALIDATION, ()),
    ("post", "/v1/products", COFFEE, 409, "product-exists", ("sku",)),
    # PUT /v1/products/{sku}
    ("put", "/v1/products/COFFEE-1KG", {**UPDATE, "on_hand": 100}, 422, VALIDATION, ("on_hand",)),
    ("put", "/v1/products/COFFEE-1KG", {"name": "Coffee"}, 422, VALIDATION,
     ("price", "currency", "allow_backorder")),
    ("put", "/v1/products/COFFEE-1KG", {**UPDATE, "price": "1e3000"}, 422, VALIDATION, ("price",)),
    ("put", "/v1/products/NOPE", UPDATE, 404, "not-found", ()),
    # POST /v1/products/{sku}/stock-adjustments
    ("post", "/v1/products/COFFEE-1KG/stock-adjustments", {**ADJUST, "delta": 0}, 422,
     VALIDATION, ("delta",)),
    ("post", "/v1/products/COFFEE-1KG/stock-adjustments", {**ADJUST, "delta": "5"}, 422,
     VALIDATION, ("delta",)),
    ("post", "/v1/products/COFFEE-1KG/stock-adjustments", {**ADJUST, "delta": 2_000_000}, 422,
     VALIDATION, ("delta",)),
    ("post", "/v1/products/COFFEE-1KG/stock-adjustments", {**ADJUST, "reason": "because"}, 422,
     VALIDATION, ("reason",)),
    ("post", "/v1/products/COFFEE-1KG/stock-adjustments", {"delta": 1}, 422, VALIDATION,
     ("reason",)),
    ("post", "/v1/products/COFFEE-1KG/stock-adjustments", {**ADJUST, "on_hand": 1}, 422,
     VALIDATION, ("on_hand",)),
    ("post", "/v1/products/NOPE/stock-adjustments", ADJUST, 404, "not-found", ()),
    ("post", "/v1/products/COFFEE-1KG/stock-adjustments", {"delta": -21, "reason": "lost"}, 409,
     "stock-would-go-negative", ("delta",)),
    # POST /v1/availability
    ("post", "/v1/availability", {"lines": []}, 422, VALIDATION, ("lines",)),
    ("post", "/v1/availability", {}, 422, VALIDATION, ("lines",)),
    ("post", "/v1/availability", {"lines": [{**LINE, "quantity": 0}]}, 422, VALIDATION,
     ("lines.0.quantity",)),
    ("post", "/v1/availability", {"lines": [LINE, LINE]}, 422, VALIDATION, ("lines",)),
    ("post", "/v1/availability", {"lines": [{"sku": "NOPE", "quantity": 1}]}, 422, "unknown-sku",
     ("lines.0.sku",)),
    ("post", "/v1/availability", {"lines": [{**LINE, "unit_price": "1.00"}]}, 422, VALIDATION,
     ("lines.0.unit_price",)),
    # PUT /v1/reservations/{order_id}
    ("put", RESERVATION_PATH, {"lines": []}, 422, VALIDATION, ("lines",)),
    ("put", RESERVATION_PATH, {"lines": [{**LINE, "quantity": 10_001}]}, 422, VALIDATION,
     ("lines.0.quantity",)),
    ("put", RESERVATION_PATH, {"lines": [{**LINE, "quantity": True}]}, 422, VALIDATION,
     ("lines.0.quantity",)),
    ("put", RESERVATION_PATH, {"lines": [{"quantity": 1}]}, 422, VALIDATION, ("lines.0.sku",)),
    ("put", RESERVATION_PATH, {"lines": [LINE, LINE]}, 422, VALIDATION, ("lines",)),
    ("put", RESERVATION_PATH, {"lines": [LINE, {"sku": "NOPE", "quantity": 1}]}, 422, "unknown-sku",
     ("lines.1.sku",)),
    ("put", RESERVATION_PATH, {"lines": [LINE, {"sku": "USD-1", "quantity": 1}]}, 422,
     "mixed-currencies", ()),
    ("put", RESERVATION_PATH, {"lines": [{**LINE, "unit_price": "0.01"}]}, 422, VALIDATION,
     ("lines.0.unit_price",)),
    ("put", RESERVATION_PATH, {"lines": [LINE], "ttl_s": 1}, 422, VALIDATION, ("ttl_s",)),
    ("put", "/v1/reservations/not-a-uuid", {"lines": [LINE]}, 404, "not-found", ()),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "type_", "fields"), BAD_BODIES,
                         ids=[f"{m} {p} {json.dumps(b)[:60]}" for m, p, b, *_ in BAD_BODIES])
def test_bad_input_is_a_problem_and_writes_nothing(inventory_client, inventory_db, catalog, admin,
                                                    method, path, body, status, type_, fields):
    with nothing_written(inventory_db):
        response = getattr(inventory_client, method)(path, json=body, headers=admin)
        assert_problem(response, status, type_, fields)


WRITE_ENDPOINTS = [
    ("post", "/v1/products"),
    ("put", "/v1/products/COFFEE-1KG"),
    ("post", "/v1/products/COFFEE-1KG/stock-adjustments"),
    ("post", "/v1/availability"),
    ("put", RESERVATION_PATH),
]


@pytest.mark.parametrize(("method", "path"), WRITE_ENDPOINTS)
@pytest.mark.parametrize(("data", "content_type", "status", "type_"), [
    ("{not json", "application/json", 400, "malformed-json"),
    ('{"a": ' * 5000 + "1" + "}" * 5000, "application/json", 400, "malformed-json"),
    ('{"lines": "x"}', "text/plain", 415, "unsupported-media-type"),
    ("x" * (65 * 1024), "application/json", 413, "payload-too-large"),
])
def test_unparseable_bodies_are_problems_and_write_nothing(inventory_client, inventory_db, catalog,
                                                           admin, method, path, data, content_type,
                                                           status, type_):
    with nothing_written(inventory_db):
        response = getattr(inventory_client, method)(
            path, data=data, headers={**admin, "Content-Type": content_type})
        assert_problem(response, status, type_)


@pytest.mark.parametrize("query, fields", [
    ("limit=0", ("limit",)),
    ("limit=101", ("limit",)),
    ("stock_status=sold", ("stock_status",)),
    ("currency=EURO", ("currency",)),
    ("sort=name", ("sort",)),
    ("q=" + "x" * 101, ("q",)),
])
def test_bad_list_query_is_422(inventory_client, catalog, admin, query, fields):
    assert_problem(inventory_client.get(f"/v1/products?{query}", headers=admin), 422,
                   "validation-error", fields)


def test_bad_cursor_is_400(inventory_client, catalog, admin):
    assert_problem(inventory_client.get("/v1/products?cursor=bm90LWEtY3Vyc29y", headers=admin), 400,
                   "bad-cursor", ("cursor",))


def test_unknown_product_and_reservation_are_404(inventory_client, catalog, admin):
    assert_problem(inventory_client.get("/v1/products/NOPE", headers=admin), 404, "not-found")
    assert_problem(inventory_client.get(f"/v1/reservations/{uuid.uuid4()}", headers=admin), 404,
                   "not-found")


# --- health and docs ------------------------------------------------------------------------------
def test_health_and_openapi(inventory_client):
    assert inventory_client.get("/health/live").get_json() == {"status": "ok"}
    ready = inventory_client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.get_json()["checks"]["database"]["status"] == "ok"
    spec = inventory_client.get("/openapi.json").get_json()
    assert {"/v1/products", "/v1/products/{sku}", "/v1/products/{sku}/stock-adjustments",
            "/v1/availability", "/v1/reservations/{order_id}"} <= set(spec["paths"])
    reservation_put = spec["paths"]["/v1/reservations/{order_id}"]["put"]
    assert {"200", "201", "409", "422"} <= set(reservation_put["responses"])


def test_total_is_exact_decimal_arithmetic(inventory_client, inventory_db, admin, service):
    inventory_client.post("/v1/products", headers=admin, json={
        "sku": "CENTS", "name": "Cents", "price": "0.10", "currency": "EUR", "on_hand": 100})
    body = reserve(inventory_client, service, lines=[{"sku": "CENTS", "quantity": 3}]).get_json()
    assert Decimal(body["total"]) == Decimal("0.30")
