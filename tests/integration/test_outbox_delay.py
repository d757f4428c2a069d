"""The outbox's per-row delay becomes SQS DelaySeconds on a standard queue."""

from __future__ import annotations

import time
import uuid

import pytest

from shared.messaging.envelope import Envelope
from shared.messaging.relay import OutboxRelay
from shared.queues import TOPOLOGY, add_event
from tests.support.wait import wait_until


def _receive(sqs, url):
    return sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0, MaxNumberOfMessages=10).get(
        "Messages", [])


def test_delayed_row_is_invisible_until_its_delay_passes(notification_db, sqs, queues, sqs_endpoint,
                                                         queue_prefix):
    now_event = Envelope(event_type="webhook.delivery_requested", aggregate_id=str(uuid.uuid4()),
                         data={"n": 0}, producer="notification-service")
    later_event = Envelope(event_type="webhook.delivery_requested", aggregate_id=str(uuid.uuid4()),
                           data={"n": 1}, producer="notification-service")
    with notification_db.transaction() as cur:
        add_event(cur, "notification", now_event)
        add_event(cur, "notification", later_event, delay_s=3)
    relay = OutboxRelay(notification_db, sqs, TOPOLOGY, "notification", queue_prefix)
    sent_at = time.monotonic()
    assert relay.publish_once()[0] == 2
    url = queues["webhook-delivery"]
    first = wait_until(lambda: _receive(sqs, url), 5, message="the undelayed message")
    assert [Envelope.from_json(m["Body"]).event_id for m in first] == [now_event.event_id]
    later = wait_until(lambda: _receive(sqs, url), 10, message="the delayed message")
    assert time.monotonic() - sent_at >= 2.5
    assert [Envelope.from_json(m["Body"]).event_id for m in later] == [later_event.event_id]


def test_delay_is_refused_for_fifo_routes_and_out_of_range(notification_db, order_db):
    fifo = Envelope(event_type="order.created", aggregate_id="o-1", data={}, producer="order-service")
    with pytest.raises(ValueError, match="FIFO"), order_db.transaction() as cur:
        add_event(cur, "order", fifo, delay_s=5)
    standard = Envelope(event_type="webhook.delivery_requested", aggregate_id="d-1", data={},
                        producer="notification-service")
    with pytest.raises(ValueError, match="0..900"), notification_db.transaction() as cur:
        add_event(cur, "notification", standard, delay_s=901)
