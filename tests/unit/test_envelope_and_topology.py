"""The message envelope and the queue topology (no I/O)."""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, replace
from datetime import datetime

import pytest

from services.delivery.domain import EVENT_TYPES, ShipmentStatus
from services.order import handlers as order_handlers
from services.order.settings import load as load_order
from services.order.worker import build_plan as order_plan
from shared.messaging.envelope import Envelope, InvalidEnvelope
from shared.messaging.sqs import physical_name
from shared.messaging.topology import DEFAULT_MAX_RECEIVE_COUNT, QueueSpec
from shared.queues import QUEUES, all_queue_names, consumed_by, queue, routes_for

# Every event each producer emits today, written out here rather than read from the code
# (order: handlers.py; delivery: one per shipment status, domain.EVENT_TYPES).
EMITTED = {
    "order": ("order.created", "order.cancelled", "order.status_changed", "order.paid"),
    "payment": ("payment.authorized", "payment.refunded"),
    "delivery": ("delivery.shipment_created", "delivery.shipped", "delivery.in_transit",
                 "delivery.out_for_delivery", "delivery.delivered", "delivery.failed",
                 "delivery.shipment_cancelled"),
}
# SQS: a queue name is at most 80 characters (".fifo" included).
MAX_QUEUE_NAME_CHARS = 80


def envelope(**changes) -> Envelope:
    base = Envelope(event_type="order.created", aggregate_id=str(uuid.uuid4()),
                    data={"order_id": "o-1", "lines": [{"sku": "A", "quantity": 1}], "total": "9.99"},
                    producer="order-service", correlation_id="req-1")
    return replace(base, **changes)


def raw(**changes) -> dict:
    body = json.loads(envelope().to_json())
    body.update(changes)
    return body


# --- envelope --------------------------------------------------------------------------------
def test_round_trip_keeps_every_field():
    original = envelope(causation_id=str(uuid.uuid4()), event_version=2)
    parsed = Envelope.from_json(original.to_json())
    assert parsed == original
    assert asdict(parsed) == asdict(original)


def test_defaults_are_a_fresh_uuid_and_an_aware_utc_timestamp():
    first, second = envelope(), envelope()
    assert first.event_id != second.event_id
    uuid.UUID(first.event_id)
    assert first.occurred_at.endswith("Z")
    assert datetime.fromisoformat(first.occurred_at).utcoffset().total_seconds() == 0
    assert first.event_version == 1
    assert first.causation_id is None


def test_body_is_compact_json_with_exactly_the_contract_fields():
    body = json.loads(envelope().to_json())
    assert set(body) == {"event_id", "event_type", "event_version", "occurred_at", "producer",
                         "correlation_id", "causation_id", "aggregate_id", "data"}


def test_caused_event_keeps_correlation_and_points_at_its_cause():
    cause = envelope()
    effect = cause.caused("delivery.shipment_created", cause.aggregate_id, {"x": 1}, "delivery-service")
    assert effect.correlation_id == cause.correlation_id
    assert effect.causation_id == cause.event_id
    assert effect.event_id != cause.event_id
    assert (effect.event_type, effect.producer, effect.data) == (
        "delivery.shipment_created", "delivery-service", {"x": 1})


INVALID_BODIES = {
    "not-json": "{not json",
    "json-list": json.dumps([raw()]),
    "json-string": json.dumps("order.created"),
    "missing-event-id": json.dumps({k: v for k, v in raw().items() if k != "event_id"}),
    "missing-data": json.dumps({k: v for k, v in raw().items() if k != "data"}),
    "event-id-not-uuid": json.dumps(raw(event_id="42")),
    "version-zero": json.dumps(raw(event_version=0)),
    "version-as-string": json.dumps(raw(event_version="1")),
    "naive-occurred-at": json.dumps(raw(occurred_at="2026-11-24T10:00:00")),
    "empty-event-type": json.dumps(raw(event_type="")),
    "empty-aggregate-id": json.dumps(raw(aggregate_id="")),
    "data-not-object": json.dumps(raw(data=[1, 2])),
    "causation-not-uuid": json.dumps(raw(causation_id="the-order")),
    "unknown-key": json.dumps(raw(priority="high")),
    "null-producer": json.dumps(raw(producer=None)),
}


@pytest.mark.parametrize("body", list(INVALID_BODIES.values()), ids=list(INVALID_BODIES))
def test_invalid_envelopes_are_rejected(body):
    with pytest.raises(InvalidEnvelope):
        Envelope.from_json(body)


def test_null_correlation_and_causation_are_valid():
    parsed = Envelope.from_json(json.dumps(raw(correlation_id=None, causation_id=None)))
    assert parsed.correlation_id is None and parsed.causation_id is None


# --- topology --------------------------------------------------------------------------------
def test_queue_names_are_unique_and_fifo_queues_end_in_fifo():
    names = all_queue_names()
    assert len(names) == len(set(names)) == 2 * len(QUEUES)
    for spec in QUEUES:
        assert spec.fifo == spec.name.endswith(".fifo")
        assert len(spec.name) <= MAX_QUEUE_NAME_CHARS


def test_dead_letter_queue_names():
    assert queue("order-paid.fifo").dlq_name == "order-paid-dlq.fifo"
    assert queue("delivery-status.fifo").dlq_name == "delivery-status-dlq.fifo"
    standard = QueueSpec(name="webhook-delivery", producer="notification", consumers=("notification",),
                         event_types=("webhook.requested",), fifo=False)
    assert standard.dlq_name == "webhook-delivery-dlq"
    for spec in QUEUES:
        # A FIFO queue's DLQ must itself be FIFO.
        assert spec.dlq_name.endswith(".fifo") == spec.fifo


