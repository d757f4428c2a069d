"""Fault injection against the real Postgres and SQS emulator, with workers as child processes.

Each test breaks something from the outside — SIGKILL, SIGTERM, a broker
that refuses connections, a duplicate or poison message, two relays racing,
a handler held up by a lock another session holds — and then asserts on the
effects: every order gets exactly one shipment, no event is lost or applied
twice, dead letters carry their reason.

No production code has test hooks: a slow handler is made by holding, in the
test's own transaction, an uncommitted shipment row for that order, so the
delivery handler's INSERT waits on the unique index until the test lets go.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from contextlib import contextmanager

import psycopg2
import pytest

from shared.db import Database
from shared.messaging.envelope import Envelope
from shared.messaging.relay import OutboxRelay
from shared.messaging.sqs import sync_client
from shared.queues import TOPOLOGY, add_event, routes_for
from tests.support.asserts import queue_is_empty
from tests.support.payments import authorize
from tests.support.tcp_proxy import TcpProxy
from tests.support.wait import wait_until

ORDER = {
    "items": [{"sku": "SKU-3", "quantity": 1}],
    "customer_email": "ada@example.com",
    "shipping_address": {"name": "Ada", "line1": "1 Main St", "city": "Berlin",
                         "postal_code": "10115", "country": "DE"},
}
# Delivery ships on order.paid (the order service emits it once the payment is authorized).
ORDER_CREATED_QUEUE = "order-paid.fifo"
DELIVERY_INBOX = f"delivery:{ORDER_CREATED_QUEUE}"   # the delivery consumer's inbox name
# Redelivery after a crash waits out the visibility timeout; 30 s in the topology.
TEST_VISIBILITY_S = 3
OUTAGE_S = 10.0
ORDERING_DURING_OUTAGE_S = 5.0
SETTLE_TIMEOUT_S = 45.0


# ----------------------------------------------------------------------- helpers
def place_orders(client, headers, count: int) -> list[str]:
    """Place ``count`` orders through the API; every one must be accepted (201)."""
    ids = []
    for _ in range(count):
        response = client.post("/v1/orders", json=ORDER, headers=headers)
        assert response.status_code == 201, response.get_json()
        authorize(client.application.extensions["db"], response.get_json())
        ids.append(response.get_json()["id"])
    return ids


def shipments_per_order(delivery_db) -> dict[str, int]:
    """order id -> number of shipments (committed rows only)."""
    with delivery_db.transaction() as cur:
        cur.execute("SELECT order_id::text, count(*) AS n FROM shipments GROUP BY order_id")
        return {row["order_id"]: row["n"] for row in cur.fetchall()}


def wait_for_shipments(delivery_db, order_ids, timeout: float = SETTLE_TIMEOUT_S) -> None:
    """Wait until every order in ``order_ids`` has a shipment."""
    wanted = set(order_ids)
    wait_until(lambda: wanted <= set(shipments_per_order(delivery_db)), timeout=timeout,
               interval=0.2, message=f"shipments for {len(wanted)} orders")


def assert_exactly_one_shipment_each(delivery_db, order_ids) -> None:
    """One shipment per order, one inbox row per order.created, one shipment_created event."""
    per_order = shipments_per_order(delivery_db)
    assert per_order == {order_id: 1 for order_id in order_ids}
    with delivery_db.transaction() as cur:
        cur.execute("SELECT aggregate_id, count(*) AS n FROM outbox"
                    " WHERE event_type = 'delivery.shipment_created' GROUP BY aggregate_id")
        assert {r["aggregate_id"]: r["n"] for r in cur.fetchall()} == per_order
        cur.execute("SELECT count(*) AS n FROM inbox WHERE consumer = %s", (DELIVERY_INBOX,))
        assert cur.fetchone()["n"] == len(order_ids)


def receive_all(sqs, url: str, expected: int, timeout: float = 30.0) -> list[dict]:
    """Receive and delete until ``expected`` messages came; in arrival order."""
    got: list[dict] = []

    def more():
        response = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                       MessageSystemAttributeNames=["All"],
                                       MessageAttributeNames=["All"])
        messages = response.get("Messages", [])
        if messages:
            got.extend(messages)
            sqs.delete_message_batch(QueueUrl=url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)])
        return len(got) >= expected

    wait_until(more, timeout=timeout, interval=0, message=f"{expected} messages")
    return got


def order_created(order_id: str | None = None, **data_overrides) -> Envelope:
    """An ``order.paid`` envelope (what delivery ships on) as the order service writes it."""
    order_id = order_id or str(uuid.uuid4())
    data = {"order_id": order_id, "customer_id": "customer-1", "currency": "EUR",
            "total": "10.00", "shipping_address": ORDER["shipping_address"],
            "paid_at": "2026-12-03T12:00:00+00:00", **data_overrides}
    return Envelope(event_type="order.paid", aggregate_id=order_id, data=data,
                    producer="order-service", correlation_id=f"test-{order_id[:8]}")


def send(sqs, url: str, envelope: Envelope, dedup_id: str | None = None) -> None:
    """Publish as the relay does: group = aggregate, dedup id = event id unless given."""
    sqs.send_message(QueueUrl=url, MessageBody=envelope.to_json(),
                     MessageGroupId=envelope.aggregate_id,
                     MessageDeduplicationId=dedup_id or envelope.event_id,
                     MessageAttributes={"event_type": {"DataType": "String",
                                                       "StringValue": envelope.event_type}})


class ShipmentStall:
    """Holds an uncommitted shipment row for one order in the test's own transaction.

    The delivery handler for that order then waits on the unique index of
    ``shipments.order_id`` (a slow database, from the handler's point of view)
    until :meth:`release` rolls the row back and lets it through.
    """

    def __init__(self, database_url: str, order_id: str):
        self.order_id = order_id
        self.database_url = database_url
        self.conn = psycopg2.connect(database_url)
        with self.conn.cursor() as cur:
            cur.execute(
                "INSERT INTO delivery_svc.shipments (id, order_id, customer_id, carrier,"
                " tracking_number, status, shipping_address)"
                " VALUES (%s, %s, 'stall', 'stall', %s, 'CREATED', '{}')",
                (str(uuid.uuid4()), order_id, f"STALL-{uuid.uuid4().hex}"))

    def handler_waiting(self) -> bool:
        """True while a delivery-service session waits for our row lock."""
        probe = psycopg2.connect(self.database_url)
        try:
            with probe.cursor() as cur:
                cur.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name ="
                            " 'delivery-service' AND wait_event_type = 'Lock'")
                return cur.fetchone()[0] > 0
        finally:
            probe.close()

    def release(self) -> None:
        """Roll the row back: the waiting handler goes on and creates the real shipment."""
        if not self.conn.closed:
            self.conn.rollback()
            self.conn.close()


@contextmanager
def stalled_shipment(database_url: str, order_id: str):
    """A :class:`ShipmentStall` for ``order_id``, always released at the end."""
    stall = ShipmentStall(database_url, order_id)
    try:
        yield stall
    finally:
        stall.release()


# ------------------------------------------------------------------------- tests
@pytest.mark.slow
def test_sigkill_mid_batch_then_restart_gives_one_shipment_per_order(
        order_client, auth_header, processes, sqs, queues, delivery_db, clean_db):
    """A worker killed mid-batch: after a restart each order has exactly one shipment."""
    order_count = 40
    # Redelivery of the killed worker's in-flight messages waits out this timeout.
    sqs.set_queue_attributes(QueueUrl=queues[ORDER_CREATED_QUEUE],
                             Attributes={"VisibilityTimeout": str(TEST_VISIBILITY_S)})
    order_ids = place_orders(order_client, auth_header(), order_count)
    processes.worker("order")
    with stalled_shipment(clean_db, order_ids[order_count // 2]) as stall:
        delivery = processes.worker("delivery")
        # Kill while one batch is mid-way: its stalled handler holds the batch's other
        # (already committed, not yet deleted) messages in flight.
        wait_until(lambda: stall.handler_waiting() and shipments_per_order(delivery_db),
                   timeout=30, interval=0.05, message="a handler stuck mid-batch")
        delivery.kill()
        done_at_kill = len(shipments_per_order(delivery_db))
    assert 0 < done_at_kill < order_count
    assert "worker_stopped" not in delivery.log_text()

    restarted = processes.worker("delivery")
    wait_for_shipments(delivery_db, order_ids)
    wait_until(lambda: queue_is_empty(sqs, queues[ORDER_CREATED_QUEUE]), timeout=20,
               interval=0.2, message="order-created queue drained")
    assert_exactly_one_shipment_each(delivery_db, order_ids)
    assert restarted.alive()


@pytest.mark.slow
def test_sqs_outage_api_keeps_accepting_and_events_flow_after(
        app_for, sqs_endpoint, auth_header, processes, order_db, delivery_db):
    """SQS unreachable: orders are still accepted, events wait, then all flow once."""
    with TcpProxy.to_url(sqs_endpoint) as proxy:
        # The order API and worker reach SQS only through the proxy; delivery goes direct.
        app = app_for("order", SQS_ENDPOINT_URL=proxy.url)
        client = app.test_client()
        headers = auth_header()
        processes.worker("order", SQS_ENDPOINT_URL=proxy.url)
        processes.worker("delivery")
        before = place_orders(client, headers, 1)
        wait_for_shipments(delivery_db, before)  # the path works before the outage

        proxy.go_down()
        outage_started = time.monotonic()
        during = []
        while time.monotonic() - outage_started < ORDERING_DURING_OUTAGE_S:
            during += place_orders(client, headers, 1)  # 201 every time: SQS is not asked
            time.sleep(0.2)
        # A placed and paid order emits order.created, then order.paid and its status change.
        routes = sum(len(routes_for("order", event_type))
                     for event_type in ("order.created", "order.paid", "order.status_changed"))

        def outbox_rows():
            # One row per event and queue the topology routes it to.
            with order_db.transaction() as cur:
                cur.execute("SELECT id, aggregate_id, queue, attempts, last_error, published_at"
                            " FROM outbox WHERE aggregate_id = ANY(%s)", (during,))
                rows = cur.fetchall()
            assert len(rows) == len(during) * routes
            return rows

        def still_waiting():
            rows = outbox_rows()
            assert all(r["published_at"] is None for r in rows), "published during the outage"
            return rows

        # Every waiting event was tried and failed visibly, and the relay keeps retrying.
        # A relay round costs one failed call per queue (1-3 s each with botocore's retry;
        # a paid order's events go to four queues), and a row committed just after a round
        # began waits for the next one.
        def heads(rows):
            # Per stream (order, queue) only the oldest waiting row is sent: the rows behind
            # it (the same order's status change) keep their turn until it is published.
            first = {}
            for row in sorted(rows, key=lambda r: r["id"]):
                first.setdefault((row["aggregate_id"], row["queue"]), row)
            return list(first.values())

        wait_until(lambda: all(r["attempts"] > 0 and r["last_error"]
                               for r in heads(still_waiting())),
                   timeout=OUTAGE_S * 5, interval=0.2, message="every stream's waiting row tried")
        wait_until(lambda: time.monotonic() - outage_started >= OUTAGE_S
                   and max(r["attempts"] for r in still_waiting()) >= 2,
                   timeout=OUTAGE_S * 5, interval=0.2, message="end of outage, with retries")
        assert not set(during) & set(shipments_per_order(delivery_db))
        proxy.go_up()

        wait_for_shipments(delivery_db, before + during)
        wait_until(lambda: all(r["published_at"] for r in outbox_rows()), timeout=10,
                   message="outbox rows marked published")
        assert_exactly_one_shipment_each(delivery_db, before + during)

        # The order worker's consumer recovered too: shipment_created came back to the orders.
        def orders_with_shipment():
            with order_db.transaction() as cur:
                cur.execute("SELECT count(*) AS n FROM orders WHERE shipment_id IS NOT NULL")
                return cur.fetchone()["n"] == len(before + during)

        wait_until(orders_with_shipment, timeout=SETTLE_TIMEOUT_S, interval=0.2,
                   message="orders updated with their shipments")
        app.extensions["db"].close()


class CountingSqs:
    """Wraps a boto3 client and counts the SQS calls made through it."""

    def __init__(self, client):
        self._client = client
        self.calls = 0

    def __getattr__(self, name):
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        def counted(*args, **kwargs):
            self.calls += 1
            return attribute(*args, **kwargs)

        return counted


def test_relay_round_against_unreachable_sqs_marks_every_waiting_event_at_once(
        sqs_endpoint, queues, queue_prefix, order_db):
    """A relay round against a dead broker costs one call per queue and marks every row."""
    event_type = "order.paid"
    assert len(routes_for("order", event_type)) == 1
    streams = 35  # four batches' worth
    with order_db.transaction() as cur:
        for _ in range(streams):
            add_event(cur, "order", Envelope(event_type=event_type, aggregate_id=str(uuid.uuid4()),
                                             producer="order-service", data={}))
    with TcpProxy.to_url(sqs_endpoint) as proxy:
        proxy.go_down()
        client = CountingSqs(sync_client(proxy.url, "us-east-1"))
        relay = OutboxRelay(order_db, client, TOPOLOGY, "order", queue_prefix)
        published, _ = relay.publish_once()

    assert published == 0
    # One failed call for the queue, not one per batch of ten: the round ends quickly and
    # every waiting event shows the failure at once.
    assert client.calls == 1
    with order_db.transaction() as cur:
        cur.execute("SELECT attempts, last_error, published_at FROM outbox")
        rows = cur.fetchall()
    assert len(rows) == streams
    assert all(r["attempts"] == 1 and "EndpointConnectionError" in r["last_error"]
               and r["published_at"] is None for r in rows)


@pytest.mark.slow
def test_same_message_delivered_twice_creates_one_shipment(processes, sqs, queues, delivery_db):
    """Two copies of one event: one shipment, one inbox row, both copies deleted."""
    url = queues[ORDER_CREATED_QUEUE]
    event = order_created()
    # Two dedup ids, so the broker keeps both copies (a redelivery after its 5-minute window).
    send(sqs, url, event, dedup_id=f"{event.event_id}-a")
    send(sqs, url, event, dedup_id=f"{event.event_id}-b")
    worker = processes.worker("delivery")

    wait_for_shipments(delivery_db, [event.aggregate_id])
    wait_until(lambda: queue_is_empty(sqs, url), timeout=20, interval=0.2,
               message="both copies deleted")
    assert_exactly_one_shipment_each(delivery_db, [event.aggregate_id])
    assert worker.log_text().count("message_duplicate_skipped") == 1


@pytest.mark.slow
def test_poison_messages_are_dead_lettered_with_reasons_while_other_orders_flow(
        order_client, auth_header, processes, sqs, queues, delivery_db):
    """Poison messages go to the DLQ with their reason; every other order still ships."""
    url = queues[ORDER_CREATED_QUEUE]
    poisoned_group = str(uuid.uuid4())
    sqs.send_message(QueueUrl=url, MessageBody="{not json", MessageGroupId=poisoned_group,
                     MessageDeduplicationId=uuid.uuid4().hex)
    after_poison = order_created(poisoned_group)  # same group, right behind the poison
    send(sqs, url, after_poison)
    unknown = Envelope(event_type="order.exploded", aggregate_id=str(uuid.uuid4()), data={},
                       producer="order-service")
    send(sqs, url, unknown)
    bad_data = order_created(order_id="not-a-uuid")
    send(sqs, url, bad_data)
    order_ids = place_orders(order_client, auth_header(), 5)
    processes.worker("order")
    processes.worker("delivery")

    wait_for_shipments(delivery_db, order_ids + [poisoned_group])
    dead = receive_all(sqs, queues["order-paid-dlq.fifo"], 3)
    reasons = {}
    for message in dead:
        attributes = {k: v["StringValue"] for k, v in message["MessageAttributes"].items()}
        assert attributes["dlq_source_queue"] == ORDER_CREATED_QUEUE
        assert attributes["dlq_error"]
        reasons[message["Body"]] = (attributes["dlq_reason"], attributes["dlq_error"])
    assert reasons["{not json"][0] == "invalid_envelope"
    assert reasons[unknown.to_json()] == ("unknown_event_type", "order.exploded")
    assert reasons[bad_data.to_json()][0] == "permanent_error"
    assert "order_id" in reasons[bad_data.to_json()][1]
    wait_until(lambda: queue_is_empty(sqs, url), timeout=20, interval=0.2,
               message="order-created queue drained")
    assert_exactly_one_shipment_each(delivery_db, order_ids + [poisoned_group])


class RecordingSqs:
    """Wraps a boto3 client and records every event a send accepted, in time order."""

    def __init__(self, client, relay: str, sent: list, lock: threading.Lock):
        self._client = client
        self._relay = relay
        self._sent = sent
        self._lock = lock

    def send_message_batch(self, **kwargs):
        """Send, then note the accepted entries (relay, queue URL, aggregate, event id)."""
        response = self._client.send_message_batch(**kwargs)
        accepted = {entry["Id"] for entry in response.get("Successful", [])}
        with self._lock:  # recorded before the relay can commit, so before any later send
            for entry in kwargs["Entries"]:
                if entry["Id"] in accepted:
                    body = json.loads(entry["MessageBody"])
                    self._sent.append((self._relay, kwargs["QueueUrl"], body["aggregate_id"],
                                       body["event_id"]))
        return response

    def __getattr__(self, name):
        return getattr(self._client, name)


def test_two_relays_publish_each_event_once_in_commit_order(
        clean_db, sqs_endpoint, sqs, queues, queue_prefix, order_db):
    """Two relays on one outbox: every event sent once, each aggregate in commit order."""
    event_type = "order.status_changed"
    routes = [spec.name for spec in routes_for("order", event_type)]
    aggregates = [str(uuid.uuid4()) for _ in range(12)]
    events_per_aggregate = 12
    sent: list[tuple] = []
    lock = threading.Lock()
    stop = threading.Event()
    threads, dbs = [], []
    for name in ("relay-a", "relay-b"):
        db = Database(clean_db, "order_svc", 1, 3)
        dbs.append(db)
        client = RecordingSqs(sync_client(sqs_endpoint, "us-east-1"), name, sent, lock)
        relay = OutboxRelay(db, client, TOPOLOGY, "order", queue_prefix, poll_interval_s=0.2,
                            name=name)
        threads.append(threading.Thread(target=relay.run, args=(stop,), name=name, daemon=True))
    for thread in threads:
        thread.start()

    # Commit while both relays run, interleaved across aggregates, sometimes two per
    # transaction. Expected: per (queue, aggregate), the event ids in commit order.
    committed: dict[tuple[str, str], list[str]] = {}
    for seq in range(events_per_aggregate):
        per_tx = 1 + seq % 2
        for start in range(0, len(aggregates), per_tx):
            with order_db.transaction() as cur:
                for aggregate in aggregates[start:start + per_tx]:
                    event = Envelope(event_type=event_type, aggregate_id=aggregate,
                                     producer="order-service", data={"seq": seq})
                    add_event(cur, "order", event)
                    for queue_name in routes:
                        committed.setdefault((queue_name, aggregate), []).append(event.event_id)

    def all_published():
        with order_db.transaction() as cur:
            cur.execute("SELECT count(*) AS n FROM outbox WHERE published_at IS NULL")
            return cur.fetchone()["n"] == 0

    try:
        wait_until(all_published, timeout=60, interval=0.2, message="every row published")
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
        for db in dbs:
            db.close()

    # Each event sent once per queue, each aggregate's events in commit order, by both relays.
    queue_names = {url: name for name, url in queues.items()}
    sent_order: dict[tuple[str, str], list[str]] = {}
    for _, url, aggregate, event_id in sent:
        sent_order.setdefault((queue_names[url], aggregate), []).append(event_id)
    assert sent_order == committed
    assert {relay for relay, *_ in sent} == {"relay-a", "relay-b"}, "one relay did all the work"

    # And each queue delivers them that way: per group in commit order, each exactly once.
    for queue_name in routes:
        received = receive_all(sqs, queues[queue_name],
                               len(aggregates) * events_per_aggregate, timeout=60)
        arrived: dict[tuple[str, str], list[str]] = {}
        for message in received:
            body = json.loads(message["Body"])
            arrived.setdefault((queue_name, body["aggregate_id"]), []).append(body["event_id"])
        assert arrived == {k: v for k, v in committed.items() if k[0] == queue_name}


@pytest.mark.slow
def test_sigterm_under_load_drains_in_flight_handler_and_loses_nothing(
        order_app, auth_header, processes, delivery_db, clean_db):
    """SIGTERM mid-handler: the handler finishes, exit 0, and a new worker loses nothing."""
    headers = auth_header()
    client = order_app.test_client()
    processes.worker("order")
    [first] = place_orders(client, headers, 1)
    more_orders: list[str] = []

    def keep_ordering():
        stream_client = order_app.test_client()
        for _ in range(25):
            more_orders.extend(place_orders(stream_client, headers, 1))
            time.sleep(0.05)

    with stalled_shipment(clean_db, first) as stall:
        delivery = processes.worker("delivery")
        stream = threading.Thread(target=keep_ordering, name="order-stream")
        stream.start()
        wait_until(stall.handler_waiting, timeout=30, interval=0.05,
                   message="the first order's handler in flight")
        # Let the in-flight handler finish only after SIGTERM, while the drain waits for it.
        threading.Timer(1.0, stall.release).start()
        exit_code = delivery.terminate(timeout=30)
    stream.join(30)

    assert exit_code == 0
    log = delivery.log_text()
    assert "worker_stopping" in log and "worker_stopped" in log
    assert "worker_drain_timeout" not in log
    # The drained handler committed before the process exited.
    assert shipments_per_order(delivery_db).get(first) == 1

    processes.worker("delivery")
    everything = [first] + more_orders
    wait_for_shipments(delivery_db, everything)
    assert_exactly_one_shipment_each(delivery_db, everything)

