"""The worker's periodic gauges against real SQS and PostgreSQL: queue and DLQ depth, outbox backlog."""

from __future__ import annotations

import uuid

from prometheus_client import REGISTRY

from shared.messaging.envelope import Envelope
from shared.messaging.sqs import sync_client
from shared.queues import TOPOLOGY, add_event
from shared.worker_gauges import WorkerGauges
from tests.conftest import REGION, free_port

CREATED = TOPOLOGY.queue("order-paid.fifo")
CANCELLED = TOPOLOGY.queue("order-cancelled.fifo")


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def _send(sqs, url: str, count: int) -> None:
    for _ in range(count):
        sqs.send_message(QueueUrl=url, MessageBody="{}", MessageGroupId="g",
                         MessageDeduplicationId=str(uuid.uuid4()))


def test_depth_of_each_consumed_queue_and_its_dlq_and_the_outbox_backlog(sqs, queues, queue_prefix,
                                                                       order_db):
    _send(sqs, queues[CREATED.name], 3)
    _send(sqs, queues[CREATED.dlq_name], 2)
    received = sqs.receive_message(QueueUrl=queues[CREATED.name], MaxNumberOfMessages=1,
                                   VisibilityTimeout=60)["Messages"]
    assert len(received) == 1
    with order_db.transaction() as cur:
        for _ in range(2):
            add_event(cur, "order", Envelope(event_type="order.created", aggregate_id=str(uuid.uuid4()),
                                             data={}, producer="order"))
    gauges = WorkerGauges(order_db, sqs, "order", queue_prefix, [CREATED, CANCELLED])
    gauges.refresh()
    assert sample("sqs_queue_messages", queue=CREATED.name, state="visible") == 2
    assert sample("sqs_queue_messages", queue=CREATED.name, state="in_flight") == 1
    assert sample("sqs_queue_messages", queue=CREATED.name, state="delayed") == 0
    assert sample("sqs_dlq_messages", queue=CREATED.name, dlq=CREATED.dlq_name) == 2
    assert sample("sqs_queue_messages", queue=CANCELLED.name, state="visible") == 0
    assert sample("sqs_dlq_messages", queue=CANCELLED.name, dlq=CANCELLED.dlq_name) == 0
    # One row per queue order.created is routed to, for each of the two events.
    assert sample("outbox_pending_rows", service="order") == 2 * len(TOPOLOGY.routes_for("order",
                                                                                      "order.created"))
    assert 0 <= sample("outbox_lag_seconds", service="order") < 60

    # Emptied: the next refresh says so.
    sqs.purge_queue(QueueUrl=queues[CREATED.dlq_name])
    gauges.refresh()
    assert sample("sqs_dlq_messages", queue=CREATED.name, dlq=CREATED.dlq_name) == 0


def test_an_unreachable_broker_is_counted_and_keeps_the_last_figures(sqs, queues, queue_prefix,
                                                                  order_db):
    _send(sqs, queues[CREATED.dlq_name], 1)
    WorkerGauges(order_db, sqs, "order", queue_prefix, [CREATED]).refresh()
    before = sample("sqs_queue_metrics_failures_total", queue=CREATED.name) or 0
    dead = sync_client(f"http://127.0.0.1:{free_port()}", REGION)
    WorkerGauges(order_db, dead, "order", queue_prefix, [CREATED]).refresh()
    assert sample("sqs_queue_metrics_failures_total", queue=CREATED.name) == before + 1
    # A DLQ alert must not clear itself because SQS went away.
    assert sample("sqs_dlq_messages", queue=CREATED.name, dlq=CREATED.dlq_name) == 1
    # The outbox figures do not depend on the broker.
    assert sample("outbox_pending_rows", service="order") == 0
