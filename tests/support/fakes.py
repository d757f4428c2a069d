"""In-memory fakes of what the handlers use: a database with transactions, the outbox,
each service's repository, the order service's inventory client.

The handlers reach their storage through two module-level names, ``repo``
(the service's repository module) and ``add_event`` (the outbox); those
names are the seam: :func:`install` points them at a fake for one test
(monkeypatch undoes it). The fakes keep the rules the SQL keeps where a
handler relies on them, or a test on them would prove nothing:

* a transaction is all or nothing: an exception inside ``db.transaction()``
  restores every table, the outbox included;
* unique keys: an order id twice is ``UniqueViolation``, one idempotency key
  per ``(customer, key)`` with the claim/takeover rules of
  ``order/repository.claim_idempotency_key``, one reservation per order, one
  shipment per order;
* the products table's CHECKs: ``reserved >= 0`` and, without backorders,
  ``on_hand >= 0`` and ``on_hand - reserved >= 0``;
* every event put in the outbox must match its contract (shared/contracts.py).
"""

from __future__ import annotations

import copy
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg2.errors

from shared.contracts import event_data
from shared.messaging.envelope import Envelope


class Clock:
    """A settable "now" for expiry rules (keys, reservations)."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass
class Outbox:
    """Events added in committed transactions: ``(service, envelope, delay_s)``."""

    events: list[tuple[str, Envelope, int]] = field(default_factory=list)

    def add_event(self, cur, service: str, envelope: Envelope, delay_s: int = 0) -> int:
        event_data(envelope.event_type, envelope.data)  # ContractViolation as the producer's bug
        self.events.append((service, envelope, delay_s))
        return len(self.events)

    def of_type(self, event_type: str) -> list[Envelope]:
        return [envelope for _, envelope, _ in self.events if envelope.event_type == event_type]

    def types(self) -> list[str]:
        return [envelope.event_type for _, envelope, _ in self.events]


class FakeDb:
    """``db.transaction()`` over in-memory state: rolled back when the block raises."""

    def __init__(self, *stores: Any) -> None:
        self.stores = stores
        self.commits = 0

    @contextmanager
    def transaction(self):
        # Every table as it was; the clock is time, not state, and is not rolled back.
        saved = [{name: copy.deepcopy(value) for name, value in vars(store).items()
                  if not isinstance(value, Clock)} for store in self.stores]
        try:
            yield object()  # the cursor: the fakes keep their state themselves
        except BaseException:
            for store, state in zip(self.stores, saved, strict=True):
                vars(store).update(state)
            raise
        self.commits += 1


def install(monkeypatch, module, repo: Any, outbox: Outbox | None = None) -> None:
    """Point ``module``'s repository (and outbox) at the fakes for this test."""
    monkeypatch.setattr(module, "repo", repo)
    if outbox is not None:
        monkeypatch.setattr(module, "add_event", outbox.add_event)


def _unique_violation(what: str) -> psycopg2.errors.UniqueViolation:
    return psycopg2.errors.UniqueViolation(f"duplicate key value violates unique constraint: {what}")


# --- order ----------------------------------------------------------------------------------
IDEMPOTENCY_TTL = timedelta(hours=24)          # order/repository.py IDEMPOTENCY_TTL
IDEMPOTENCY_STALE_AFTER = timedelta(seconds=60)  # order/repository.py IDEMPOTENCY_STALE_AFTER


