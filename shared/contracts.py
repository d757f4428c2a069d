"""Event contracts: the one schema of each event type's ``data``, shared by producer and consumers.

:data:`EVENT_DATA_SCHEMAS` maps every event type of the platform's queues
(``shared/queues.py``) to the marshmallow schema of its ``data``. Both sides
go through this module:

* a producer passes the ``data`` it builds through :func:`event_data` before
  ``add_event``: a missing required field, a wrong type or a field the
  contract does not declare raises :class:`ContractViolation`, so a producer
  bug fails in its own transaction (and in the tests), never on a queue;
* a consumer loads ``event.data`` with :func:`load_data`, naming the fields it
  relies on; a :class:`~marshmallow.ValidationError` is a permanent failure
  (the consumer dead-letters the message, as for any invalid data).

What ``required`` means here: the producer emits the key in every event
(its value may be null where the field allows none). Fields a producer emits
only sometimes are optional and load as None when absent. A consumer that
does not rely on a required field (it never reads it, or reads it with a
fallback) leaves it out of ``relies_on`` and then accepts an event without
it, which keeps each consumer exactly as tolerant as it is of the fields it
does not need; every field that is present is still checked against its type.

Compatibility rule (see docs/architecture.md, section 4):

* Consumers ignore fields the contract does not declare, at every level, so
  a producer may ADD a field: declare it here first (optional, or required
  once no old producer is running), then emit it.
* Producers emit only declared fields (:func:`event_data` refuses the rest),
  so this module is a complete description of what is on the wire.
* Removing or renaming a field, changing its type, or letting a non-null
  field become null breaks consumers: that is a new event type (emitted
  beside the old one until every consumer reads the new one), never an edit
  of an existing contract.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Mapping
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from shared.schemas import required_fields, undeclared_fields

MAX_CUSTOMER_ID_CHARS = 128  # a token subject (shared/auth.py: MAX_SUBJECT_CHARS)


class ContractViolation(ValueError):
    """A producer built ``data`` that does not match its event type's contract."""


class EventData(Schema):
    """Base of every contract: unknown keys are ignored (a producer may add fields)."""

    class Meta:
        unknown = EXCLUDE


def _customer_id() -> fields.String:
    return fields.String(required=True, validate=validate.Length(min=1, max=MAX_CUSTOMER_ID_CHARS))


class DecimalString(fields.Decimal):
    """An amount written as a JSON string (``"29.00"``), never a JSON number (a float rounds)."""

    default_error_messages = {"not_string": 'Must be a decimal string, e.g. "29.00".'}

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str):
            raise self.make_error("not_string")
        return super()._deserialize(value, attr, data, **kwargs)


def _money(**kwargs) -> DecimalString:
    return DecimalString(places=None, as_string=True, allow_nan=False, **kwargs)


# --- order-service ---------------------------------------------------------------------------
class OrderLineData(EventData):
    """One line of ``order.created``: what was ordered at which catalog price."""

    sku = fields.String(required=True)
    quantity = fields.Integer(required=True)
    unit_price = _money(required=True)
    line_total = _money(required=True)


class AddressData(EventData):
    """The order's shipping address as the customer gave it (optional parts are null)."""

    name = fields.String(required=True)
    line1 = fields.String(required=True)
    line2 = fields.String(required=True, allow_none=True)
    city = fields.String(required=True)
    region = fields.String(required=True, allow_none=True)
    postal_code = fields.String(required=True)
    country = fields.String(required=True)


class OrderCreatedData(EventData):
    """``order.created``: an order was committed with the stock reserved for it.

    Produced by the order service (``services/order/handlers.py: place_order``).
    Consumed by delivery (creates the shipment: ``order_id``, ``customer_id``,
    ``shipping_address``), inventory (confirms the reservation: ``order_id``,
    and the lines' ``sku`` and ``quantity`` when ``lines`` is present) and
    notification (notification, confirmation mail, webhooks: ``order_id``,
    ``customer_id``; it forwards the whole ``data``).
    """

    order_id = fields.UUID(required=True)
    customer_id = _customer_id()
    customer_email = fields.String(required=True, allow_none=True,
                                   validate=validate.Length(max=254))
    currency = fields.String(required=True, validate=validate.Length(equal=3))
    total = _money(required=True)
    lines = fields.List(fields.Nested(OrderLineData), required=True)
    shipping_address = fields.Nested(AddressData, required=True)
    created_at = fields.AwareDateTime(required=True)


