"""The notification worker as a process: order-status.fifo in, webhooks and mail out.

Real Postgres, moto's SQS (and SES) server, webhook receivers and an SMTP
server (aiosmtpd) on 127.0.0.1 started by the tests. Retries are shrunk to
seconds by settings; every wait polls with a deadline.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest

from services.notification.domain import verify
from shared.messaging.envelope import Envelope
from tests.support.receiver import Receiver
from tests.support.smtp import SmtpServer, parts
from tests.support.wait import wait_until

# Every test here starts service processes: deselect with -m "not slow".
pytestmark = pytest.mark.slow

ADMIN = ("webhooks:manage", "admin")
CUSTOMER = "alice"
FAST = {
    "NOTIFICATION_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
    "NOTIFICATION_WEBHOOK_RETRY_BASE_S": "1",
    "NOTIFICATION_WEBHOOK_RETRY_CAP_S": "1",
    "NOTIFICATION_WEBHOOK_TIMEOUT_S": "1",
    "NOTIFICATION_EMAIL_RETRY_BASE_S": "0.5",
    "NOTIFICATION_EMAIL_RETRY_CAP_S": "1",
    "NOTIFICATION_EMAIL_POLL_S": "0.2",
    "BREAKER_EMAIL_SMTP_RESET_TIMEOUT_S": "0.5",
}


def created_event(order_id: str, customer: str = CUSTOMER, name: str = "Alice",
                  email: str = "alice@example.com") -> Envelope:
    return Envelope(event_type="order.created", aggregate_id=order_id, producer="order-service",
                    correlation_id="req-1", data={
                        "order_id": order_id, "customer_id": customer, "customer_email": email,
                        "currency": "EUR", "total": "29.00",
                        "lines": [{"sku": "COFFEE-1KG", "quantity": 2, "unit_price": "14.50",
                                   "line_total": "29.00"}],
                        "shipping_address": {"name": name, "line1": "1 Example Street",
                                             "city": "Berlin", "postal_code": "10115",
                                             "country": "DE"},
                        "created_at": "2026-11-24T10:00:00+00:00"})


def status_event(order_id: str, status: str, customer: str = CUSTOMER, **extra) -> Envelope:
    return Envelope(event_type="order.status_changed", aggregate_id=order_id,
                    producer="order-service", data={
                        "order_id": order_id, "customer_id": customer, "status": status,
                        "previous_status": "PENDING_SHIPMENT", "cause": "delivery.x", **extra})


def publish(sqs, queues, event: Envelope, dedup: str | None = None) -> None:
    """What the order service's relay does (a new dedup id forces a redelivery)."""
    sqs.send_message(QueueUrl=queues["order-status.fifo"], MessageBody=event.to_json(),
                     MessageGroupId=event.aggregate_id,
                     MessageDeduplicationId=dedup or event.event_id,
                     MessageAttributes={"event_type": {"DataType": "String",
                                                       "StringValue": event.event_type}})


def subscribe(client, headers, url: str, topic: str = "*") -> dict:
    response = client.post("/v1/webhooks", json={"name": f"hook {topic}", "topic": topic,
                                                  "delivery_url": url}, headers=headers)
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()


def rows(db, sql: str, *params) -> list[dict]:
    with db.transaction() as cur:
        cur.execute(sql, params)
        return cur.fetchall()


QUIET_S = 2.0


def _count(db, table: str, where: str = "TRUE") -> int:
    return rows(db, f"SELECT count(*) AS n FROM {table} WHERE {where}")[0]["n"]


def _queue_drained(sqs, queue_url: str) -> bool:
    """No message waiting and none in flight: every message sent has been handled and deleted."""
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages",
                                            "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return (int(attributes["ApproximateNumberOfMessages"]) == 0
            and int(attributes["ApproximateNumberOfMessagesNotVisible"]) == 0)


