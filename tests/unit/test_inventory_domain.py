"""Inventory stock rules, reservation fingerprints and the worker plan (no I/O)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.inventory import reservations, restock
from services.inventory.domain import (
    RequestedLine,
    Shortage,
    StockStatus,
    StockWouldGoNegative,
    adjusted_on_hand,
    can_take,
    line_total,
    lines_fingerprint,
    lock_order,
    shortages,
    stock_status,
)
from services.inventory.settings import load
from services.inventory.worker import EVENTS_QUEUE, build_plan
from shared.queues import queue


@pytest.mark.parametrize(("on_hand", "reserved", "backorder", "expected"), [
    (5, 0, False, StockStatus.INSTOCK),
    (5, 4, False, StockStatus.INSTOCK),
    (5, 5, False, StockStatus.OUTOFSTOCK),
    (0, 0, False, StockStatus.OUTOFSTOCK),
    (0, 0, True, StockStatus.ONBACKORDER),
    (-3, 2, True, StockStatus.ONBACKORDER),
    (9, 2, True, StockStatus.INSTOCK),
])
def test_stock_status(on_hand, reserved, backorder, expected):
    assert stock_status(on_hand, reserved, backorder) == expected


def test_can_take_only_what_is_available_unless_backorders():
    assert can_take(5, 2, False, 3)
    assert not can_take(5, 2, False, 4)
    assert can_take(0, 0, True, 100)


def test_adjustment_never_uncovers_held_units_without_backorders():
    assert adjusted_on_hand(5, 2, False, -3) == 2
    with pytest.raises(StockWouldGoNegative):
        adjusted_on_hand(5, 2, False, -4)
    with pytest.raises(StockWouldGoNegative):
        adjusted_on_hand(0, 0, False, -1)
    assert adjusted_on_hand(0, 0, True, -1) == -1


def test_shortages_list_each_short_line_in_request_order_with_what_is_available():
    products = {"A": {"on_hand": 5, "reserved": 1, "allow_backorder": False},
                "B": {"on_hand": 2, "reserved": 3, "allow_backorder": True},
                "C": {"on_hand": 0, "reserved": 0, "allow_backorder": False}}
    lines = [RequestedLine("C", 1), RequestedLine("B", 7), RequestedLine("A", 5)]
    assert shortages(products, lines) == [Shortage("C", 1, 0), Shortage("A", 5, 4)]


def test_fingerprint_ignores_line_order_but_not_quantities():
    a = [RequestedLine("A", 1), RequestedLine("B", 2)]
    assert lines_fingerprint(a) == lines_fingerprint(list(reversed(a)))
    assert lines_fingerprint(a) != lines_fingerprint([RequestedLine("A", 1), RequestedLine("B", 3)])
    assert lines_fingerprint([RequestedLine("A", 12)]) != lines_fingerprint(
        [RequestedLine("A", 1), RequestedLine("2", 1)])


def test_products_are_locked_in_one_global_order():
    assert lock_order([RequestedLine("b", 1), RequestedLine("A", 1), RequestedLine("a", 1)]) == [
        "A", "a", "b"]


def test_line_total_is_exact():
    assert line_total(Decimal("0.10"), 3) == Decimal("0.30")
    assert line_total(Decimal("14.50"), 2) == Decimal("29.00")


def test_worker_confirms_on_created_releases_on_cancelled_and_sweeps():
    plan = build_plan(None, *load({"DATABASE_URL": "postgresql://unused/db"}))
    assert [spec.name for spec in plan.consumers] == ["inventory-events.fifo", "payment-refunds.fifo"]
    assert plan.consumers[queue("payment-refunds.fifo")] == {
        "payment.refunded": restock.on_payment_refunded}
    # Written out, not read from the topology: a type routed here without a handler, or
    # the two handlers swapped, fails (tests/unit/test_handlers.py runs them on fakes).
    assert plan.consumers[queue(EVENTS_QUEUE)] == {
        "order.created": reservations.on_order_created,
        "order.cancelled": reservations.on_order_cancelled}
    assert set(queue(EVENTS_QUEUE).event_types) == {"order.created", "order.cancelled"}
    assert plan.relay is False  # inventory publishes nothing
    assert len(plan.tasks) == 1