def test_dead_letter_queues_come_first():
    names = all_queue_names()
    dlqs = {spec.dlq_name for spec in QUEUES}
    assert set(names[:len(QUEUES)]) == dlqs
    assert set(names[len(QUEUES):]) == {spec.name for spec in QUEUES}


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"name": "orders", "fifo": True}, "end in .fifo"),
    ({"name": "orders.fifo", "fifo": False}, "end in .fifo"),
    ({"name": "orders.fifo", "max_receive_count": 0}, "maxReceiveCount"),
    ({"name": "orders.fifo", "max_receive_count": 1001}, "maxReceiveCount"),
])
def test_invalid_queue_specs_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        QueueSpec(producer="order", consumers=("delivery",), event_types=("x.y",), **kwargs)


@pytest.mark.parametrize(("producer", "event_type"),
                         [(p, e) for p, events in EMITTED.items() for e in events])
def test_every_emitted_event_type_is_routed_to_a_consumed_queue(producer, event_type):
    specs = routes_for(producer, event_type)
    assert specs, f"{event_type} from {producer} goes nowhere"
    for spec in specs:
        assert spec.producer == producer
        assert event_type in spec.event_types
        assert spec.consumers, f"{spec.name} has nobody consuming it"


def test_order_events_fan_out_to_their_own_queue_and_the_status_stream():
    # order.created no longer reaches delivery: an order ships once it is paid (order.paid).
    assert [s.name for s in routes_for("order", "order.created")] == [
        "order-status.fifo", "inventory-events.fifo"]
    assert [s.name for s in routes_for("order", "order.paid")] == ["order-paid.fifo"]
    assert [s.name for s in routes_for("order", "order.cancelled")] == [
        "order-cancelled.fifo", "order-status.fifo", "inventory-events.fifo", "order-payments.fifo"]
    assert [s.name for s in routes_for("order", "order.status_changed")] == [
        "order-status.fifo", "order-payments.fifo"]
    assert [s.name for s in routes_for("payment", "payment.authorized")] == ["payment-events.fifo"]
    assert [s.name for s in routes_for("payment", "payment.refunded")] == ["payment-refunds.fifo"]


def test_routes_for_unknown_event_or_wrong_producer_is_empty():
    assert routes_for("order", "order.teleported") == []
    # Only the owning producer publishes to a queue.
    assert routes_for("delivery", "order.created") == []
    assert routes_for("order", "delivery.shipped") == []


def test_spec_defaults():
    spec = QueueSpec(name="x.fifo", producer="order", consumers=("delivery",), event_types=("x.y",))
    assert spec.max_receive_count == DEFAULT_MAX_RECEIVE_COUNT == 5
    assert spec.fifo


def test_queue_lookup_and_consumers():
    with pytest.raises(KeyError):
        queue("no-such-queue.fifo")
    assert {spec.name for spec in consumed_by("delivery")} == {"order-paid.fifo",
                                                                "order-cancelled.fifo"}
    assert {spec.name for spec in consumed_by("order")} == {"delivery-status.fifo",
                                                             "payment-events.fifo"}
    assert {spec.name for spec in consumed_by("payment")} == {"order-payments.fifo"}
    assert {spec.name for spec in consumed_by("notification")} == {"order-status.fifo",
                                                                    "webhook-delivery"}
    assert {spec.name for spec in consumed_by("inventory")} == {"inventory-events.fifo",
                                                                 "payment-refunds.fifo"}


def test_each_event_type_has_one_producer():
    # An event may fan out to several queues, but only ever from the service that owns it.
    seen: dict[str, str] = {}
    for spec in QUEUES:
        assert 1 <= spec.max_receive_count <= 1000
        for event_type in spec.event_types:
            assert seen.setdefault(event_type, spec.producer) == spec.producer, \
                f"{event_type} produced by {seen[event_type]} and {spec.producer}"


def test_delivery_emits_one_event_type_per_shipment_status():
    # The code's own table against the list written above: a status added without an
    # event type (or renamed) fails here.
    assert {status.value for status in ShipmentStatus} == set(EVENT_TYPES)
    assert sorted(EVENT_TYPES.values()) == sorted(EMITTED["delivery"])


def test_order_worker_handles_every_delivery_event_with_on_delivery_event():
    plan = order_plan(None, *load_order({"DATABASE_URL": "postgresql://unused/db"}))
    assert [spec.name for spec in plan.consumers] == ["delivery-status.fifo", "payment-events.fifo"]
    assert plan.consumers[queue("payment-events.fifo")] == {
        "payment.authorized": order_handlers.on_payment_event}
    handlers = plan.consumers[queue("delivery-status.fifo")]
    # Literal expectations: a type the topology routes here but the plan forgets, or a
    # handler swapped for another, fails (tests/unit/test_handlers.py runs them).
    assert handlers == dict.fromkeys(EMITTED["delivery"], order_handlers.on_delivery_event)
    assert set(queue("delivery-status.fifo").event_types) == set(EMITTED["delivery"])
    assert plan.relay is True  # order publishes its own events


def test_physical_names_carry_the_environment_prefix():
    assert physical_name("", "order-paid.fifo") == "order-paid.fifo"
    assert physical_name("staging-", "order-paid.fifo") == "staging-order-paid.fifo"