class OrderRepository:
    """services/order/repository.py over dicts."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.orders: dict[uuid.UUID, dict] = {}
        self.history: list[dict] = []
        self.keys: dict[tuple[str, str], dict] = {}

    def insert_order(self, cur, order_id, customer_id, customer_email, currency, total,
                     shipping_address, lines, payment) -> dict:
        if order_id in self.orders:
            raise _unique_violation(f"orders_pkey ({order_id})")
        self.orders[order_id] = {
            "id": order_id, "customer_id": customer_id, "customer_email": customer_email,
            "status": "PENDING_PAYMENT", "currency": currency, "total": total,
            "payment_intent_id": payment.intent_id, "payment_client_secret": payment.client_secret,
            "payment_amount_minor": payment.amount_minor, "paid_at": None,
            "shipping_address": shipping_address, "cancel_reason": None, "shipment_id": None,
            "carrier": None, "tracking_number": None, "created_at": self.clock.now, "version": 1,
            "lines": [{"sku": line.sku, "quantity": line.quantity, "unit_price": line.unit_price,
                       "line_total": line.unit_price * line.quantity} for line in lines]}
        self.add_history(cur, order_id, "PENDING_PAYMENT", None, "order.created")
        return self.get_order(cur, order_id)

    def add_history(self, cur, order_id, status, previous_status, event, applied=True, note=None,
                    source_event_id=None, occurred_at=None) -> None:
        self.history.append({"order_id": order_id, "status": str(status),
                             "previous_status": None if previous_status is None else str(previous_status),
                             "event": event, "applied": applied, "note": note,
                             "source_event_id": source_event_id})

    def lock_order(self, cur, order_id):
        return self.get_order(cur, order_id)

    def get_order(self, cur, order_id):
        order = self.orders.get(uuid.UUID(str(order_id)))
        return copy.deepcopy(order)

    def set_status(self, cur, order_id, status, cancel_reason=None) -> None:
        order = self.orders[uuid.UUID(str(order_id))]
        order["status"] = str(status)
        order["cancel_reason"] = cancel_reason if cancel_reason is not None else order["cancel_reason"]
        order["version"] += 1

    def set_paid(self, cur, order_id) -> None:
        order = self.orders[uuid.UUID(str(order_id))]
        order.update(status="PENDING_SHIPMENT", paid_at=self.clock.now)
        order["version"] += 1

    def set_shipment(self, cur, order_id, shipment_id, carrier, tracking_number) -> None:
        order = self.orders[uuid.UUID(str(order_id))]
        order["shipment_id"] = shipment_id
        order["carrier"] = carrier if carrier is not None else order["carrier"]
        order["tracking_number"] = tracking_number if tracking_number is not None \
            else order["tracking_number"]

    def list_orders(self, cur, customer_id, status, after, limit):
        found = [o for o in self.orders.values()
                 if (customer_id is None or o["customer_id"] == customer_id)
                 and (status is None or o["status"] == status)]
        return copy.deepcopy(found[:limit])

    # The claim rules of claim_idempotency_key's INSERT ... ON CONFLICT ... WHERE.
    def claim_idempotency_key(self, cur, customer_id, key, request_hash, order_id):
        now = self.clock.now
        row = self.keys.get((customer_id, key))
        if row is None:
            self.keys[(customer_id, key)] = self._new_key(request_hash, order_id)
            return order_id, None
        takeover = (row["expires_at"] < now or row["state"] == "released"
                    or (row["state"] == "in_progress"
                        and row["created_at"] < now - IDEMPOTENCY_STALE_AFTER))
        if not takeover:
            return None, copy.deepcopy(row)
        keep = row["request_hash"] == request_hash and row["expires_at"] >= now
        new = self._new_key(request_hash, (row["order_id"] or order_id) if keep else order_id)
        self.keys[(customer_id, key)] = new
        return new["order_id"], None

    def _new_key(self, request_hash, order_id) -> dict:
        return {"request_hash": request_hash, "state": "in_progress", "order_id": order_id,
                "created_at": self.clock.now, "expires_at": self.clock.now + IDEMPOTENCY_TTL,
                "response_status": None, "response_body": None, "response_headers": None}

    def complete_idempotency_key(self, cur, customer_id, key, status, body, headers) -> None:
        row = self.keys.get((customer_id, key))
        if row is not None:
            row.update(state="completed", response_status=status, response_body=body,
                       response_headers=dict(headers))

    def release_idempotency_key(self, cur, customer_id, key) -> None:
        row = self.keys.get((customer_id, key))
        if row is not None and row["state"] == "in_progress":
            row["state"] = "released"


class FakeInventory:
    """The order service's inventory client: reservations held per order id, like the API."""

    def __init__(self, prices: dict[str, tuple[str, Decimal]], currency: str = "EUR") -> None:
        self.prices = prices
        self.currency = currency
        self.calls: list[uuid.UUID] = []
        self.refusal: Exception | None = None
        self.status = "HELD"
        self.released: list[uuid.UUID] = []

    def reserve(self, order_id, items, correlation_id):
        from services.order.inventory import Reservation, ReservedLine

        self.calls.append(order_id)
        if self.refusal is not None:
            raise self.refusal
        lines = [ReservedLine(item.sku, self.prices[item.sku][0], item.quantity,
                              self.prices[item.sku][1]) for item in items]
        total = sum((line.unit_price * line.quantity for line in lines), Decimal("0.00"))
        return Reservation(order_id, self.status, self.currency, total, lines)

    def release(self, order_id, correlation_id) -> bool:
        self.released.append(order_id)
        return True


