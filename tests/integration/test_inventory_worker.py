"""The inventory worker: order events confirm or release reservations; the sweeper
releases reservations whose order was never committed.

Handler tests call the handlers in a real transaction; the process tests run
``python -m services.inventory.worker`` against the real queue and check the
effects (stock, reservation status, inbox rows) with a deadline.
"""

from __future__ import annotations

import uuid

import pytest

from services.inventory import reservations
from services.inventory.domain import RequestedLine
from shared.messaging.consumer import PermanentError
from shared.messaging.envelope import Envelope
from tests.support.wait import wait_until

SERVICE = ("inventory:reserve",)
INBOX_CONSUMER = "inventory:inventory-events.fifo"
EVENTS_QUEUE = "inventory-events.fifo"
STOCK = 10


@pytest.fixture
def product(inventory_db):
    with inventory_db.transaction() as cur:
        cur.execute("INSERT INTO products (sku, id, name, price, currency, on_hand)"
                    " VALUES ('MUG-1', %s, 'Mug', 9.00, 'EUR', %s)", (uuid.uuid4(), STOCK))
    return "MUG-1"


def held(inventory_db, quantity: int = 3, ttl_s: float = 600) -> uuid.UUID:
    """A HELD reservation of ``quantity`` mugs; its order id."""
    order_id = uuid.uuid4()
    reservations.reserve(inventory_db, reservations.Reserve(order_id, [RequestedLine("MUG-1", quantity)],
                                                    "order-service", ttl_s))
    return order_id


def stock(db) -> tuple[int, int]:
    """(on_hand, reserved) of the mug."""
    with db.transaction() as cur:
        cur.execute("SELECT on_hand, reserved FROM products WHERE sku = 'MUG-1'")
        row = cur.fetchone()
    return row["on_hand"], row["reserved"]


def status(db, order_id) -> tuple[str, str | None]:
    with db.transaction() as cur:
        cur.execute("SELECT status, release_reason FROM reservations WHERE order_id = %s",
                    (order_id,))
        row = cur.fetchone()
    return row["status"], row["release_reason"]


def created_event(order_id, quantity: int = 3) -> Envelope:
    """order.created as the order service emits it."""
    return Envelope(event_type="order.created", aggregate_id=str(order_id), producer="order-service",
                    data={"order_id": str(order_id), "customer_id": "c-1", "currency": "EUR",
                          "total": "27.00", "lines": [{"sku": "MUG-1", "quantity": quantity,
                                                       "unit_price": "9.00", "line_total": "27.00"}]})


def cancelled_event(order_id) -> Envelope:
    return Envelope(event_type="order.cancelled", aggregate_id=str(order_id), producer="order-service",
                    data={"order_id": str(order_id), "customer_id": "c-1", "reason": "changed mind"})


def handle(db, handler, event: Envelope) -> None:
    with db.transaction() as cur:
        handler(cur, event)


def expire(db, order_id) -> None:
    with db.transaction() as cur:
        cur.execute("UPDATE reservations SET expires_at = now() - interval '1 second'"
                    " WHERE order_id = %s", (order_id,))


# --- handlers -------------------------------------------------------------------------------
def test_order_created_confirms_the_reservation(inventory_db, product):
    order_id = held(inventory_db)
    assert stock(inventory_db) == (STOCK, 3)
    handle(inventory_db, reservations.on_order_created, created_event(order_id))
    assert stock(inventory_db) == (STOCK - 3, 0)  # the units left with the order
    assert status(inventory_db, order_id) == ("CONFIRMED", None)
    with inventory_db.transaction() as cur:
        cur.execute("SELECT expires_at, confirmed_at FROM reservations WHERE order_id = %s",
                    (order_id,))
        row = cur.fetchone()
    assert row["expires_at"] is None and row["confirmed_at"] is not None
    # A confirmed reservation never expires.
    expire_all = reservations.release_expired(inventory_db)
    assert expire_all == 0
    # A second order.created (another event id) changes nothing.
    handle(inventory_db, reservations.on_order_created, created_event(order_id))
    assert stock(inventory_db) == (STOCK - 3, 0)


def test_cancel_after_create_restores_stock_once(inventory_db, product):
    order_id = held(inventory_db)
    handle(inventory_db, reservations.on_order_created, created_event(order_id))
    handle(inventory_db, reservations.on_order_cancelled, cancelled_event(order_id))
    assert stock(inventory_db) == (STOCK, 0)
    assert status(inventory_db, order_id) == ("RELEASED", "order_cancelled")
    handle(inventory_db, reservations.on_order_cancelled, cancelled_event(order_id))
    assert stock(inventory_db) == (STOCK, 0)


def test_cancel_of_a_held_reservation_releases_the_hold(inventory_db, product):
    order_id = held(inventory_db)
    handle(inventory_db, reservations.on_order_cancelled, cancelled_event(order_id))
    assert stock(inventory_db) == (STOCK, 0)
    assert status(inventory_db, order_id) == ("RELEASED", "order_cancelled")


