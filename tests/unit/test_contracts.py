"""The event contracts (shared/contracts.py): registry, producer check, consumers' loaders.

The consumers are the real handlers, called without a database: each loads
``event.data`` before anything else, so a body missing a field it relies on
must raise ValidationError (dead-lettered by the consumer) before the handler
would touch the cursor; a body it accepts reaches the cursor (None here) and
fails differently, which these tests would report.
"""

from __future__ import annotations

import copy
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from marshmallow import ValidationError

from services.delivery import handlers as delivery
from services.delivery.domain import EVENT_TYPES as SHIPMENT_EVENT_TYPES
from services.delivery.domain import ShipmentStatus
from services.inventory import reservations as inventory
from services.inventory import restock
from services.notification import consumers as notification
from services.order import handlers as order
from services.order import lifecycle
from services.order.domain import OrderStatus
from services.payment import handlers as payment
from shared.contracts import (
    DELIVERY_EVENT_TYPES,
    EVENT_DATA_SCHEMAS,
    ContractViolation,
    event_data,
    load_data,
)
from shared.messaging.envelope import Envelope
from shared.queues import TOPOLOGY
from shared.schemas import required_fields

ORDER_ID = str(uuid.uuid4())
ADDRESS = {"name": "Ada Lovelace", "line1": "1 Main St", "line2": None, "city": "Berlin",
           "region": None, "postal_code": "10115", "country": "DE"}
SHIPMENT = {"shipment_id": str(uuid.uuid4()), "order_id": ORDER_ID, "status": "SHIPPED",
            "carrier": "DHL", "tracking_number": "DHL0123456789AB", "location": None,
            "occurred_at": "2026-11-24T10:00:00+00:00"}
# One event of each type with every field its producer writes.
EXAMPLES = {
    "order.created": {
        "order_id": ORDER_ID, "customer_id": "customer-1", "customer_email": "ada@example.com",
        "currency": "EUR", "total": "21.48",
        "lines": [{"sku": "SKU-1", "quantity": 2, "unit_price": "9.99", "line_total": "19.98"},
                  {"sku": "SKU-2", "quantity": 3, "unit_price": "0.50", "line_total": "1.50"}],
        "shipping_address": ADDRESS, "created_at": "2026-11-24T10:00:00.123456+00:00"},
    "order.cancelled": {"order_id": ORDER_ID, "customer_id": "customer-1", "reason": None},
    "order.status_changed": {"order_id": ORDER_ID, "customer_id": "customer-1",
                             "previous_status": "PENDING_SHIPMENT", "status": "SHIPPED",
                             "cause": "delivery.shipped", "carrier": "DHL",
                             "tracking_number": "DHL0123456789AB"},
    **{event_type: dict(SHIPMENT) for event_type in DELIVERY_EVENT_TYPES},
    "webhook.delivery_requested": {"delivery_id": str(uuid.uuid4()), "token": str(uuid.uuid4())},
    "order.paid": {"order_id": ORDER_ID, "customer_id": "customer-1", "currency": "EUR",
                   "total": "21.48", "shipping_address": ADDRESS,
                   "paid_at": "2026-11-24T10:05:00+00:00"},
    "payment.authorized": {"order_id": ORDER_ID, "payment_intent_id": "pi_123", "currency": "EUR",
                           "amount_minor": 2148, "authorized_at": "2026-11-24T10:05:00+00:00"},
    "payment.refunded": {"refund_id": str(uuid.uuid4()), "order_id": ORDER_ID, "currency": "EUR",
                         "amount_minor": 999, "lines": [{"sku": "SKU-1", "quantity": 1}],
                         "refunded_at": "2026-11-24T11:00:00+00:00"},
}


def example(event_type: str, *, drop: str | None = None, **changes) -> dict:
    """A deep copy of the example with ``changes``; ``drop`` removes a (dotted) field."""
    data = copy.deepcopy(EXAMPLES[event_type])
    data.update(changes)
    return data if drop is None else without(data, drop)


def without(data: dict, dotted: str) -> dict:
    """A deep copy of ``data`` without the field at ``dotted`` (list items by index)."""
    data = copy.deepcopy(data)
    *parents, last = dotted.split(".")
    target = data
    for part in parents:
        target = target[int(part)] if part.isdigit() else target[part]
    del target[last]
    return data


