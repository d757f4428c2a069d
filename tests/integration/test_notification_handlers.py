"""The notification handlers in-process against real Postgres (no queue, no worker):
idempotence without the inbox, long waits re-enqueued in 15-minute hops, stale and
cancelled delivery messages."""

from __future__ import annotations

import uuid

import pytest

from services.notification import webhook_repository as repo
from services.notification.consumers import (
    DELIVERY_REQUESTED,
    OrderEventHandler,
    WebhookDeliverer,
)
from services.notification.ssrf import UrlPolicy
from services.notification.webhooks import EndpointBreakers, WebhookSender
from shared.messaging.envelope import Envelope
from tests.support.receiver import Receiver


@pytest.fixture
def settings(notification_app):
    return notification_app.extensions["notification_settings"]


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture
def subscription(notification_db, receiver):
    sub_id = uuid.uuid4()
    with notification_db.transaction() as cur:
        repo.insert_subscription(cur, sub_id, "ops", True, "all", "*", receiver.url,
                                 "s" * 20, "active")
    return sub_id


def created(order_id: str | None = None) -> Envelope:
    order_id = order_id or str(uuid.uuid4())
    return Envelope(event_type="order.created", aggregate_id=order_id, producer="order-service",
                    data={"order_id": order_id, "customer_id": "alice",
                          "customer_email": "alice@example.com", "total": "1.00",
                          "currency": "EUR", "lines": []})


def counts(db) -> dict[str, int]:
    with db.transaction() as cur:
        result = {}
        for table in ("notifications", "webhook_deliveries", "email_deliveries", "outbox"):
            cur.execute(f"SELECT count(*) AS n FROM {table}")  # noqa: S608 - test constants
            result[table] = cur.fetchone()["n"]
        return result


def delivery_message(db) -> tuple[dict, Envelope]:
    with db.transaction() as cur:
        cur.execute("SELECT * FROM webhook_deliveries")
        delivery = cur.fetchone()
        cur.execute("SELECT body FROM outbox WHERE queue = 'webhook-delivery' ORDER BY id DESC"
                    " LIMIT 1")
        return delivery, Envelope.from_json(cur.fetchone()["body"])


def deliver(db, settings, message: Envelope) -> None:
    deliverer = WebhookDeliverer(settings, WebhookSender(UrlPolicy(("127.0.0.1",)),
                                                        EndpointBreakers({}), 1.0))
    with db.transaction() as cur:
        deliverer(cur, message)


def test_an_event_handled_twice_notifies_once_even_without_the_inbox(notification_db, settings,
                                                                      subscription):
    event = created()
    handler = OrderEventHandler(settings)
    for _ in range(2):
        with notification_db.transaction() as cur:
            handler(cur, event)
    assert counts(notification_db) == {"notifications": 1, "webhook_deliveries": 1,
                                       "email_deliveries": 1, "outbox": 1}


def test_a_wait_longer_than_15_minutes_is_re_enqueued_in_hops(notification_db, settings,
                                                              subscription, receiver):
    with notification_db.transaction() as cur:
        OrderEventHandler(settings)(cur, created())
    delivery, first = delivery_message(notification_db)
    with notification_db.transaction() as cur:  # as if a retry were due in two hours
        cur.execute("UPDATE webhook_deliveries SET next_attempt_at = now() + interval '2 hours'"
                    " RETURNING next_attempt_at")
        due = cur.fetchone()["next_attempt_at"]
    deliver(notification_db, settings, first)
    assert receiver.count() == 0  # not due: no request
    later, hop = delivery_message(notification_db)
    with notification_db.transaction() as cur:
        cur.execute("SELECT delay_seconds FROM outbox WHERE event_id = %s", (hop.event_id,))
        assert cur.fetchone()["delay_seconds"] == 900  # SQS's maximum, then another hop
    assert later["schedule_token"] != delivery["schedule_token"]
    assert str(later["schedule_token"]) == hop.data["token"]
    assert later["next_attempt_at"] == due  # a hop does not move the due time
    assert later["attempts"] == 0

    deliver(notification_db, settings, first)  # the superseded message comes back: ignored
    assert counts(notification_db)["outbox"] == 2 and receiver.count() == 0

    with notification_db.transaction() as cur:
        cur.execute("UPDATE webhook_deliveries SET next_attempt_at = now()")
    deliver(notification_db, settings, hop)
    assert receiver.count() == 1
    done, _ = delivery_message(notification_db)
    assert (done["status"], done["attempts"]) == ("delivered", 1)


def test_a_paused_subscription_cancels_its_pending_delivery(notification_db, settings,
                                                            subscription, receiver):
    with notification_db.transaction() as cur:
        OrderEventHandler(settings)(cur, created())
        cur.execute("UPDATE webhook_subscriptions SET status = 'paused'")
    _, message = delivery_message(notification_db)
    deliver(notification_db, settings, message)
    delivery, _ = delivery_message(notification_db)
    assert delivery["status"] == "cancelled" and receiver.count() == 0
    with notification_db.transaction() as cur:
        cur.execute("SELECT error FROM webhook_attempts")
        assert cur.fetchone()["error"] == "subscription is paused"


def test_a_deleted_subscription_leaves_its_messages_harmless(notification_db, settings,
                                                             subscription, receiver):
    with notification_db.transaction() as cur:
        OrderEventHandler(settings)(cur, created())
    _, message = delivery_message(notification_db)
    with notification_db.transaction() as cur:
        repo.delete_subscription(cur, subscription)
    deliver(notification_db, settings, message)
    assert receiver.count() == 0 and message.event_type == DELIVERY_REQUESTED


def test_retention_purges_finished_history_and_keeps_the_rest(notification_db, settings,
                                                              subscription):
    from services.notification.retention import purge_once
    from services.notification.settings import RetentionSettings
    from shared.messaging import retention as messaging_retention

    handler = OrderEventHandler(settings)
    with notification_db.transaction() as cur:
        handler(cur, created())
        handler(cur, created())
        cur.execute("INSERT INTO inbox (consumer, event_id, event_type, received_at)"
                    " VALUES ('c', gen_random_uuid(), 'x', now() - interval '40 days')")
        # The first event is old and finished; the second is recent (and still pending).
        cur.execute("SELECT event_id FROM notifications ORDER BY id LIMIT 1")
        old = cur.fetchone()["event_id"]
        cur.execute("UPDATE notifications SET created_at = now() - interval '40 days'"
                    " WHERE event_id = %s", (old,))
        cur.execute("UPDATE webhook_deliveries SET status = 'delivered',"
                    " updated_at = now() - interval '40 days' WHERE event_id = %s", (old,))
        cur.execute("UPDATE email_deliveries SET status = 'sent',"
                    " created_at = now() - interval '40 days' WHERE event_id = %s", (old,))
    deleted = purge_once(notification_db, RetentionSettings(days=30))
    # The service's own history here; its inbox and outbox are the messaging
    # retention job's, which every worker runs (no second copy of it here).
    assert {k: v for k, v in deleted.items() if v} == {
        "notifications": 1, "webhook_deliveries": 1, "email_deliveries": 1}
    assert messaging_retention.purge_once(notification_db, days=30) == {"inbox": 1, "outbox": 0}
    assert counts(notification_db) == {"notifications": 1, "webhook_deliveries": 1,
                                       "email_deliveries": 1, "outbox": 2}
