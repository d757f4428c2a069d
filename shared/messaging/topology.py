"""The queue topology, defined once.

Everything else is derived from this table: the outbox routes events by it,
the local bootstrap (:func:`shared.messaging.sqs.ensure_queues`) creates it,
``elasticmq.conf`` is generated from it (``scripts/gen_elasticmq_conf.py``)
and a test checks the committed file and ``docker-compose.yml`` against it.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MAX_RECEIVE_COUNT = 5
DEFAULT_VISIBILITY_TIMEOUT_S = 30
# Longest retention SQS allows: dead letters must outlive a long weekend.
DLQ_RETENTION_S = 14 * 24 * 3600
QUEUE_RETENTION_S = 4 * 24 * 3600


@dataclass(frozen=True)
class QueueSpec:
    """One work queue with its dead-letter queue."""

    name: str
    producer: str
    consumers: tuple[str, ...]
    event_types: tuple[str, ...]
    fifo: bool = True
    max_receive_count: int = DEFAULT_MAX_RECEIVE_COUNT
    visibility_timeout_s: int = DEFAULT_VISIBILITY_TIMEOUT_S

    @property
    def dlq_name(self) -> str:
        """``<name>-dlq.fifo`` for FIFO queues, ``<name>-dlq`` for standard ones."""
        if self.fifo:
            return self.name.removesuffix(".fifo") + "-dlq.fifo"
        return self.name + "-dlq"

    def __post_init__(self) -> None:
        if self.fifo != self.name.endswith(".fifo"):
            raise ValueError(f"queue {self.name}: FIFO queues and only they end in .fifo")
        if not 1 <= self.max_receive_count <= 1000:
            raise ValueError(f"queue {self.name}: maxReceiveCount must be 1..1000")


QUEUES: tuple[QueueSpec, ...] = (
    QueueSpec(
        name="order-created.fifo",
        producer="order",
        consumers=("delivery",),
        event_types=("order.created",),
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
        name="delivery-status.fifo",
        producer="delivery",
        consumers=("order",),
        event_types=(
            "delivery.shipment_created",
            "delivery.shipped",
            "delivery.in_transit",
            "delivery.out_for_delivery",
            "delivery.delivered",
            "delivery.failed",
            "delivery.shipment_cancelled",
        ),
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
)


def queue(name: str) -> QueueSpec:
    """The spec of the queue called ``name``."""
    for spec in QUEUES:
        if spec.name == name:
            return spec
    raise KeyError(name)


def routes_for(producer: str, event_type: str) -> list[QueueSpec]:
    """The queues an event of ``event_type`` from ``producer`` is published to."""
    return [q for q in QUEUES if q.producer == producer and event_type in q.event_types]


def consumed_by(service: str) -> list[QueueSpec]:
    """The queues ``service`` consumes."""
    return [q for q in QUEUES if service in q.consumers]


def all_queue_names() -> list[str]:
    """Every queue and DLQ name, DLQs first (they must exist before their sources)."""
    return [q.dlq_name for q in QUEUES] + [q.name for q in QUEUES]