def present(data: dict, dotted: str) -> bool:
    *parents, last = dotted.split(".")
    for part in parents:
        data = data[int(part)] if part.isdigit() else data[part]
    return last in data


def envelope(event_type: str, data: dict) -> Envelope:
    return Envelope(event_type=event_type, aggregate_id=ORDER_ID, data=data,
                    producer="test-producer")


# --- the registry ------------------------------------------------------------------------------
def test_every_event_type_of_the_queues_has_a_contract_and_no_other_does():
    routed = {event_type for spec in TOPOLOGY for event_type in spec.event_types}
    assert set(EVENT_DATA_SCHEMAS) == routed


def test_the_delivery_types_are_the_delivery_services_shipment_events():
    assert set(DELIVERY_EVENT_TYPES) == set(SHIPMENT_EVENT_TYPES.values())


@pytest.mark.parametrize("event_type", sorted(EVENT_DATA_SCHEMAS))
def test_each_contract_says_who_produces_and_who_consumes_it(event_type):
    doc = EVENT_DATA_SCHEMAS[event_type].__doc__ or ""
    assert "Produced" in doc and "onsumed by" in doc, event_type


# --- producers: event_data ---------------------------------------------------------------------
@pytest.mark.parametrize("event_type", sorted(EXAMPLES))
def test_a_complete_emission_passes_unchanged(event_type):
    data = example(event_type)
    assert event_data(event_type, data) is data
    assert data == EXAMPLES[event_type]  # validating changed nothing


REQUIRED = [(event_type, path) for event_type in sorted(EXAMPLES)
            for path in required_fields(EVENT_DATA_SCHEMAS[event_type]())
            if "." not in path]


@pytest.mark.parametrize(("event_type", "field"), REQUIRED)
def test_an_emission_missing_a_required_field_is_a_contract_violation(event_type, field):
    with pytest.raises(ContractViolation, match=field):
        event_data(event_type, example(event_type, drop=field))


@pytest.mark.parametrize(("event_type", "dotted"), [
    ("order.created", "lines.0.unit_price"),
    ("order.created", "shipping_address.city"),
    ("order.created", "shipping_address.line2"),  # null allowed, absence is not
])
def test_an_emission_missing_a_nested_required_field_is_a_contract_violation(event_type, dotted):
    with pytest.raises(ContractViolation, match=dotted.rsplit(".", 1)[-1]):
        event_data(event_type, example(event_type, drop=dotted))


@pytest.mark.parametrize(("event_type", "changes"), [
    ("order.created", {"order_id": "not-a-uuid"}),
    ("order.created", {"total": 21.48}),
    ("order.created", {"created_at": "2026-11-24T10:00:00"}),  # no zone
    ("order.created", {"customer_id": "c" * 129}),
    ("order.created", {"lines": [{"sku": "SKU-1", "quantity": "two", "unit_price": "1.00",
                                  "line_total": "2.00"}]}),
    ("order.status_changed", {"status": None}),
    ("delivery.shipped", {"occurred_at": "yesterday"}),
    ("webhook.delivery_requested", {"token": 42}),
], ids=["order-id", "float-total", "naive-created-at", "long-customer", "line-quantity",
        "null-status", "occurred-at", "token"])
def test_an_emission_with_a_wrong_type_is_a_contract_violation(event_type, changes):
    with pytest.raises(ContractViolation):
        event_data(event_type, example(event_type, **changes))


@pytest.mark.parametrize(("event_type", "data", "path"), [
    ("order.cancelled", example("order.cancelled", refund="full"), "refund"),
    ("order.created", example("order.created", shipping_address={**ADDRESS, "phone": "1"}),
     "shipping_address.phone"),
    ("order.created", example("order.created", lines=[
        {**EXAMPLES["order.created"]["lines"][0], "discount": "0.10"}]), "lines.0.discount"),
], ids=["top-level", "address", "line"])
def test_a_field_the_contract_does_not_declare_is_a_contract_violation(event_type, data, path):
    with pytest.raises(ContractViolation, match=path.replace(".", r"\.")):
        event_data(event_type, data)


def test_nullable_fields_may_be_null_and_optional_ones_absent():
    event_data("order.cancelled", example("order.cancelled", reason=None))
    event_data("order.status_changed", example("order.status_changed", drop="carrier"))
    event_data("delivery.delivered", example("delivery.delivered", location=None))