class FakeDelivery:
    """The order service's delivery client: ``stops`` lists the shipments it was asked to stop;
    ``underway`` (a shipment status) makes it answer as for a parcel the carrier has."""

    def __init__(self, underway: str | None = None) -> None:
        self.stops: list[uuid.UUID] = []
        self.underway = underway

    def stop_shipment(self, order_id, reason, correlation_id) -> None:
        from services.order.delivery import ShipmentUnderway

        if self.underway is not None:
            raise ShipmentUnderway(self.underway)
        self.stops.append(order_id)


class FakePayments:
    """The order service's payment client: one PaymentIntent per order id, like the API."""

    def __init__(self) -> None:
        self.opened: dict[uuid.UUID, tuple] = {}
        self.unavailable: Exception | None = None

    def open(self, order_id, customer_id, currency, lines, correlation_id):
        from services.order.payments import OpenedPayment
        from shared.currencies import to_minor_units

        if self.unavailable is not None:
            raise self.unavailable
        amount = sum(to_minor_units(line.unit_price, currency) * line.quantity for line in lines)
        intent_id = f"pi_{uuid.UUID(str(order_id)).hex[:14]}"
        self.opened[order_id] = (customer_id, currency, amount)
        return OpenedPayment(intent_id, f"{intent_id}_secret_test", amount, currency,
                             "REQUIRES_PAYMENT")