class OrderCancelledData(EventData):
    """``order.cancelled``: the customer cancelled before the order shipped.

    Produced by the order service (``services/order/cancellation.py: cancel_order``).
    Consumed by delivery (cancels the shipment or leaves a tombstone:
    ``order_id``, ``reason`` if present), inventory (releases the stock:
    ``order_id``) and notification (cancellation mail, webhooks: ``order_id``,
    ``customer_id``).
    """

    order_id = fields.UUID(required=True)
    customer_id = _customer_id()
    reason = fields.String(required=True, allow_none=True)


class OrderStatusChangedData(EventData):
    """``order.status_changed``: the order moved from ``previous_status`` to ``status``.

    Produced by the order service (``services/order/handlers.py``:
    ``cancel_order`` and ``on_delivery_event``); ``cause`` is the event or
    command that moved it, and ``carrier``/``tracking_number`` are present
    when a delivery event did. Consumed by notification (notification,
    status mails, webhooks: ``order_id``, ``customer_id``; ``status`` picks
    the topic and the mail).
    """

    order_id = fields.UUID(required=True)
    customer_id = _customer_id()
    previous_status = fields.String(required=True)
    status = fields.String(required=True)
    cause = fields.String(required=True)
    carrier = fields.String(load_default=None, allow_none=True)
    tracking_number = fields.String(load_default=None, allow_none=True)


class OrderPaidData(EventData):
    """``order.paid``: the order's payment is authorized; it may ship now.

    Produced by the order service (``services/order/handlers.py: on_payment_event``)
    when ``payment.authorized`` moves the order from ``PENDING_PAYMENT`` to
    ``PENDING_SHIPMENT``. Consumed by delivery (creates the shipment:
    ``order_id``, ``customer_id``, ``shipping_address``).
    """

    order_id = fields.UUID(required=True)
    customer_id = _customer_id()
    currency = fields.String(required=True, validate=validate.Length(equal=3))
    total = _money(required=True)
    shipping_address = fields.Nested(AddressData, required=True)
    paid_at = fields.AwareDateTime(required=True)


# --- delivery-service ------------------------------------------------------------------------
# The types of delivery-status.fifo, one per shipment status (services/delivery/domain.py).
DELIVERY_EVENT_TYPES = (
    "delivery.shipment_created",
    "delivery.shipped",
    "delivery.in_transit",
    "delivery.out_for_delivery",
    "delivery.delivered",
    "delivery.failed",
    "delivery.shipment_cancelled",
)


class ShipmentEventData(EventData):
    """Every ``delivery.*`` event: the order's shipment reached ``status``.

    Produced by the delivery service (``services/delivery/handlers.py``: a new
    shipment, a cancel, a carrier report or the simulator). Consumed by the
    order service (``services/order/handlers.py: on_delivery_event``: moves
    the order, records the shipment's carrier and tracking number; it relies
    on ``shipment_id``, ``order_id``, ``status`` and ``occurred_at``).
    ``shipment_id`` (and carrier, tracking number) is null in one case only: a
    ``delivery.shipment_cancelled`` for an order whose cancel came before its
    ``order.paid``, so it never had a shipment (the order may still need to
    hear it: its own cancel's commit can have been lost).
    """

    shipment_id = fields.UUID(required=True, allow_none=True)
    order_id = fields.UUID(required=True)
    status = fields.String(required=True)
    carrier = fields.String(required=True, allow_none=True)
    tracking_number = fields.String(required=True, allow_none=True)
    location = fields.String(required=True, allow_none=True)
    occurred_at = fields.AwareDateTime(required=True)


# --- payment-service -------------------------------------------------------------------------
class PaymentLineData(EventData):
    """Units of one order line that a refund gives back (what inventory restocks)."""

    sku = fields.String(required=True)
    quantity = fields.Integer(required=True)


