"""The handlers and domain rules of order, inventory and delivery on in-memory fakes.

No database, no queue: tests/support/fakes.py stands in for the repositories,
the outbox and the order service's inventory client, keeping the rules the SQL
keeps (transactions, unique keys, the stock CHECKs, the event contracts). Each
test asserts on effects: rows in the fakes, events in the fake outbox, the
domain error raised. The integration tier runs the same handlers on Postgres.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import psycopg2.errors
import pytest

from services.delivery import handlers as delivery
from services.delivery.domain import InvalidTransition
from services.inventory import reservations
from services.inventory.domain import (
    InsufficientStock as StockShort,
)
from services.inventory.domain import (
    RequestedLine,
    ReservationConflict,
)
from services.inventory.settings import load as load_inventory
from services.inventory.worker import build_plan as inventory_plan
from services.order import cancellation, idempotency, lifecycle
from services.order import handlers as order
from services.order.domain import (
    InsufficientStock,
    Item,
    OrderNotCancellable,
    ReservationReleased,
)
from services.order.inventory import InventoryRefused
from services.order.settings import load as load_order
from services.order.worker import build_plan as order_plan
from shared.auth import Principal
from shared.contracts import event_data
from shared.errors import NotFound
from shared.messaging.consumer import PermanentError
from shared.messaging.envelope import Envelope
from shared.queues import queue
from tests.support.fakes import (
    Clock,
    DeliveryRepository,
    FakeDb,
    FakeDelivery,
    FakeInventory,
    FakePayments,
    InventoryRepository,
    OrderRepository,
    Outbox,
    install,
)

ADDRESS = {"name": "Ada Lovelace", "line1": "1 Main St", "line2": None, "city": "Berlin", "region": None,
           "postal_code": "10115",
           "country": "DE"}
ADA = Principal("ada", frozenset({"orders:read", "orders:write"}))
BOB = Principal("bob", frozenset({"orders:read", "orders:write"}))


def carrier_of(shipment: dict) -> Principal:
    """The client of the carrier the shipment was given to (carriers reach only their own)."""
    return Principal(f"carrier-{shipment['carrier'].lower()}", frozenset({"shipments:write"}),
                     carrier=shipment["carrier"])


OTHER_CARRIER = Principal("carrier-acme", frozenset({"shipments:write"}), carrier="ACME")
UNUSED_DB = {"DATABASE_URL": "postgresql://unused/db"}


# --- order ----------------------------------------------------------------------------------
@pytest.fixture
def shop(monkeypatch):
    """The order service on fakes: ``(db, repo, outbox, inventory, clock, payments)``."""
    clock, outbox = Clock(), Outbox()
    repo = OrderRepository(clock)
    install(monkeypatch, order, repo, outbox)
    install(monkeypatch, lifecycle, repo, outbox)  # the cancel writes its events there
    install(monkeypatch, cancellation, repo)
    install(monkeypatch, idempotency, repo)
    inventory = FakeInventory({"SKU-1": ("Widget", Decimal("9.99")),
                               "COFFEE-1KG": ("Coffee", Decimal("14.50"))})
    return FakeDb(repo, outbox), repo, outbox, inventory, clock, FakePayments()


def place(shop, *items, customer="ada", **kwargs):
    db, _, _, inventory, _, payments = shop
    command = order.PlaceOrder(customer, f"{customer}@example.com", ADDRESS,
                               [Item(sku, quantity) for sku, quantity in items])
    return order.place_order(db, inventory, payments, command, "req-1", **kwargs)


def authorized(order_id) -> Envelope:
    return Envelope(event_type="payment.authorized", aggregate_id=str(order_id),
                    producer="payment-service", data=event_data("payment.authorized", {
                        "order_id": str(order_id), "payment_intent_id": "pi_test",
                        "currency": "EUR", "amount_minor": 999,
                        "authorized_at": datetime.now(UTC).isoformat()}))


def test_placing_writes_the_order_its_history_and_one_order_created_by_contract(shop):
    _, repo, outbox, _, _, _ = shop
    placed = place(shop, ("SKU-1", 2), ("COFFEE-1KG", 1))
    assert list(repo.orders) == [placed["id"]]
    assert (placed["status"], placed["currency"], placed["total"]) == (
        "PENDING_PAYMENT", "EUR", Decimal("34.48"))  # 2 x 9.99 + 14.50, the catalog's prices
    # The payment is opened for the same amount, in cents, with what the storefront needs.
    assert (placed["payment_amount_minor"], placed["payment_client_secret"]) == (
        3448, f"{placed['payment_intent_id']}_secret_test")
    assert [(h["status"], h["previous_status"], h["event"]) for h in repo.history] == [
        ("PENDING_PAYMENT", None, "order.created")]
    assert outbox.types() == ["order.created"]
    service, created, delay = outbox.events[0]
    assert (service, created.aggregate_id, created.correlation_id, delay) == (
        "order", str(placed["id"]), "req-1", 0)
    assert created.data == event_data("order.created", created.data)
    assert [(line["sku"], line["quantity"], line["unit_price"]) for line in created.data["lines"]] == [
        ("SKU-1", 2, "9.99"), ("COFFEE-1KG", 1, "14.50")]


def test_a_stock_refusal_names_the_items_fields_and_writes_nothing(shop):
    _, repo, outbox, inventory, _, _ = shop
    inventory.refusal = InventoryRefused(409, {
        "type": "/problems/insufficient-stock", "detail": "Not enough stock.",
        "lines": [{"sku": "COFFEE-1KG", "requested": 5, "available": 2}]})
    with pytest.raises(InsufficientStock) as refused:
        place(shop, ("SKU-1", 1), ("COFFEE-1KG", 5))
    assert refused.value.errors == [{"field": "items.1.quantity", "message": "Only 2 available."}]
    assert (repo.orders, repo.history, outbox.events) == ({}, [], [])


def test_a_released_reservation_is_refused_and_writes_nothing(shop):
    _, repo, outbox, inventory, _, _ = shop
    inventory.status = "RELEASED"
    with pytest.raises(ReservationReleased):
        place(shop, ("SKU-1", 1))
    assert (repo.orders, outbox.events) == ({}, [])


def test_a_failure_inside_the_transaction_rolls_back_the_order_and_its_event(shop):
    _, repo, outbox, _, _, _ = shop

    def failing(cur, placed):
        raise RuntimeError("the response could not be stored")

    with pytest.raises(RuntimeError):
        place(shop, ("SKU-1", 1), within=failing)
    assert (repo.orders, repo.history, outbox.events) == ({}, [], [])


def test_cancelling_emits_cancelled_then_status_changed_and_twice_is_harmless(shop):
    db, repo, outbox, _, _, _ = shop
    placed = place(shop, ("SKU-1", 1))
    cancelled = cancellation.cancel_order(db, FakeDelivery(), ADA, placed["id"], "changed my mind", "req-2")
    assert (cancelled["status"], cancelled["cancel_reason"]) == ("CANCELLED", "changed my mind")
    assert outbox.types() == ["order.created", "order.cancelled", "order.status_changed"]
    cancel, changed = outbox.of_type("order.cancelled")[0], outbox.of_type("order.status_changed")[0]
    assert changed.causation_id == cancel.event_id
    assert (changed.data["previous_status"], changed.data["status"], changed.data["cause"]) == (
        "PENDING_PAYMENT", "CANCELLED", "order.cancelled")
    again = cancellation.cancel_order(db, FakeDelivery(), ADA, placed["id"], None, "req-3")
    assert again["status"] == "CANCELLED"
    assert len(outbox.events) == 3 and len(repo.history) == 2


def test_a_shipped_order_cannot_be_cancelled_and_stays_as_it_was(shop):
    db, repo, outbox, _, _, _ = shop
    placed = place(shop, ("SKU-1", 1))
    repo.orders[placed["id"]]["status"] = "SHIPPED"
    with pytest.raises(OrderNotCancellable) as refused:
        cancellation.cancel_order(db, FakeDelivery(), ADA, placed["id"], None, None)
    assert refused.value.facts == {"status_now": "SHIPPED"}
    assert repo.orders[placed["id"]]["status"] == "SHIPPED"
    assert outbox.types() == ["order.created"]


def paid_order(shop) -> dict:
    db, _, _, _, _, _ = shop
    placed = place(shop, ("SKU-1", 1))
    with db.transaction() as cur:
        order.on_payment_event(cur, authorized(placed["id"]))
    return placed


def test_a_paid_order_is_cancelled_only_after_delivery_stopped_its_shipment(shop):
    db, repo, outbox, _, _, _ = shop
    placed = paid_order(shop)
    delivery = FakeDelivery()
    cancelled = cancellation.cancel_order(db, delivery, ADA, placed["id"], "too slow", None)
    assert delivery.stops == [placed["id"]]
    assert cancelled["status"] == "CANCELLED"
    assert len(outbox.of_type("order.cancelled")) == 1


def test_a_paid_order_whose_parcel_the_carrier_has_is_refused_and_unchanged(shop):
    db, repo, outbox, _, _, _ = shop
    placed = paid_order(shop)
    before = outbox.types()
    with pytest.raises(OrderNotCancellable) as refused:
        cancellation.cancel_order(db, FakeDelivery(underway="IN_TRANSIT"), ADA, placed["id"], None, None)
    assert refused.value.facts == {"status_now": "SHIPPED", "shipment_status": "IN_TRANSIT"}
    assert repo.orders[placed["id"]]["status"] == "PENDING_SHIPMENT"
    assert outbox.types() == before


def test_a_stopped_shipment_cancels_an_order_whose_own_cancel_was_lost(shop):
    db, repo, outbox, _, _, _ = shop
    placed = paid_order(shop)
    event = delivery_event("delivery.shipment_cancelled", placed["id"], "CANCELLED")
    with db.transaction() as cur:
        order.on_delivery_event(cur, event)
    stored = repo.orders[placed["id"]]
    assert (stored["status"], stored["cancel_reason"]) == ("CANCELLED", "shipment_cancelled")
    assert repo.history[-1]["event"] == "delivery.shipment_cancelled"
    (changed,) = [e for e in outbox.of_type("order.status_changed")
                  if e.data["status"] == "CANCELLED"]
    assert changed.data["cause"] == "delivery.shipment_cancelled"
    with db.transaction() as cur:  # a second copy (or the usual event after the order's cancel)
        order.on_delivery_event(cur, delivery_event("delivery.shipment_cancelled", placed["id"],
                                                    "CANCELLED"))
    assert len(outbox.of_type("order.cancelled")) == 1


def test_another_customers_order_is_not_found_for_reading_and_cancelling(shop):
    db, repo, _, _, _, _ = shop
    placed = place(shop, ("SKU-1", 1))
    with pytest.raises(NotFound):
        order.get_order(db, BOB, placed["id"])
    with pytest.raises(NotFound):
        cancellation.cancel_order(db, FakeDelivery(), BOB, placed["id"], None, None)
    assert repo.orders[placed["id"]]["status"] == "PENDING_PAYMENT"


def delivery_event(event_type: str, order_id, status: str, shipment_id=None) -> Envelope:
    shipment_id = shipment_id or uuid.uuid4()
    return Envelope(event_type=event_type, aggregate_id=str(order_id), producer="delivery-service",
                    data=event_data(event_type, {
                        "shipment_id": str(shipment_id), "order_id": str(order_id),
                        "status": status, "carrier": "DHL", "tracking_number": "DHL123",
                        "location": None, "occurred_at": datetime.now(UTC).isoformat()}))


def test_delivery_events_through_the_workers_handler_table_move_the_order_along(shop):
    db, repo, outbox, _, _, _ = shop
    plan = order_plan(None, *load_order(UNUSED_DB))
    handlers = plan.consumers[queue("delivery-status.fifo")]
    placed = place(shop, ("SKU-1", 1))
    with db.transaction() as cur:  # paid: only now is there a shipment to hear about
        plan.consumers[queue("payment-events.fifo")]["payment.authorized"](cur, authorized(placed["id"]))
    shipment_id = uuid.uuid4()
    for event_type, status in [("delivery.shipment_created", "CREATED"),
                               ("delivery.shipped", "SHIPPED"),
                               ("delivery.in_transit", "IN_TRANSIT"),
                               ("delivery.delivered", "DELIVERED"),
                               ("delivery.shipped", "SHIPPED")]:  # late and out of order
        with db.transaction() as cur:
            handlers[event_type](cur, delivery_event(event_type, placed["id"], status, shipment_id))
    stored = repo.orders[placed["id"]]
    assert (stored["status"], stored["shipment_id"], stored["tracking_number"]) == (
        "DELIVERED", shipment_id, "DHL123")
    assert [(h["event"], h["status"], h["applied"]) for h in repo.history[1:]] == [
        ("payment.authorized", "PENDING_SHIPMENT", True),
        ("delivery.shipment_created", "PENDING_SHIPMENT", True),
        ("delivery.shipped", "SHIPPED", True),
        ("delivery.in_transit", "SHIPPED", True),
        ("delivery.delivered", "DELIVERED", True),
        ("delivery.shipped", "DELIVERED", False)]
    changes = [(e.data["previous_status"], e.data["status"]) for e in outbox.of_type("order.status_changed")]
    assert changes == [("PENDING_PAYMENT", "PENDING_SHIPMENT"), ("PENDING_SHIPMENT", "SHIPPED"),
                       ("SHIPPED", "DELIVERED")]
    assert len(outbox.of_type("order.paid")) == 1


def test_a_delivery_event_after_cancelling_is_recorded_but_not_applied(shop):
    db, repo, outbox, _, _, _ = shop
    placed = place(shop, ("SKU-1", 1))
    cancellation.cancel_order(db, FakeDelivery(), ADA, placed["id"], None, None)
    with db.transaction() as cur:
        order.on_delivery_event(cur, delivery_event("delivery.shipped", placed["id"], "SHIPPED"))
    assert repo.orders[placed["id"]]["status"] == "CANCELLED"
    assert repo.history[-1]["applied"] is False and repo.history[-1]["note"].startswith("ignored:")
    assert len(outbox.of_type("order.status_changed")) == 1  # the cancel's own


def test_a_delivery_event_for_an_unknown_order_is_permanent(shop):
    db, _, outbox, _, _, _ = shop
    with pytest.raises(PermanentError), db.transaction() as cur:
        order.on_delivery_event(cur, delivery_event("delivery.shipped", uuid.uuid4(), "SHIPPED"))
    assert outbox.events == []


# --- the order service's idempotency keys ---------------------------------------------------
def created_response(shop, **kwargs):
    """The view's command: place an order under the attempt's id and store the response."""
    db, _, _, inventory, _, _ = shop

    def command(attempt):
        def respond(cur, placed):
            return attempt.store(cur, idempotency.StoredResponse(201, str(placed["id"]), {}))
        return place(shop, ("SKU-1", 1), order_id=attempt.resource_id, within=respond)

    return command


def test_a_key_runs_the_command_once_and_replays_its_stored_response(shop):
    db, repo, outbox, inventory, _, _ = shop
    first = idempotency.run_once(db, "ada", "k-1", "hash-a", created_response(shop))
    again = idempotency.run_once(db, "ada", "k-1", "hash-a", created_response(shop))
    assert (again.status, again.body) == (first.status, first.body)
    assert again.headers == {idempotency.REPLAYED_HEADER: "true"}
    assert idempotency.REPLAYED_HEADER not in first.headers
    assert len(repo.orders) == 1 and len(inventory.calls) == 1 and outbox.types() == ["order.created"]


def test_the_same_key_with_another_body_is_refused(shop):
    db, repo, _, _, _, _ = shop
    idempotency.run_once(db, "ada", "k-1", "hash-a", created_response(shop))
    with pytest.raises(idempotency.KeyReused):
        idempotency.run_once(db, "ada", "k-1", "hash-b", created_response(shop))
    # Keys are per customer: another customer's identical key is a new request.
    idempotency.run_once(db, "bob", "k-1", "hash-b", created_response(shop))
    assert len(repo.orders) == 2


def test_a_key_whose_first_attempt_still_runs_is_in_progress_until_it_is_stale(shop):
    db, repo, _, _, clock, _ = shop
    seen = []

    def slow_first(attempt):
        with pytest.raises(idempotency.KeyInProgress):
            idempotency.run_once(db, "ada", "k-1", "hash-a", created_response(shop))
        clock.advance(seconds=61)  # a crashed request's key is taken over after 60 s
        seen.append(idempotency.run_once(db, "ada", "k-1", "hash-a", created_response(shop)))
        return idempotency.StoredResponse(500, "", {})

    idempotency.run_once(db, "ada", "k-1", "hash-a", slow_first)
    # The takeover kept the first attempt's resource id: one order, under that id.
    assert [str(order_id) for order_id in repo.orders] == [seen[0].body]


def test_a_failed_attempt_releases_the_key_and_the_retry_keeps_its_order_id(shop):
    db, repo, _, inventory, _, _ = shop
    inventory.refusal = RuntimeError("inventory timed out")
    with pytest.raises(RuntimeError):
        idempotency.run_once(db, "ada", "k-1", "hash-a", created_response(shop))
    assert repo.keys[("ada", "k-1")]["state"] == "released"
    inventory.refusal = None
    retried = idempotency.run_once(db, "ada", "k-1", "hash-a", created_response(shop))
    # Stock held under the first attempt's id is found again, not held twice.
    assert inventory.calls[0] == inventory.calls[1] == uuid.UUID(retried.body)
    assert repo.keys[("ada", "k-1")]["state"] == "completed"


def test_an_expired_key_is_a_new_request_with_a_new_order_id(shop):
    db, repo, _, _, clock, _ = shop
    first = idempotency.run_once(db, "ada", "k-1", "hash-a", created_response(shop))
    clock.advance(hours=25)
    second = idempotency.run_once(db, "ada", "k-1", "hash-a", created_response(shop))
    assert second.body != first.body and idempotency.REPLAYED_HEADER not in second.headers
    assert len(repo.orders) == 2


def test_a_takeover_racing_a_commit_is_in_progress_and_frees_the_key(shop):
    db, repo, _, _, _, _ = shop
    placed = place(shop, ("SKU-1", 1))

    def duplicate(attempt):  # the first attempt committed this id meanwhile
        return place(shop, ("SKU-1", 1), order_id=placed["id"])

    with pytest.raises(idempotency.KeyInProgress):
        idempotency.run_once(db, "ada", "k-1", "hash-a", duplicate)
    assert repo.keys[("ada", "k-1")]["state"] == "released"
    assert list(repo.orders) == [placed["id"]]


def test_the_fake_order_table_refuses_an_order_id_twice_like_its_primary_key(shop):
    place(shop, ("SKU-1", 1), order_id=uuid.UUID(int=1))
    with pytest.raises(psycopg2.errors.UniqueViolation):
        place(shop, ("SKU-1", 1), order_id=uuid.UUID(int=1))


# --- inventory --------------------------------------------------------------------------------
@pytest.fixture
def stock(monkeypatch):
    """Inventory on fakes: ``(db, repo, clock, handler table of the worker)``."""
    clock = Clock()
    repo = InventoryRepository(clock)
    repo.add_product("SKU-1", on_hand=10)
    repo.add_product("COFFEE-1KG", on_hand=3, price="14.50")
    repo.add_product("USD-1", on_hand=5, currency="USD")
    install(monkeypatch, reservations, repo)
    handlers = inventory_plan(None, *load_inventory(UNUSED_DB)).consumers[queue("inventory-events.fifo")]
    return FakeDb(repo), repo, clock, handlers


def reserve(db, order_id, *lines, ttl_s=900):
    return reservations.reserve(db, reservations.Reserve(
        order_id, [RequestedLine(sku, quantity) for sku, quantity in lines], "order-service", ttl_s))


def order_event(event_type: str, order_id, *lines) -> Envelope:
    data = {"order_id": str(order_id)}
    if lines:
        data["lines"] = [{"sku": sku, "quantity": quantity} for sku, quantity in lines]
    return Envelope(event_type=event_type, aggregate_id=str(order_id), data=data,
                    producer="order-service")


def deliver(db, handlers, event: Envelope) -> None:
    with db.transaction() as cur:
        handlers[event.event_type](cur, event)


def test_reserving_holds_every_line_at_the_catalog_price(stock):
    db, repo, _, _ = stock
    result = reserve(db, uuid.UUID(int=1), ("SKU-1", 2), ("COFFEE-1KG", 1))
    assert result.created and result.reservation["status"] == "HELD"
    assert result.reservation["total"] == Decimal("34.48")
    assert (repo.stock("SKU-1"), repo.stock("COFFEE-1KG")) == ((10, 2), (3, 1))


def test_a_short_line_holds_nothing_and_leaves_no_reservation(stock):
    db, repo, _, _ = stock
    with pytest.raises(StockShort) as refused:
        reserve(db, uuid.UUID(int=1), ("SKU-1", 2), ("COFFEE-1KG", 4))
    assert refused.value.facts["lines"] == [{"sku": "COFFEE-1KG", "requested": 4, "available": 3}]
    assert repo.reservations == {}
    assert (repo.stock("SKU-1"), repo.stock("COFFEE-1KG")) == ((10, 0), (3, 0))


def test_the_same_lines_again_replay_and_other_lines_conflict(stock):
    db, repo, _, _ = stock
    reserve(db, uuid.UUID(int=1), ("SKU-1", 2))
    again = reserve(db, uuid.UUID(int=1), ("SKU-1", 2))
    assert not again.created and repo.stock("SKU-1") == (10, 2)
    with pytest.raises(ReservationConflict):
        reserve(db, uuid.UUID(int=1), ("SKU-1", 3))
    assert repo.stock("SKU-1") == (10, 2)


def test_order_created_confirms_once_and_order_cancelled_gives_the_units_back_once(stock):
    db, repo, _, handlers = stock
    reserve(db, uuid.UUID(int=1), ("SKU-1", 2))
    for _ in range(2):  # a second copy of the event changes nothing
        deliver(db, handlers, order_event("order.created", uuid.UUID(int=1), ("SKU-1", 2)))
    assert repo.reservations[uuid.UUID(int=1)]["status"] == "CONFIRMED"
    assert repo.stock("SKU-1") == (8, 0)
    for _ in range(2):
        deliver(db, handlers, order_event("order.cancelled", uuid.UUID(int=1)))
    assert (repo.reservations[uuid.UUID(int=1)]["status"],
            repo.reservations[uuid.UUID(int=1)]["release_reason"]) == ("RELEASED", "order_cancelled")
    assert repo.stock("SKU-1") == (10, 0)


def test_cancelling_a_held_reservation_frees_the_held_units(stock):
    db, repo, _, handlers = stock
    reserve(db, uuid.UUID(int=1), ("SKU-1", 4))
    deliver(db, handlers, order_event("order.cancelled", uuid.UUID(int=1)))
    assert repo.stock("SKU-1") == (10, 0)


def test_order_created_that_does_not_match_its_reservation_is_permanent(stock):
    db, repo, _, handlers = stock
    reserve(db, uuid.UUID(int=1), ("SKU-1", 2))
    with pytest.raises(PermanentError):
        deliver(db, handlers, order_event("order.created", uuid.UUID(int=1), ("SKU-1", 3)))
    with pytest.raises(PermanentError):
        deliver(db, handlers, order_event("order.created", uuid.UUID(int=2), ("SKU-1", 1)))
    assert repo.stock("SKU-1") == (10, 2)


def test_expired_reservations_are_released_and_a_retry_holds_them_again(stock):
    db, repo, clock, _ = stock
    reserve(db, uuid.UUID(int=1), ("SKU-1", 2), ttl_s=60)
    reserve(db, uuid.UUID(int=2), ("SKU-1", 3), ttl_s=600)
    clock.advance(seconds=61)
    assert reservations.release_expired(db) == 1
    assert repo.reservations[uuid.UUID(int=1)]["release_reason"] == "expired"
    assert repo.stock("SKU-1") == (10, 3)
    assert reservations.release_expired(db) == 0
    again = reserve(db, uuid.UUID(int=1), ("SKU-1", 2))
    assert not again.created and again.reservation["status"] == "HELD"
    assert repo.stock("SKU-1") == (10, 5)


def test_order_created_after_expiry_takes_the_stock_again_only_if_it_is_there(stock):
    db, repo, clock, handlers = stock
    reserve(db, uuid.UUID(int=1), ("COFFEE-1KG", 2), ttl_s=60)
    reserve(db, uuid.UUID(int=2), ("COFFEE-1KG", 1), ttl_s=60)
    clock.advance(seconds=61)
    reservations.release_expired(db)
    reserve(db, uuid.UUID(int=3), ("COFFEE-1KG", 2))  # someone else took the units meanwhile
    deliver(db, handlers, order_event("order.created", uuid.UUID(int=1), ("COFFEE-1KG", 2)))
    assert repo.reservations[uuid.UUID(int=1)]["status"] == "RELEASED"  # never oversold
    deliver(db, handlers, order_event("order.created", uuid.UUID(int=2), ("COFFEE-1KG", 1)))
    assert repo.reservations[uuid.UUID(int=2)]["status"] == "CONFIRMED"
    assert repo.stock("COFFEE-1KG") == (2, 2)


def test_the_fake_products_table_refuses_an_oversell_like_its_checks(stock):
    db, repo, _, _ = stock
    with pytest.raises(psycopg2.errors.CheckViolation), db.transaction() as cur:
        repo.move_stock(cur, [("SKU-1", 0, 11)])
    assert repo.stock("SKU-1") == (10, 0)


# --- delivery ---------------------------------------------------------------------------------
@pytest.fixture
def depot(monkeypatch):
    """Delivery on fakes: ``(db, repo, outbox)``."""
    outbox, repo = Outbox(), DeliveryRepository()
    install(monkeypatch, delivery, repo, outbox)
    return FakeDb(repo, outbox), repo, outbox


def created_event(order_id) -> Envelope:
    """What delivery ships on: the order was paid."""
    return Envelope(event_type="order.paid", aggregate_id=str(order_id), producer="order-service",
                    data={"order_id": str(order_id), "customer_id": "ada",
                          "shipping_address": ADDRESS})


def test_one_shipment_per_order_with_one_shipment_created_event(depot):
    db, repo, outbox = depot
    cause = created_event(uuid.UUID(int=1))
    for _ in range(2):
        with db.transaction() as cur:
            delivery.on_order_paid(cur, cause)
    [shipment] = repo.shipments.values()
    assert (shipment["order_id"], shipment["status"]) == (uuid.UUID(int=1), "CREATED")
    assert outbox.types() == ["delivery.shipment_created"]
    created = outbox.events[0][1]
    assert (created.causation_id, created.data["shipment_id"]) == (cause.event_id, str(shipment["id"]))


def test_a_cancel_arriving_first_leaves_a_tombstone_and_no_shipment_is_made(depot):
    db, repo, outbox = depot
    cancel = Envelope(event_type="order.cancelled", aggregate_id=str(uuid.UUID(int=1)),
                      producer="order-service", data={"order_id": str(uuid.UUID(int=1)),
                                                      "reason": "oops"})
    with db.transaction() as cur:
        delivery.on_order_cancelled(cur, cancel)
    with db.transaction() as cur:
        delivery.on_order_paid(cur, created_event(uuid.UUID(int=1)))
    assert repo.tombstones == {uuid.UUID(int=1): "oops"}
    assert repo.shipments == {}
    # The order hears that it has no shipment (it finishes a cancel whose commit was lost).
    [(service, event, _delay)] = outbox.events
    assert (service, event.event_type) == ("delivery", "delivery.shipment_cancelled")
    assert event.data["shipment_id"] is None and event.data["order_id"] == str(uuid.UUID(int=1))


def test_cancel_cancels_a_created_shipment_but_not_a_shipped_one(depot):
    db, repo, outbox = depot
    for n in (1, 2):
        with db.transaction() as cur:
            delivery.on_order_paid(cur, created_event(uuid.UUID(int=n)))
    shipped = next(s for s in repo.shipments.values() if s["order_id"] == uuid.UUID(int=2))
    delivery.post_carrier_event(db, carrier_of(shipped), shipped["id"], {
        "status": "SHIPPED", "occurred_at": None, "location": "Hub", "note": None}, None)
    for n in (1, 2):
        with db.transaction() as cur:
            delivery.on_order_cancelled(cur, Envelope(
                event_type="order.cancelled", aggregate_id=str(uuid.UUID(int=n)),
                producer="order-service", data={"order_id": str(uuid.UUID(int=n))}))
    statuses = {s["order_id"].int: s["status"] for s in repo.shipments.values()}
    assert statuses == {1: "CANCELLED", 2: "SHIPPED"}
    assert outbox.types().count("delivery.shipment_cancelled") == 1
    assert repo.history[-1]["note"] == "cancel rejected: shipment already SHIPPED"


def test_carrier_events_follow_the_shipment_state_machine(depot):
    db, repo, outbox = depot
    with db.transaction() as cur:
        delivery.on_order_paid(cur, created_event(uuid.UUID(int=1)))
    [shipment_id] = repo.shipments

    def report(status, who=None):
        return delivery.post_carrier_event(db, who or carrier_of(repo.shipments[shipment_id]), shipment_id, {
            "status": status, "occurred_at": None, "location": None, "note": None}, "req-9")

    with pytest.raises(NotFound):  # another carrier's shipment does not exist for it
        report("SHIPPED", who=OTHER_CARRIER)
    assert report("SHIPPED")["status"] == "SHIPPED"
    assert report("SHIPPED")["status"] == "SHIPPED"  # a carrier retry changes nothing
    with pytest.raises(InvalidTransition):
        report("CREATED")
    assert report("DELIVERED")["status"] == "DELIVERED"
    with pytest.raises(InvalidTransition):
        report("FAILED")
    with pytest.raises(NotFound):
        delivery.post_carrier_event(db, carrier_of(repo.shipments[shipment_id]), uuid.uuid4(), {
            "status": "SHIPPED", "occurred_at": None, "location": None, "note": None}, None)
    assert outbox.types() == ["delivery.shipment_created", "delivery.shipped", "delivery.delivered"]
    assert [e.correlation_id for e in outbox.of_type("delivery.shipped")] == ["req-9"]