def test_order_created_without_a_reservation_or_with_other_lines_is_permanent(inventory_db,
                                                                             product):
    with pytest.raises(PermanentError, match="no reservation"):
        handle(inventory_db, reservations.on_order_created, created_event(uuid.uuid4()))
    order_id = held(inventory_db, quantity=3)
    with pytest.raises(PermanentError, match="does not match"):
        handle(inventory_db, reservations.on_order_created, created_event(order_id, quantity=4))
    assert stock(inventory_db) == (STOCK, 3)


def test_cancel_for_an_unknown_order_is_a_no_op(inventory_db, product):
    handle(inventory_db, reservations.on_order_cancelled, cancelled_event(uuid.uuid4()))
    assert stock(inventory_db) == (STOCK, 0)


# --- sweeper ----------------------------------------------------------------------------------
def test_sweeper_releases_only_expired_held_reservations(inventory_db, product):
    expired = held(inventory_db, 2)
    fresh = held(inventory_db, 3)
    confirmed = held(inventory_db, 1)
    handle(inventory_db, reservations.on_order_created, created_event(confirmed, quantity=1))
    expire(inventory_db, expired)
    assert stock(inventory_db) == (STOCK - 1, 5)
    assert reservations.release_expired(inventory_db) == 1
    assert stock(inventory_db) == (STOCK - 1, 3)
    assert status(inventory_db, expired) == ("RELEASED", "expired")
    assert status(inventory_db, fresh)[0] == "HELD"
    assert status(inventory_db, confirmed)[0] == "CONFIRMED"
    assert reservations.release_expired(inventory_db) == 0  # nothing twice


def test_retrying_an_expired_reservation_holds_it_again(inventory_client, inventory_db, product,
                                                        auth_header):
    order_id = held(inventory_db, 2)
    expire(inventory_db, order_id)
    reservations.release_expired(inventory_db)
    assert stock(inventory_db) == (STOCK, 0)
    response = inventory_client.put(f"/v1/reservations/{order_id}", headers=auth_header("o", SERVICE),
                                    json={"lines": [{"sku": "MUG-1", "quantity": 2}]})
    assert response.status_code == 200
    assert response.get_json()["status"] == "HELD"
    assert stock(inventory_db) == (STOCK, 2)


def test_order_created_after_expiry_takes_the_stock_again(inventory_db, product):
    order_id = held(inventory_db, 2)
    expire(inventory_db, order_id)
    reservations.release_expired(inventory_db)
    handle(inventory_db, reservations.on_order_created, created_event(order_id, quantity=2))
    assert stock(inventory_db) == (STOCK - 2, 0)
    assert status(inventory_db, order_id)[0] == "CONFIRMED"


# --- the worker process ---------------------------------------------------------------------------
def send(sqs, queues, event: Envelope, dedup_id: str | None = None) -> None:
    """Publish as the relay does (dedup id = event id unless a redelivery is simulated)."""
    sqs.send_message(QueueUrl=queues[EVENTS_QUEUE], MessageBody=event.to_json(),
                     MessageGroupId=event.aggregate_id,
                     MessageDeduplicationId=dedup_id or event.event_id,
                     MessageAttributes={"event_type": {"DataType": "String",
                                                       "StringValue": event.event_type}})


def inbox_rows(db) -> int:
    with db.transaction() as cur:
        cur.execute("SELECT count(*) AS n FROM inbox WHERE consumer = %s", (INBOX_CONSUMER,))
        return cur.fetchone()["n"]


@pytest.mark.slow
def test_worker_confirms_then_a_cancel_delivered_twice_restores_stock_once(
        processes, inventory_db, product, sqs, queues):
    worker = processes.worker("inventory")
    order_id = held(inventory_db, 3)
    send(sqs, queues, created_event(order_id))
    wait_until(lambda: status(inventory_db, order_id)[0] == "CONFIRMED", timeout=30,
               message="reservation confirmed")
    assert stock(inventory_db) == (STOCK - 3, 0)

    cancel = cancelled_event(order_id)
    send(sqs, queues, cancel)
    # The same event again, as SQS redelivers it after a lost delete (a new dedup id gets it
    # past FIFO deduplication, so only the inbox stands between it and a second release).
    send(sqs, queues, cancel, dedup_id=f"{cancel.event_id}-again")
    wait_until(lambda: inbox_rows(inventory_db) == 2, timeout=30, message="both events handled")
    wait_until(lambda: "message_duplicate_skipped" in worker.log_text(), timeout=30,
               message="the redelivered cancel skipped as a duplicate")
    assert stock(inventory_db) == (STOCK, 0)
    assert status(inventory_db, order_id) == ("RELEASED", "order_cancelled")
    assert worker.terminate() == 0


@pytest.mark.slow
def test_worker_sweeps_expired_reservations(processes, inventory_db, product):
    worker = processes.worker("inventory", INVENTORY_SWEEP_INTERVAL_S="0.2")
    abandoned = held(inventory_db, 4)
    kept = held(inventory_db, 1)
    assert stock(inventory_db) == (STOCK, 5)
    expire(inventory_db, abandoned)
    wait_until(lambda: status(inventory_db, abandoned) == ("RELEASED", "expired"), timeout=20,
               message="expired reservation released by the sweeper")
    assert stock(inventory_db) == (STOCK, 1)
    assert status(inventory_db, kept)[0] == "HELD"
    assert "reservations_expired" in worker.log_text()
    assert worker.terminate() == 0