def _settled(snapshot, quiet_s: float = QUIET_S, timeout: float = 30.0) -> None:
    """Wait until ``snapshot()`` has not changed for ``quiet_s``; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last, since = snapshot(), time.monotonic()
    while time.monotonic() - since < quiet_s:
        assert time.monotonic() < deadline, f"effects still arriving after {timeout}s: {last}"
        time.sleep(0.1)
        current = snapshot()
        if current != last:
            last, since = current, time.monotonic()


@pytest.fixture
def receivers():
    started: list[Receiver] = []

    def start(script=lambda n: 200) -> Receiver:
        receiver = Receiver(script=script).start()
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        receiver.stop()


@pytest.fixture
def smtp(port):
    server = SmtpServer(port).start()
    yield server
    server.stop()


def test_order_events_reach_webhooks_and_mail_exactly_once(
        notification_client, notification_db, processes, sqs, queues, auth_header, receivers, smtp):
    alice_hook, delivered_hook, bob_hook = receivers(), receivers(), receivers()
    alice_sub = subscribe(notification_client, auth_header(CUSTOMER, ("webhooks:manage",)),
                          alice_hook.url)
    admin_sub = subscribe(notification_client, auth_header("ops", ADMIN), delivered_hook.url,
                          "order.delivered")
    subscribe(notification_client, auth_header("bob", ("webhooks:manage",)), bob_hook.url)
    processes.worker("notification", NOTIFICATION_EMAIL_PROVIDER="smtp",
                     NOTIFICATION_SMTP_PORT=str(smtp.port), **FAST)

    order_id = str(uuid.uuid4())
    created = created_event(order_id, name='Alice <script>alert("x")</script>')
    events = [created,
              status_event(order_id, "SHIPPED", carrier="DHL", tracking_number="DHL123"),
              status_event(order_id, "DELIVERED", carrier="DHL", tracking_number="DHL123")]
    for event in events:
        publish(sqs, queues, event)
    publish(sqs, queues, created, dedup="redelivered-" + created.event_id)  # a redelivery

    # Every effect the four messages should have, down to the last one of each kind...
    wait_until(lambda: len(alice_hook.verified(alice_sub["secret"])) >= 3, 30,
               message="alice's three webhooks")
    wait_until(lambda: len(delivered_hook.verified(admin_sub["secret"])) >= 1, 30,
               message="the order.delivered webhook")
    wait_until(lambda: len(smtp.received()) >= 3, 30, message="three mails")
    wait_until(lambda: _count(notification_db, "notifications") >= 3, 30, message="three notifications")
    wait_until(lambda: _count(notification_db, "webhook_deliveries", "status = 'delivered'") >= 4, 30,
               message="four delivered webhook deliveries")
    wait_until(lambda: _count(notification_db, "email_deliveries", "status = 'sent'") >= 3, 30,
               message="three sent mails")
    # ... and the redelivery, published last, taken off the queue: until then a duplicate it would
    # cause may still be on its way, and counting now would miss it.
    wait_until(lambda: _queue_drained(sqs, queues["order-status.fifo"]), 30,
               message="order-status.fifo drained (the redelivery consumed)")
    # Then a quiet period: nothing more may arrive for QUIET_S (polled, with a deadline).
    _settled(lambda: (alice_hook.count(), delivered_hook.count(), bob_hook.count(),
                      len(smtp.received()), _count(notification_db, "notifications"),
                      _count(notification_db, "webhook_deliveries"),
                      _count(notification_db, "email_deliveries")))

    notes = rows(notification_db, "SELECT id, type, payload FROM notifications ORDER BY id")
    assert [n["type"] for n in notes] == ["order.created", "order.status_changed",
                                          "order.status_changed"]
    topics = sorted(r.headers["Webhook-Topic"] for r in alice_hook.requests)
    assert topics == ["order.created", "order.delivered", "order.updated"]
    assert len(alice_hook.requests) == 3  # signed, once each
    for request in alice_hook.requests:
        payload = json.loads(request.body)
        assert payload["id"] == request.headers["Webhook-Id"]
        assert payload["data"]["order_id"] == order_id
        assert not verify("wrong-secret", request.headers["Webhook-Timestamp"],
                          request.headers["Webhook-Signature"], request.body)
    [delivered] = delivered_hook.requests
    assert json.loads(delivered.body)["data"]["status"] == "DELIVERED"
    assert bob_hook.count() == 0  # another customer's order

    mails = {m["Subject"]: m for m in smtp.received()}
    assert len(smtp.received()) == 3
    short = order_id[:8]
    assert set(mails) == {f"Your order {short} is confirmed", f"Your order {short} is on its way",
                          f"Your order {short} was delivered"}
    confirmation = mails[f"Your order {short} is confirmed"]
    assert confirmation["To"] == "alice@example.com"
    text, html = parts(confirmation)
    assert "2 x COFFEE-1KG" in text and "Total: 29.00 EUR" in text
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    _, shipped_html = parts(mails[f"Your order {short} is on its way"])
    assert "DHL123" in shipped_html
    assert rows(notification_db, "SELECT count(*) AS n FROM webhook_deliveries")[0]["n"] == 4
    assert {r["status"] for r in rows(notification_db, "SELECT status FROM email_deliveries")} == {
        "sent"}


def test_receiver_failures_retry_disable_and_stay_visible(
        notification_client, notification_db, processes, sqs, queues, auth_header, receivers,
        port):
    admin = auth_header("ops", ADMIN)
    flaky = receivers(lambda n: 500 if n == 1 else 200)
    slow = receivers(lambda n: ("sleep", 2.5, 200) if n == 1 else 200)
    gone = receivers(lambda n: 410)
    subs = {name: subscribe(notification_client, admin, url) for name, url in (
        ("flaky", flaky.url), ("slow", slow.url), ("gone", gone.url),
        ("down", f"http://127.0.0.1:{port}/hook"))}  # nothing listens there
    processes.worker("notification", NOTIFICATION_EMAIL_ENABLED="false",
                     NOTIFICATION_WEBHOOK_MAX_ATTEMPTS="3", NOTIFICATION_WEBHOOK_DISABLE_AFTER="1",
                     **FAST)
    publish(sqs, queues, created_event(str(uuid.uuid4())))

    def deliveries(name: str) -> list[dict]:
        response = notification_client.get(f"/v1/webhooks/{subs[name]['id']}/deliveries",
                                           headers=admin)
        assert response.status_code == 200
        return response.get_json()["items"]

    def settled(name: str):
        items = deliveries(name)
        return items if items and items[0]["status"] in ("delivered", "failed") else None

    flaky_log = wait_until(lambda: settled("flaky"), 30, message="flaky delivered")[0]
    assert (flaky_log["status"], flaky_log["attempts"]) == ("delivered", 2)
    assert [a["status_code"] for a in flaky_log["attempt_log"]] == [500, 200]
    first, second = flaky.requests
    assert first.headers["Webhook-Id"] == second.headers["Webhook-Id"] == flaky_log["id"]
    assert first.body == second.body
    assert len(flaky.verified(subs["flaky"]["secret"])) == 2

    slow_log = wait_until(lambda: settled("slow"), 30, message="slow delivered")[0]
    assert slow_log["status"] == "delivered"
    assert "timed out" in slow_log["attempt_log"][0]["error"]

    gone_log = wait_until(lambda: settled("gone"), 30, message="gone settled")[0]
    assert (gone_log["status"], gone_log["attempts"]) == ("failed", 1)
    gone_sub = notification_client.get(f"/v1/webhooks/{subs['gone']['id']}", headers=admin).get_json()
    assert gone_sub["status"] == "disabled" and "410" in gone_sub["disabled_reason"]

    down_log = wait_until(lambda: settled("down"), 40, message="down gave up")[0]
    assert (down_log["status"], down_log["attempts"]) == ("failed", 3)
    assert all(a["outcome"] == "retry" and a["status_code"] is None and a["error"]
               for a in down_log["attempt_log"])
    down_sub = notification_client.get(f"/v1/webhooks/{subs['down']['id']}", headers=admin).get_json()
    assert down_sub["status"] == "disabled"
    assert "failed after every retry" in down_sub["disabled_reason"]
    # A disabled subscription gets no new deliveries.
    publish(sqs, queues, created_event(str(uuid.uuid4())))
    wait_until(lambda: flaky.count() >= 3, 30, message="the next event at the healthy endpoint")
    assert len(deliveries("down")) == 1 and len(deliveries("gone")) == 1


def test_smtp_down_retries_mail_and_never_holds_up_webhooks(
        notification_client, notification_db, processes, sqs, queues, auth_header, receivers, port):
    hook = receivers()
    subscribe(notification_client, auth_header("ops", ADMIN), hook.url)
    processes.worker("notification", NOTIFICATION_EMAIL_PROVIDER="smtp",
                     NOTIFICATION_SMTP_PORT=str(port), NOTIFICATION_SMTP_TIMEOUT_S="1", **FAST)
    order_id = str(uuid.uuid4())
    publish(sqs, queues, created_event(order_id))

    wait_until(lambda: hook.count() == 1, 30, message="webhook while SMTP is down")
    assert rows(notification_db, "SELECT count(*) AS n FROM notifications")[0]["n"] == 1

    def failed_twice():
        found = rows(notification_db, "SELECT status, attempts, last_error FROM email_deliveries")
        return found if found and found[0]["attempts"] >= 2 and found[0]["last_error"] else None

    [pending] = wait_until(failed_twice, 30, message="mail retried while SMTP is down")
    assert pending["status"] in ("pending", "sending")
    assert "Connection refused" in pending["last_error"] or "Errno" in pending["last_error"]

    server = SmtpServer(port).start()  # the mail server comes back
    try:
        wait_until(lambda: server.received(), 30, message="mail sent once SMTP is back")
        wait_until(lambda: rows(notification_db, "SELECT 1 FROM email_deliveries"
                                                 " WHERE status = 'sent'"), 10, message="sent row")
        assert len(server.received()) == 1
        assert server.received()[0]["To"] == "alice@example.com"
    finally:
        server.stop()


def test_ses_provider_against_moto(notification_db, processes, sqs, queues, sqs_endpoint):
    import boto3

    ses = boto3.client("ses", region_name="us-east-1", endpoint_url=sqs_endpoint,
                       aws_access_key_id="local-dev", aws_secret_access_key="local-dev")
    sender = f"orders-{uuid.uuid4().hex[:8]}@shop.example"
    ses.verify_email_identity(EmailAddress=sender)
    before = ses.get_send_quota()["SentLast24Hours"]
    processes.worker("notification", NOTIFICATION_EMAIL_PROVIDER="ses",
                     NOTIFICATION_SES_ENDPOINT_URL=sqs_endpoint, NOTIFICATION_EMAIL_FROM=sender,
                     AWS_ACCESS_KEY_ID="local-dev", AWS_SECRET_ACCESS_KEY="local-dev", **FAST)
    order_id = str(uuid.uuid4())
    publish(sqs, queues, created_event(order_id, email="ses-customer@example.com"))
    publish(sqs, queues, Envelope(event_type="order.cancelled", aggregate_id=order_id,
                                  producer="order-service",
                                  data={"order_id": order_id, "customer_id": CUSTOMER,
                                        "reason": "changed my mind"}))

    def sent():
        found = rows(notification_db, "SELECT template, status, provider, provider_message_id"
                                      " FROM email_deliveries ORDER BY id")
        return found if len(found) == 2 and all(r["status"] == "sent" for r in found) else None

    mails = wait_until(sent, 30, message="both mails sent through SES")
    assert [m["template"] for m in mails] == ["order_confirmation", "order_cancelled"]
    assert all(m["provider"] == "ses" and m["provider_message_id"] for m in mails)
    assert ses.get_send_quota()["SentLast24Hours"] - before == 2