def test_a_producer_bug_fails_in_the_producer():
    placed = {"id": uuid.UUID(ORDER_ID), "customer_id": "customer-1"}
    lifecycle.status_data(placed, OrderStatus.PENDING_SHIPMENT, OrderStatus.CANCELLED,
                       "order.cancelled")
    with pytest.raises(ContractViolation, match="eta"):
        lifecycle.status_data(placed, OrderStatus.SHIPPED, OrderStatus.DELIVERED,
                           "delivery.delivered", eta="tomorrow")
    shipment = {"id": uuid.uuid4(), "order_id": ORDER_ID, "status": ShipmentStatus.SHIPPED,
                "carrier": "DHL", "tracking_number": "DHL0123456789AB"}
    delivery._event_data("delivery.shipped", shipment, datetime.now(UTC), "Berlin")
    with pytest.raises(ContractViolation, match="occurred_at"):
        delivery._event_data("delivery.shipped", shipment, datetime.now())  # noqa: DTZ005


def test_the_order_created_the_order_service_builds_matches_its_contract():
    row = {"id": uuid.UUID(ORDER_ID), "customer_id": "customer-1",
           "customer_email": "ada@example.com", "currency": "EUR", "total": Decimal("19.98"),
           "lines": [{"sku": "SKU-1", "quantity": 2, "unit_price": Decimal("9.99"),
                      "line_total": Decimal("19.98")}],
           "shipping_address": ADDRESS, "created_at": datetime.now(UTC)}
    data = lifecycle.created_data(row)
    assert load_data("order.created", data)["lines"][0]["unit_price"] == Decimal("9.99")


# --- consumers: load_data ----------------------------------------------------------------------
def _notify(cur, event):
    return notification.OrderEventHandler(settings=None)(cur, event)


def _deliver_webhook(cur, event):
    return notification.WebhookDeliverer(settings=None, sender=None)(cur, event)


# (consumer, event type, a field it cannot do without): what each consumer relied on before
# the contracts existed, written out here rather than read from the modules.
_pay = payment.order_event_handler(gateway=None)

RELIED_ON = [
    (delivery.on_order_paid, "order.paid", "order_id"),
    (delivery.on_order_paid, "order.paid", "customer_id"),
    (delivery.on_order_paid, "order.paid", "shipping_address"),
    (order.on_payment_event, "payment.authorized", "order_id"),
    (restock.on_payment_refunded, "payment.refunded", "refund_id"),
    (restock.on_payment_refunded, "payment.refunded", "order_id"),
    (restock.on_payment_refunded, "payment.refunded", "lines"),
    (restock.on_payment_refunded, "payment.refunded", "lines.0.sku"),
    (restock.on_payment_refunded, "payment.refunded", "lines.0.quantity"),
    (_pay, "order.status_changed", "order_id"),
    (_pay, "order.status_changed", "status"),
    (_pay, "order.cancelled", "order_id"),
    (delivery.on_order_cancelled, "order.cancelled", "order_id"),
    (inventory.on_order_created, "order.created", "order_id"),
    (inventory.on_order_created, "order.created", "lines.0.sku"),
    (inventory.on_order_created, "order.created", "lines.1.quantity"),
    (inventory.on_order_cancelled, "order.cancelled", "order_id"),
    *[(order.on_delivery_event, event_type, field) for event_type in DELIVERY_EVENT_TYPES
      for field in ("shipment_id", "order_id", "status", "occurred_at")],
    *[(_notify, event_type, field)
      for event_type in ("order.created", "order.status_changed", "order.cancelled")
      for field in ("order_id", "customer_id")],
    (_deliver_webhook, "webhook.delivery_requested", "delivery_id"),
    (_deliver_webhook, "webhook.delivery_requested", "token"),
]


CONSUMER_NAMES = {delivery.on_order_paid: "delivery", delivery.on_order_cancelled: "delivery",
                  order.on_payment_event: "order", restock.on_payment_refunded: "inventory",
                  _pay: "payment",
                  inventory.on_order_created: "inventory",
                  inventory.on_order_cancelled: "inventory", order.on_delivery_event: "order",
                  _notify: "notification", _deliver_webhook: "notification"}