# --- inventory ------------------------------------------------------------------------------
class InventoryRepository:
    """services/inventory/repository.py's products and reservations over dicts."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.products: dict[str, dict] = {}
        self.reservations: dict[uuid.UUID, dict] = {}

    def add_product(self, sku: str, on_hand: int, price: str = "9.99", currency: str = "EUR",
                    allow_backorder: bool = False, name: str | None = None) -> None:
        self.products[sku] = {"sku": sku, "name": name or sku, "price": Decimal(price),
                              "currency": currency, "on_hand": on_hand, "reserved": 0,
                              "allow_backorder": allow_backorder}

    def stock(self, sku: str) -> tuple[int, int]:
        return self.products[sku]["on_hand"], self.products[sku]["reserved"]

    def lock_products(self, cur, skus):
        return {sku: dict(self.products[sku]) for sku in skus if sku in self.products}

    def move_stock(self, cur, changes) -> None:
        for sku, on_hand_delta, reserved_delta in sorted(changes):
            product = self.products[sku]
            on_hand, reserved = product["on_hand"] + on_hand_delta, product["reserved"] + reserved_delta
            if reserved < 0 or (not product["allow_backorder"]
                                and (on_hand < 0 or on_hand - reserved < 0)):
                raise psycopg2.errors.CheckViolation(f"products check violated for {sku}")
            product["on_hand"], product["reserved"] = on_hand, reserved

    def lock_order_key(self, cur, order_id) -> None:
        pass  # one thread: nothing to serialize

    def get_reservation(self, cur, order_id, lock=False):
        return copy.deepcopy(self.reservations.get(uuid.UUID(str(order_id))))

    def insert_reservation(self, cur, order_id, lines_hash, currency, total, requested_by, ttl_s,
                           lines):
        if order_id in self.reservations:
            return None  # ON CONFLICT (order_id) DO NOTHING
        self.reservations[order_id] = {
            "order_id": order_id, "lines_hash": lines_hash, "currency": currency, "total": total,
            "requested_by": requested_by, "status": "HELD", "release_reason": None,
            "expires_at": self.clock.now + timedelta(seconds=ttl_s),
            "lines": [dict(line) for line in lines]}
        return copy.deepcopy(self.reservations[order_id])

    def set_reservation_status(self, cur, order_id, status, release_reason=None) -> None:
        reservation = self.reservations[uuid.UUID(str(order_id))]
        reservation.update(status=str(status), release_reason=release_reason,
                           expires_at=reservation["expires_at"] if str(status) == "HELD" else None)

    def hold_again(self, cur, order_id, ttl_s) -> None:
        self.reservations[order_id].update(status="HELD", release_reason=None,
                                           expires_at=self.clock.now + timedelta(seconds=ttl_s))

    def claim_expired(self, cur, limit):
        expired = [r for r in self.reservations.values()
                   if r["status"] == "HELD" and r["expires_at"] <= self.clock.now]
        return copy.deepcopy(expired[:limit])


# --- delivery -------------------------------------------------------------------------------
class DeliveryRepository:
    """services/delivery/repository.py's shipments, their history and cancel tombstones."""

    def __init__(self) -> None:
        self.shipments: dict[uuid.UUID, dict] = {}
        self.history: list[dict] = []
        self.tombstones: dict[uuid.UUID, str | None] = {}

    def lock_order_key(self, cur, order_id) -> None:
        pass  # one thread: nothing to serialize

    def is_cancelled(self, cur, order_id) -> bool:
        return uuid.UUID(str(order_id)) in self.tombstones

    def record_cancel_tombstone(self, cur, order_id, reason) -> None:
        self.tombstones.setdefault(uuid.UUID(str(order_id)), reason)

    def insert_shipment(self, cur, shipment_id, order_id, customer_id, carrier, tracking_number,
                        address) -> bool:
        order_id = uuid.UUID(str(order_id))
        if any(s["order_id"] == order_id for s in self.shipments.values()):
            return False  # order_id is UNIQUE: ON CONFLICT DO NOTHING
        self.shipments[shipment_id] = {
            "id": shipment_id, "order_id": order_id, "customer_id": customer_id,
            "carrier": carrier, "tracking_number": tracking_number, "status": "CREATED",
            "shipping_address": address}
        return True

    def add_event(self, cur, shipment_id, status, previous_status, source, occurred_at=None,
                  location=None, note=None) -> None:
        self.history.append({"shipment_id": shipment_id, "status": str(status),
                             "previous_status": None if previous_status is None else str(previous_status),
                             "source": source, "location": location, "note": note})

    def lock_shipment(self, cur, shipment_id):
        return copy.deepcopy(self.shipments.get(shipment_id))

    def get_shipment(self, cur, shipment_id):
        return copy.deepcopy(self.shipments.get(shipment_id))

    def lock_shipment_by_order(self, cur, order_id):
        order_id = uuid.UUID(str(order_id))
        return next((copy.deepcopy(s) for s in self.shipments.values() if s["order_id"] == order_id),
                    None)

    def set_status(self, cur, shipment_id, status) -> None:
        self.shipments[shipment_id]["status"] = str(status)
