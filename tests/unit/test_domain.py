"""Order and shipment state machines and the delivery -> order mapping (no I/O)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.delivery import domain as delivery
from services.delivery.domain import ShipmentStatus as S
from services.order.domain import (
    ALLOWED_TRANSITIONS,
    CANCELLABLE,
    DELIVERY_TO_ORDER_STATUS,
    Line,
    OrderStatus,
    can_transition,
    decide,
    order_total,
)
from shared.queues import queue

Os = OrderStatus
TERMINAL_ORDER_STATUSES = (Os.DELIVERED, Os.CANCELLED, Os.DELIVERY_FAILED)


# --- orders --------------------------------------------------------------------------------
@pytest.mark.parametrize(("current", "target"), [
    (Os.PENDING_SHIPMENT, Os.SHIPPED),
    (Os.PENDING_SHIPMENT, Os.CANCELLED),
    (Os.PENDING_SHIPMENT, Os.DELIVERY_FAILED),
    (Os.SHIPPED, Os.DELIVERED),
    (Os.SHIPPED, Os.DELIVERY_FAILED),
])
def test_allowed_order_transitions(current, target):
    assert can_transition(current, target)


@pytest.mark.parametrize(("current", "target"), [
    (Os.PENDING_SHIPMENT, Os.DELIVERED),   # never delivered without shipping
    (Os.SHIPPED, Os.CANCELLED),            # too late to cancel
    (Os.SHIPPED, Os.PENDING_SHIPMENT),
    (Os.DELIVERED, Os.SHIPPED),
    (Os.CANCELLED, Os.PENDING_SHIPMENT),
    (Os.DELIVERY_FAILED, Os.DELIVERED),
])
def test_forbidden_order_transitions(current, target):
    assert not can_transition(current, target)


def test_terminal_order_statuses_allow_nothing_and_only_pending_is_cancellable():
    for status in TERMINAL_ORDER_STATUSES:
        assert ALLOWED_TRANSITIONS[status] == frozenset()
    # Awaiting payment or shipment: the customer may still change their mind.
    assert CANCELLABLE == {Os.PENDING_PAYMENT, Os.PENDING_SHIPMENT}
    # Only a payment (or a cancel, or the unpaid expiry) moves an order out of PENDING_PAYMENT.
    assert ALLOWED_TRANSITIONS[Os.PENDING_PAYMENT] == {Os.PENDING_SHIPMENT, Os.CANCELLED}
    assert set(ALLOWED_TRANSITIONS) == set(OrderStatus)
    for status, targets in ALLOWED_TRANSITIONS.items():
        assert status not in targets  # a self-loop would hide duplicates as transitions


@pytest.mark.parametrize(("current", "event", "kind", "target"), [
    # the normal path
    (Os.PENDING_SHIPMENT, "delivery.shipment_created", "milestone", Os.PENDING_SHIPMENT),
    (Os.PENDING_SHIPMENT, "delivery.shipped", "transition", Os.SHIPPED),
    (Os.SHIPPED, "delivery.in_transit", "milestone", Os.SHIPPED),
    (Os.SHIPPED, "delivery.out_for_delivery", "milestone", Os.SHIPPED),
    (Os.SHIPPED, "delivery.delivered", "transition", Os.DELIVERED),
    (Os.SHIPPED, "delivery.failed", "transition", Os.DELIVERY_FAILED),
    (Os.PENDING_SHIPMENT, "delivery.failed", "transition", Os.DELIVERY_FAILED),
    (Os.CANCELLED, "delivery.shipment_cancelled", "milestone", Os.CANCELLED),
    # stale and out-of-order events: acknowledged, never applied
    (Os.DELIVERED, "delivery.shipped", "ignored", Os.DELIVERED),
    (Os.DELIVERED, "delivery.in_transit", "ignored", Os.DELIVERED),
    (Os.DELIVERED, "delivery.failed", "ignored", Os.DELIVERED),
    (Os.DELIVERY_FAILED, "delivery.delivered", "ignored", Os.DELIVERY_FAILED),
    (Os.PENDING_SHIPMENT, "delivery.delivered", "ignored", Os.PENDING_SHIPMENT),
    (Os.CANCELLED, "delivery.shipped", "ignored", Os.CANCELLED),
    (Os.CANCELLED, "delivery.delivered", "ignored", Os.CANCELLED),
    (Os.CANCELLED, "delivery.shipment_created", "ignored", Os.CANCELLED),
])
def test_decide(current, event, kind, target):
    decision = decide(current, event)
    assert (decision.kind, decision.target) == (kind, target)
    if kind == "ignored":
        assert event in decision.note


def test_decide_never_leaves_the_allowed_transitions():
    for current in OrderStatus:
        for event in DELIVERY_TO_ORDER_STATUS:
            decision = decide(current, event)
            if decision.kind == "transition":
                assert can_transition(current, decision.target), (current, event)
            else:
                assert decision.target == current, (current, event)


def test_decide_rejects_an_unmapped_event_type():
    with pytest.raises(KeyError):
        decide(Os.PENDING_SHIPMENT, "delivery.teleported")


def test_line_and_order_totals_are_exact_to_the_cent():
    lines = [Line("A", 3, Decimal("0.10")), Line("B", 2, Decimal("19.99")), Line("C", 1, Decimal("0"))]
    assert [line.total for line in lines] == [Decimal("0.30"), Decimal("39.98"), Decimal("0.00")]
    assert order_total(lines) == Decimal("40.28")
    assert str(order_total([])) == "0.00"


# --- shipments -----------------------------------------------------------------------------
@pytest.mark.parametrize(("current", "target", "allowed"), [
    (S.CREATED, S.SHIPPED, True),
    (S.CREATED, S.CANCELLED, True),
    (S.CREATED, S.DELIVERED, False),
    (S.CREATED, S.IN_TRANSIT, False),
    (S.SHIPPED, S.IN_TRANSIT, True),
    (S.SHIPPED, S.DELIVERED, True),
    (S.SHIPPED, S.CANCELLED, False),     # shipped goods cannot be cancelled
    (S.IN_TRANSIT, S.OUT_FOR_DELIVERY, True),
    (S.IN_TRANSIT, S.SHIPPED, False),
    (S.OUT_FOR_DELIVERY, S.FAILED, True),
    (S.OUT_FOR_DELIVERY, S.IN_TRANSIT, False),
    (S.DELIVERED, S.FAILED, False),
    (S.FAILED, S.DELIVERED, False),
    (S.CANCELLED, S.SHIPPED, False),
])
def test_shipment_transitions(current, target, allowed):
    assert delivery.can_transition(current, target) is allowed


def test_shipment_state_machine_is_complete_and_terminal_states_are_final():
    assert set(delivery.ALLOWED_TRANSITIONS) == set(S)
    for status in (S.DELIVERED, S.FAILED, S.CANCELLED):
        assert delivery.ALLOWED_TRANSITIONS[status] == frozenset()
    for status, targets in delivery.ALLOWED_TRANSITIONS.items():
        assert status not in targets


def test_carriers_report_only_carrier_statuses():
    assert S.CREATED not in delivery.CARRIER_STATUSES
    assert S.CANCELLED not in delivery.CARRIER_STATUSES
    # every carrier status is reachable from some status
    reachable = set().union(*delivery.ALLOWED_TRANSITIONS.values())
    assert set(delivery.CARRIER_STATUSES) <= reachable


def test_simulated_path_follows_allowed_transitions_to_delivered():
    status, walked = S.CREATED, [S.CREATED]
    while status in delivery.SIMULATED_PATH:
        following = delivery.SIMULATED_PATH[status]
        assert delivery.can_transition(status, following)
        status = following
        walked.append(status)
        assert len(walked) <= len(S)
    assert status == S.DELIVERED


def test_every_shipment_event_is_routed_and_mapped_for_orders():
    """The delivery events, the queue that carries them and the order mapping agree."""
    assert set(delivery.EVENT_TYPES) == set(S)
    carried = set(queue("delivery-status.fifo").event_types)
    assert set(delivery.EVENT_TYPES.values()) == carried
    assert set(DELIVERY_TO_ORDER_STATUS) == carried


def test_carrier_choice_is_stable_and_tracking_numbers_are_prefixed():
    order_id = "8d1c3f5e-2a43-4c9e-9d3e-1f2a3b4c5d6e"
    carrier = delivery.choose_carrier(order_id)
    assert carrier in delivery.CARRIERS
    assert all(delivery.choose_carrier(order_id) == carrier for _ in range(5))
    spread = {delivery.choose_carrier(f"order-{n}") for n in range(60)}
    assert spread == set(delivery.CARRIERS)
    numbers = {delivery.new_tracking_number("DHL") for _ in range(50)}
    assert len(numbers) == 50
    for number in numbers:
        assert number.startswith("DHL") and len(number) == len("DHL") + 12
        # no I or O: they read as 1 and 0 over the phone
        assert set(number[3:]) <= set("0123456789ABCDEFGHJKLMNPQRSTUVWXYZ")


def test_a_repeated_defining_event_is_recorded_as_ignored_not_as_a_milestone():
    from services.order.domain import OrderStatus, decide

    assert decide(OrderStatus.DELIVERED, "delivery.delivered").kind == "ignored"
    assert decide(OrderStatus.SHIPPED, "delivery.shipped").kind == "ignored"
    assert decide(OrderStatus.DELIVERY_FAILED, "delivery.failed").kind == "ignored"
    # progress inside SHIPPED is a milestone, applied
    assert decide(OrderStatus.SHIPPED, "delivery.in_transit").kind == "milestone"
    assert decide(OrderStatus.SHIPPED, "delivery.out_for_delivery").kind == "milestone"