@pytest.mark.parametrize(("handler", "event_type", "field"), RELIED_ON,
                         ids=[f"{CONSUMER_NAMES[h]}-{t}-{f}" for h, t, f in RELIED_ON])
def test_a_consumer_rejects_a_body_missing_a_field_it_relies_on(handler, event_type, field):
    with pytest.raises(ValidationError) as raised:
        handler(None, envelope(event_type, example(event_type, drop=field)))
    assert field.split(".")[0] in raised.value.messages


# What each consumer did without before the contracts existed; the shared schema keeps that.
TOLERATED = [
    ("order.paid", delivery.ORDER_PAID_NEEDS, ("currency", "total", "paid_at")),
    ("payment.authorized", order.PAYMENT_AUTHORIZED_NEEDS, ("payment_intent_id", "amount_minor",
                                                            "currency", "authorized_at")),
    ("payment.refunded", restock.REFUNDED_NEEDS, ("currency", "amount_minor", "refunded_at")),
    ("order.cancelled", payment.ORDER_EVENT_NEEDS["order.cancelled"], ("customer_id", "reason")),
    ("order.cancelled", delivery.ORDER_CANCELLED_NEEDS, ("customer_id", "reason")),
    ("order.created", inventory.ORDER_CREATED_NEEDS, ("lines", "shipping_address", "total")),
    ("order.created", inventory.ORDER_CREATED_NEEDS, ("lines.0.unit_price",
                                                      "lines.1.line_total")),
    ("order.cancelled", inventory.ORDER_CANCELLED_NEEDS, ("customer_id", "reason")),
    ("delivery.shipped", order.DELIVERY_EVENT_NEEDS, ("carrier", "tracking_number", "location")),
    ("order.created", notification.ORDER_EVENT_NEEDS, ("customer_email", "lines", "total",
                                                       "currency", "shipping_address")),
    ("order.status_changed", notification.ORDER_EVENT_NEEDS, ("previous_status", "status",
                                                              "cause")),
    ("order.cancelled", notification.ORDER_EVENT_NEEDS, ("reason",)),
]


@pytest.mark.parametrize(("event_type", "needs", "absent"), TOLERATED)
def test_a_consumer_accepts_a_body_without_the_fields_it_does_not_rely_on(event_type, needs,
                                                                         absent):
    data = example(event_type)
    for dotted in sorted(absent, reverse=True):  # deeper paths before their parents
        data = without(data, dotted)
    loaded = load_data(event_type, data, needs)
    assert loaded["order_id"] == uuid.UUID(ORDER_ID)
    assert not any(present(loaded, dotted) for dotted in absent)


def test_consumers_ignore_fields_the_contract_does_not_declare_at_every_level():
    data = example("order.created", gift_wrap=True,
                   shipping_address={**ADDRESS, "phone": "+49 30 1234"})
    data["lines"][0]["discount"] = "0.10"
    loaded = load_data("order.created", data, inventory.ORDER_CREATED_NEEDS)
    assert "gift_wrap" not in loaded and "phone" not in loaded["shipping_address"]
    assert "discount" not in loaded["lines"][0]


def test_a_field_present_with_a_wrong_type_is_rejected_even_when_not_relied_on():
    with pytest.raises(ValidationError) as raised:
        load_data("order.created", example("order.created", shipping_address="Berlin"),
                  inventory.ORDER_CREATED_NEEDS)
    assert "shipping_address" in raised.value.messages


def test_loading_converts_to_the_declared_types():
    loaded = load_data("delivery.shipped", example("delivery.shipped"))
    assert loaded["order_id"] == uuid.UUID(ORDER_ID)
    assert loaded["occurred_at"] == datetime(2026, 11, 24, 10, tzinfo=UTC)


def test_an_event_type_without_a_contract_is_invalid_data():
    with pytest.raises(ValidationError):
        load_data("order.exploded", {"order_id": ORDER_ID})


def test_relying_on_a_field_the_contract_does_not_require_is_a_bug():
    with pytest.raises(ValueError, match="carrier"):
        load_data("order.status_changed", example("order.status_changed"), ("order_id", "carrier"))
    with pytest.raises(ValueError, match="colour"):
        load_data("order.created", example("order.created"), ("order_id", "colour"))
