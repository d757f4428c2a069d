"""The platform's queues: the one :class:`~shared.messaging.topology.Topology` of this system.

Everything queue-shaped is derived from :data:`TOPOLOGY`: the services' outbox
routing (:func:`add_event`), their consumers (``services/*/worker.py``), the
local bootstrap (``ensure_queues``), the DLQ tool (``scripts/dlq``) and the
generated ``elasticmq.conf`` / ``infra/sqs-queues.cfn.yaml``
(``scripts/gen_infra.py``; a test checks the committed files against it).
Edit the table here, then run ``make elasticmq-conf``.
"""

from __future__ import annotations

from shared.contracts import DELIVERY_EVENT_TYPES
from shared.messaging import outbox
from shared.messaging.envelope import Envelope
from shared.messaging.topology import QueueSpec, Topology

TOPOLOGY = Topology(queues=(
    QueueSpec(
        # Delivery ships only what is paid for: order.paid (payment authorized), not
        # order.created (the order still awaits its payment then).
        name="order-paid.fifo",
        producer="order",
        consumers=("delivery",),
        event_types=("order.paid",),
    ),
    QueueSpec(
        name="order-cancelled.fifo",
        producer="order",
        consumers=("delivery",),
        event_types=("order.cancelled",),
    ),
    QueueSpec(
        name="order-status.fifo",
        producer="order",
        consumers=("notification",),
        # Everything a customer is told about, in one per-order stream: the
        # notification service needs created/cancelled too (confirmation and
        # cancellation mails, webhooks), in order with the status changes.
        event_types=("order.created", "order.status_changed", "order.cancelled"),
    ),
    QueueSpec(
        # Confirms (order.created) or releases (order.cancelled) the stock the
        # order service reserved over HTTP before committing the order.
        name="inventory-events.fifo",
        producer="order",
        consumers=("inventory",),
        event_types=("order.created", "order.cancelled"),
    ),
    QueueSpec(
        # What the payment service acts on, in one per-order stream so a cancel and a
        # shipment of one order are seen in the order they happened: SHIPPED captures,
        # order.cancelled voids the authorization (or refunds a capture).
        name="order-payments.fifo",
        producer="order",
        consumers=("payment",),
        event_types=("order.status_changed", "order.cancelled"),
        # Captures and voids must outlive a payment-provider outage: with the default
        # 5 receives (about 30 s of backoff) a Stripe outage dead-lettered them and left
        # shipped orders uncharged (found by the chaos run). 30 receives with the default
        # backoff (2 s doubling, capped at 900 s) keep retrying for about 5 hours; bad
        # data is still dead-lettered at once (PermanentError).
        max_receive_count=30,
    ),
    QueueSpec(
        # payment.authorized moves the order from PENDING_PAYMENT to PENDING_SHIPMENT.
        name="payment-events.fifo",
        producer="payment",
        consumers=("order",),
        event_types=("payment.authorized",),
    ),
    QueueSpec(
        # A refund's lines go back on hand, once per refund.
        name="payment-refunds.fifo",
        producer="payment",
        consumers=("inventory",),
        event_types=("payment.refunded",),
    ),
    QueueSpec(
        name="delivery-status.fifo",
        producer="delivery",
        consumers=("order",),
        event_types=DELIVERY_EVENT_TYPES,  # declared once, with their data contract
    ),
    QueueSpec(
        # A standard queue: webhook retries are scheduled with per-message
        # DelaySeconds, which FIFO queues do not allow. Order does not matter
        # here (each message is one delivery attempt of one webhook).
        name="webhook-delivery",
        producer="notification",
        consumers=("notification",),
        event_types=("webhook.delivery_requested",),
        fifo=False,
        # One attempt waits at most the 5 s request timeout; leave room for the database.
        visibility_timeout_s=60,
    ),
))

# The topology's lookups, bound to this system's table.
QUEUES: tuple[QueueSpec, ...] = TOPOLOGY.queues
queue = TOPOLOGY.queue
routes_for = TOPOLOGY.routes_for
consumed_by = TOPOLOGY.consumed_by
all_queue_names = TOPOLOGY.all_queue_names


def add_event(cur, service: str, envelope: Envelope, delay_s: int = 0) -> int:
    """:func:`shared.messaging.outbox.add_event` routed by this system's :data:`TOPOLOGY`."""
    return outbox.add_event(cur, TOPOLOGY, service, envelope, delay_s)
