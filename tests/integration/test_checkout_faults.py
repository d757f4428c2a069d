"""Checkout under faults: inventory killed, inventory slow, a commit failing after the
reservation, cancels delivered more than once.

Inventory runs as a real HTTP server (gunicorn where it must be killed and
restarted, werkzeug in this process where it must be slowed down); the order
API is the Flask app in this process, so its circuit breaker can be watched.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from werkzeug.serving import make_server

from shared.resilience import RETRY_WAIT_MAX_S
from tests.support.inventory import InventoryServer, set_stock
from tests.support.servers import LOOPBACK
from tests.support.wait import wait_until

ADDRESS = {"name": "Ada Lovelace", "line1": "1 Main St", "city": "Berlin", "postal_code": "10115",
           "country": "DE"}
FAST_FAIL_S = 0.05
FAIL_MAX = 3
RESET_S = 1.0
TIMEOUT_S = 0.3
ATTEMPTS = 2
SLOW_S = 2.0
SLACK_S = 0.4
SLOW_REQUESTS = 6
SKU = "SKU-3"
STOCK = 10


def order(quantity: int = 1) -> dict:
    return {"items": [{"sku": SKU, "quantity": quantity}], "customer_email": "ada@example.com",
            "shipping_address": ADDRESS}


def stock(inventory_db) -> tuple[int, int]:
    with inventory_db.transaction() as cur:
        cur.execute("SELECT on_hand, reserved FROM products WHERE sku = %s", (SKU,))
        row = cur.fetchone()
    return row["on_hand"], row["reserved"]


def reservation_state(inventory_db, order_id) -> tuple[str, str | None] | None:
    with inventory_db.transaction() as cur:
        cur.execute("SELECT status, release_reason FROM reservations WHERE order_id = %s",
                    (order_id,))
        row = cur.fetchone()
    return (row["status"], row["release_reason"]) if row else None


def timed_post(client, headers) -> tuple[int, float, dict, dict]:
    started = time.perf_counter()
    response = client.post("/v1/orders", json=order(), headers=headers)
    return (response.status_code, time.perf_counter() - started, response.get_json(),
            dict(response.headers))


def breaker(client) -> dict:
    return client.get("/health/ready").get_json()["breakers"]["inventory"]


def _ready(url: str) -> bool:
    try:
        return requests.get(f"{url}/health/ready", timeout=1).status_code == 200
    except requests.RequestException:
        return False


@pytest.mark.slow
def test_inventory_killed_fails_fast_while_open_and_recovers_without_restart(
        app_for, processes, port, auth_header, order_db):
    url = f"http://{LOOPBACK}:{port}"
    inventory = processes.api("inventory", port, WEB_CONCURRENCY="1", GUNICORN_THREADS="4")
    wait_until(lambda: _ready(url), timeout=60, message="inventory API ready")
    client = app_for("order", INVENTORY_URL=url, BREAKER_INVENTORY_FAIL_MAX=str(FAIL_MAX),
                     BREAKER_INVENTORY_RESET_TIMEOUT_S=str(RESET_S),
                     ORDER_INVENTORY_TIMEOUT_S=str(TIMEOUT_S),
                     ORDER_INVENTORY_ATTEMPTS=str(ATTEMPTS)).test_client()
    headers = auth_header()
    assert timed_post(client, headers)[0] == 201

    inventory.kill()
    # Until the breaker opens, each order tries (and retries) and gets a 503.
    opening = [timed_post(client, headers) for _ in range(FAIL_MAX)]
    assert [status for status, *_ in opening] == [503] * FAIL_MAX
    assert breaker(client)["state"] == "open"
    for _ in range(10):
        status, elapsed, body, response_headers = timed_post(client, headers)
        assert (status, body["type"]) == (503, "/problems/inventory-unavailable")
        assert elapsed < FAST_FAIL_S, f"{elapsed * 1000:.1f} ms while the breaker is open"
        assert 1 <= int(response_headers["Retry-After"]) <= RESET_S + 1

    processes.api("inventory", port, WEB_CONCURRENCY="1", GUNICORN_THREADS="4")  # same port
    wait_until(lambda: _ready(url), timeout=60, message="inventory API back")
    # After the reset timeout one trial call goes through and closes the breaker: no restart.
    wait_until(lambda: timed_post(client, headers)[0] == 201, timeout=RESET_S + 10, interval=0.2,
               message="orders accepted again")
    assert breaker(client)["state"] == "closed"
    with order_db.transaction() as cur:
        cur.execute("SELECT count(*) AS n FROM orders")
        assert cur.fetchone()["n"] == 2


class SlowWsgi:
    """The inventory app behind a fixed delay, counting the calls that reach it."""

    def __init__(self, app, delay_s: float):
        self.app = app
        self.delay_s = delay_s
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self, environ, start_response):
        if environ["PATH_INFO"].startswith("/v1/"):
            with self._lock:
                self.calls += 1
            time.sleep(self.delay_s)
        return self.app(environ, start_response)


def test_slow_inventory_no_request_hangs_longer_than_timeout_plus_retries(
        app_for, service_env, auth_header, order_db):
    inventory = InventoryServer({**service_env, "LOG_LEVEL": "WARNING"})
    slow = SlowWsgi(inventory.app, SLOW_S)
    server = make_server(LOOPBACK, 0, slow, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        app = app_for("order", INVENTORY_URL=f"http://{LOOPBACK}:{server.server_port}",
                      ORDER_INVENTORY_TIMEOUT_S=str(TIMEOUT_S),
                      ORDER_INVENTORY_ATTEMPTS=str(ATTEMPTS),
                      BREAKER_INVENTORY_FAIL_MAX=str(SLOW_REQUESTS),
                      BREAKER_INVENTORY_RESET_TIMEOUT_S="30")
        headers = auth_header()
        bound = TIMEOUT_S * ATTEMPTS + RETRY_WAIT_MAX_S * (ATTEMPTS - 1) + SLACK_S
        with ThreadPoolExecutor(SLOW_REQUESTS) as pool:
            results = list(pool.map(lambda _: timed_post(app.test_client(), headers),
                                    range(SLOW_REQUESTS)))
        assert [status for status, *_ in results] == [503] * SLOW_REQUESTS
        slowest = max(elapsed for _, elapsed, *_ in results)
        assert slowest < bound, f"a request took {slowest:.2f}s (bound {bound:.2f}s)"

        client = app.test_client()
        assert breaker(client)["state"] == "open"
        calls = slow.calls
        for _ in range(5):
            status, elapsed, *_ = timed_post(client, headers)
            assert status == 503 and elapsed < FAST_FAIL_S
        assert slow.calls == calls  # the open breaker did not call inventory
    finally:
        server.shutdown()
        server.server_close()
        inventory.stop()
    with order_db.transaction() as cur:
        cur.execute("SELECT count(*) AS n FROM orders")
        assert cur.fetchone()["n"] == 0


FAIL_AT_COMMIT = [
    """CREATE FUNCTION order_svc.fail_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN RAISE EXCEPTION 'injected: commit failed'; END $$""",
    # Deferred: it fires at COMMIT, after every statement of the order succeeded.
    """CREATE CONSTRAINT TRIGGER fail_at_commit AFTER INSERT ON order_svc.orders
       DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION order_svc.fail_at_commit()""",
]
UNDO_FAIL_AT_COMMIT = [
    "DROP TRIGGER IF EXISTS fail_at_commit ON order_svc.orders",
    "DROP FUNCTION IF EXISTS order_svc.fail_at_commit()",
]


def _execute(db, statements) -> None:
    with db.transaction() as cur:
        for statement in statements:
            cur.execute(statement)


@pytest.mark.slow
def test_commit_failing_after_the_reservation_is_released_by_the_sweeper(
        app_for, service_env, processes, auth_header, order_db, inventory_db, catalog):
    set_stock(catalog, SKU, STOCK)
    inventory = InventoryServer({**service_env, "LOG_LEVEL": "WARNING",
                                 "INVENTORY_RESERVATION_TTL_S": "1"})
    client = app_for("order", INVENTORY_URL=inventory.url).test_client()
    _execute(order_db, FAIL_AT_COMMIT)
    try:
        response = client.post("/v1/orders", json=order(3), headers=auth_header())
    finally:
        _execute(order_db, UNDO_FAIL_AT_COMMIT)
        inventory.stop()
    assert response.status_code == 500
    with order_db.transaction() as cur:
        cur.execute("SELECT count(*) AS n FROM orders")
        assert cur.fetchone()["n"] == 0
    with inventory_db.transaction() as cur:
        cur.execute("SELECT order_id, status FROM reservations")
        [held] = cur.fetchall()
    assert held["status"] == "HELD"
    assert stock(inventory_db) == (STOCK, 3)  # leaked for now...

    processes.worker("inventory", INVENTORY_SWEEP_INTERVAL_S="0.2")
    wait_until(lambda: reservation_state(inventory_db, held["order_id"]) == ("RELEASED", "expired"),
               timeout=30, message="the orphaned reservation released by the sweeper")
    assert stock(inventory_db) == (STOCK, 0)  # ...and not any more


@pytest.mark.slow
def test_cancel_after_create_and_a_cancel_delivered_twice_restore_stock_once(
        order_client, processes, auth_header, order_db, inventory_db, catalog, sqs, queues):
    set_stock(catalog, SKU, STOCK)
    processes.worker("order")
    inventory_worker = processes.worker("inventory")
    headers = auth_header()
    order_id = order_client.post("/v1/orders", json=order(3), headers=headers).get_json()["id"]
    wait_until(lambda: reservation_state(inventory_db, order_id) == ("CONFIRMED", None),
               timeout=30, message="reservation confirmed by order.created")
    assert stock(inventory_db) == (STOCK - 3, 0)

    assert order_client.post(f"/v1/orders/{order_id}/cancel", json={"reason": "changed mind"},
                             headers=headers).status_code == 200
    wait_until(lambda: reservation_state(inventory_db, order_id) == ("RELEASED", "order_cancelled"),
               timeout=30, message="reservation released by order.cancelled")
    assert stock(inventory_db) == (STOCK, 0)

    # Cancelling again is a no-op in the order service: no second event.
    assert order_client.post(f"/v1/orders/{order_id}/cancel", json={},
                             headers=headers).status_code == 200
    # The same cancel event delivered again (a lost delete: new dedup id, same event id).
    with order_db.transaction() as cur:
        cur.execute("SELECT event_id::text, body FROM outbox WHERE queue = 'inventory-events.fifo'"
                    " AND event_type = 'order.cancelled'")
        [cancel] = cur.fetchall()
    sqs.send_message(QueueUrl=queues["inventory-events.fifo"], MessageBody=cancel["body"],
                     MessageGroupId=order_id, MessageDeduplicationId=f"{cancel['event_id']}-again")
    wait_until(lambda: "message_duplicate_skipped" in inventory_worker.log_text(), timeout=30,
               message="the second delivery skipped by the inbox")
    # And the same cancel as a new event (e.g. re-issued by hand): the reservation is released.
    reissued = json.loads(cancel["body"])
    reissued["event_id"] = "00000000-0000-4000-8000-000000000001"
    sqs.send_message(QueueUrl=queues["inventory-events.fifo"], MessageBody=json.dumps(reissued),
                     MessageGroupId=order_id, MessageDeduplicationId=reissued["event_id"])

    def reissued_handled():
        with inventory_db.transaction() as cur:
            cur.execute("SELECT 1 FROM inbox WHERE event_id = %s", (reissued["event_id"],))
            return cur.fetchone() is not None

    wait_until(reissued_handled, timeout=30, message="the re-issued cancel handled")
    assert stock(inventory_db) == (STOCK, 0)  # restored once