class PaymentAuthorizedData(EventData):
    """``payment.authorized``: the provider holds the order's full amount (not yet captured).

    Produced by the payment service (``services/payment/handlers.py: apply_intent``)
    from the confirm answer, the ``payment_intent.amount_capturable_updated``
    webhook or the reconciliation job, only when the intent's amount and
    currency equal the order's. Consumed by the order service
    (``services/order/handlers.py: on_payment_event``: ``order_id``).
    Amounts are integer minor units of ``currency`` (JPY has none, EUR two).
    """

    order_id = fields.UUID(required=True)
    payment_intent_id = fields.String(required=True)
    currency = fields.String(required=True, validate=validate.Length(equal=3))
    amount_minor = fields.Integer(required=True, strict=True)
    authorized_at = fields.AwareDateTime(required=True)


class PaymentRefundedData(EventData):
    """``payment.refunded``: money went back to the customer for ``lines`` (maybe none).

    Produced by the payment service (``services/payment/refunds.py: refund``).
    Consumed by inventory (``services/inventory/restock.py: on_payment_refunded``:
    puts exactly ``lines`` back on hand, once per ``refund_id``: ``refund_id``,
    ``order_id``, ``lines``). A refund of an amount alone has no lines.
    """

    refund_id = fields.UUID(required=True)
    order_id = fields.UUID(required=True)
    currency = fields.String(required=True, validate=validate.Length(equal=3))
    amount_minor = fields.Integer(required=True, strict=True)
    lines = fields.List(fields.Nested(PaymentLineData), required=True)
    refunded_at = fields.AwareDateTime(required=True)


# --- notification-service (internal) ---------------------------------------------------------
class DeliveryRequestedData(EventData):
    """``webhook.delivery_requested``: make the next attempt of one webhook delivery.

    Produced and consumed by the notification service alone
    (``services/notification/consumers.py``: ``enqueue_attempt`` writes it,
    ``WebhookDeliverer`` reads it). ``token`` is the delivery's schedule
    token: a message whose token is no longer the delivery's is superseded.
    """

    delivery_id = fields.UUID(required=True)
    token = fields.UUID(required=True)


EVENT_DATA_SCHEMAS: Mapping[str, type[EventData]] = {
    "order.created": OrderCreatedData,
    "order.status_changed": OrderStatusChangedData,
    "order.cancelled": OrderCancelledData,
    "order.paid": OrderPaidData,
    "payment.authorized": PaymentAuthorizedData,
    "payment.refunded": PaymentRefundedData,
    **dict.fromkeys(DELIVERY_EVENT_TYPES, ShipmentEventData),
    "webhook.delivery_requested": DeliveryRequestedData,
}


# --- producing and consuming -----------------------------------------------------------------
def event_data(event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    """``data`` unchanged if it matches ``event_type``'s contract; else :class:`ContractViolation`.

    Every required field present, every field of its declared type, no
    undeclared field at any level. The dict itself goes on the wire (not a
    re-serialization), so validating changes no byte of what is sent.
    """
    schema = _schema(event_type, None)
    problems: dict[str, Any] = dict(schema.validate(data))
    problems.update(dict.fromkeys(undeclared_fields(schema, data), ["Not in the contract."]))
    if problems:
        raise ContractViolation(f"{event_type} data breaks its contract: {problems}")
    return data


def load_data(event_type: str, data: Mapping[str, Any],
              relies_on: Collection[str] | None = None) -> dict[str, Any]:
    """``data`` loaded with ``event_type``'s contract (raises ValidationError when invalid).

    ``relies_on`` names the fields (dotted below the top level, e.g.
    ``lines.sku``) the consumer cannot do without; other required fields may
    be absent. None: every required field. Unknown fields are dropped. An event
    type without a contract is invalid data too (ValidationError).
    """
    if event_type not in EVENT_DATA_SCHEMAS:
        raise ValidationError(f"no contract for event type {event_type!r}")
    return _schema(event_type, None if relies_on is None else tuple(relies_on)).load(data)


@functools.cache
def _schema(event_type: str, relies_on: tuple[str, ...] | None) -> EventData:
    """The contract of ``event_type`` tolerating the absence of what is not in ``relies_on``.

    Cached: schemas are reusable (and thread-safe) once built, and building
    one per message costs more than using it.
    """
    schema_class = EVENT_DATA_SCHEMAS[event_type]
    if relies_on is None:
        return schema_class()
    required = required_fields(schema_class())
    unknown = sorted(set(relies_on) - set(required))
    if unknown:  # a consumer relying on a field nobody promises to send is a bug
        raise ValueError(f"{event_type} has no required field {unknown}")
    return schema_class(partial=tuple(path for path in required if path not in relies_on))
