"""The per-service admin view (shared.admin) against real Postgres and SQS.

The real consumer runs with :class:`shared.admin.state.ConsumerState` as its
middleware (as every worker does): a failing head shows up as a blocked group
with its error, and goes away when it succeeds; heartbeats show the counts;
the outbox report lists failed rows and ``retry`` makes them due now.
"""

from __future__ import annotations

import threading
import uuid

import pytest

from shared.admin.state import ConsumerState
from shared.messaging import outbox
from shared.messaging.consumer import Consumer
from shared.messaging.sqs import async_client
from shared.queues import queue
from shared.resilience import BreakerRegistry
from tests.integration.test_messaging_contract import FAST, ConsumerThread, envelope, send
from tests.support.asserts import assert_problem, nothing_written
from tests.support.wait import wait_until

ADMIN = ("admin",)
SPEC = queue("order-created.fifo")
CONSUMER = "order:test-admin"


@pytest.fixture
def admin(auth_header):
    return auth_header("operator-1", ADMIN)


@pytest.fixture
def failing_consumer(order_db, sqs_endpoint, queue_prefix, queues):
    """A real consumer on order-created.fifo whose handler fails while ``failing`` is set."""
    failing = threading.Event()
    failing.set()
    handled: list[str] = []

    def handler(cur, event):
        if failing.is_set():
            raise RuntimeError("carrier API answered 502")
        handled.append(event.event_id)

    breakers = BreakerRegistry()
    breakers.get("carrier-api")  # a worker's breaker: it travels with the heartbeat
    state = ConsumerState(breakers=[breakers])
    consumer = Consumer(CONSUMER, SPEC, order_db, {"order.created": handler},
                        lambda: async_client(sqs_endpoint, "us-east-1"), queue_prefix, FAST,
                        middleware=[state])
    runner = ConsumerThread(consumer)
    runner.start()
    yield failing, handled, state, queues[SPEC.name]
    runner.stop()


def test_a_failing_head_blocks_its_group_until_it_succeeds(order_client, order_db, admin, sqs,
                                                           failing_consumer):
    failing, handled, state, url = failing_consumer
    order_id = str(uuid.uuid4())
    event = envelope(order_id)
    send(sqs, url, event)

    def blocked():
        groups = order_client.get("/v1/admin/groups/blocked", headers=admin).json["groups"]
        return [g for g in groups if g["group_id"] == order_id]

    found = wait_until(blocked, timeout=20, interval=0.5, message="the group shows up as blocked")
    assert found[0]["kind"] == "failing" and found[0]["consumer"] == CONSUMER
    assert found[0]["event_id"] == event.event_id and found[0]["event_type"] == "order.created"
    assert "carrier API answered 502" in found[0]["last_error"]
    assert found[0]["receive_count"] >= 1 and found[0]["blocked_since"]

    failing.clear()
    wait_until(lambda: handled == [event.event_id], timeout=20, message="handled after the fix")
    wait_until(lambda: not blocked(), timeout=10, interval=0.5, message="the group is no longer blocked")

    state.beat(order_db)
    consumers = order_client.get("/v1/admin/consumers", headers=admin).json["consumers"]
    mine = [c for c in consumers if c["consumer"] == CONSUMER]
    assert len(mine) == 1 and mine[0]["alive"] is True
    assert mine[0]["handled"] == 1 and mine[0]["failed"] >= 1 and mine[0]["dead_lettered"] == 0
    assert mine[0]["last_message_at"]
    assert mine[0]["breakers"]["carrier-api"]["state"] == "closed"
    workers = order_client.get("/v1/admin/breakers", headers=admin).json["workers"]
    assert [w["breakers"]["carrier-api"]["state"] for w in workers] == ["closed"]


def test_min_age_filters_blocked_groups(order_client, order_db, admin):
    with order_db.transaction() as cur:
        cur.execute("INSERT INTO blocked_groups (consumer, group_id, blocked_since, receive_count,"
                    " retry_in_s, last_error) VALUES ('c', 'g-old', now() - interval '10 minutes',"
                    " 3, 4, 'boom'), ('c', 'g-new', now(), 1, 1, 'boom')")
    old = order_client.get("/v1/admin/groups/blocked?min_age_s=300", headers=admin).json["groups"]
    assert [g["group_id"] for g in old] == ["g-old"]
    assert old[0]["blocked_for_s"] >= 600 - 5


def _failed_row(cur, aggregate: str) -> int:
    event = envelope(aggregate)
    outbox.add_event(cur, _Topology(), "order", event)
    cur.execute("SELECT id FROM outbox WHERE event_id = %s", (event.event_id,))
    row_id = cur.fetchone()["id"]
    outbox.record_failure(cur, row_id, 3, "EndpointConnectionError: broker down", 60)
    return row_id


class _Topology:
    def routes_for(self, service, event_type):
        return [SPEC]


def test_outbox_report_and_retry(order_client, order_db, admin):
    with order_db.transaction() as cur:
        first, second = _failed_row(cur, "order-a"), _failed_row(cur, "order-b")
    report = order_client.get("/v1/admin/outbox", headers=admin)
    assert report.status_code == 200, report.get_data(as_text=True)
    assert report.json["service"] == "order"
    [summary] = report.json["queues"]
    assert summary["queue"] == SPEC.name and summary["pending"] == 2 and summary["failed"] == 2
    assert summary["max_attempts"] == 3
    assert {r["id"] for r in report.json["failed"]} == {first, second}
    assert report.json["failed"][0]["last_error"].startswith("EndpointConnectionError")

    one = order_client.post("/v1/admin/outbox/retry", headers=admin, json={"ids": [first, 999999]})
    assert one.status_code == 200 and one.json["retried"] == [first]
    with order_db.transaction() as cur:
        cur.execute("SELECT id, next_attempt_at <= now() AS due FROM outbox ORDER BY id")
        assert [(r["id"], r["due"]) for r in cur.fetchall()] == [(first, True), (second, False)]
    every = order_client.post("/v1/admin/outbox/retry", headers=admin, json={"all_failed": True})
    assert every.json["retried"] == [first, second]


@pytest.mark.parametrize("body, field", [
    ({}, "ids"), ({"ids": [1], "all_failed": True}, "ids"), ({"ids": []}, "ids"),
    ({"ids": ["x"]}, "ids.0"), ({"ids": [0]}, "ids.0"), ({"everything": True}, "everything"),
    ({"ids": [2**63]}, "ids.0"),  # beyond bigint: no such row (found by schemathesis)
])
def test_bad_retry_requests_are_problems_and_change_nothing(order_client, order_db, admin,
                                                            body, field):
    with order_db.transaction() as cur:
        _failed_row(cur, "order-c")
    with nothing_written(order_db, ("outbox",), lambda: _due(order_db)):
        response = order_client.post("/v1/admin/outbox/retry", headers=admin, json=body)
    assert_problem(response, 422, "validation-error", [field])


def _due(db):
    with db.transaction() as cur:
        cur.execute("SELECT count(*) AS n FROM outbox WHERE next_attempt_at <= now()")
        return cur.fetchone()["n"]


@pytest.mark.parametrize("query, field", [("limit=0", "limit"), ("limit=x", "limit"),
                                          ("min_age_s=-1", "min_age_s")])
def test_bad_queries_are_problems(order_client, admin, query, field):
    path = "/v1/admin/outbox" if query.startswith("limit") else "/v1/admin/groups/blocked"
    assert_problem(order_client.get(f"{path}?{query}", headers=admin), 422, "validation-error",
                   [field])


def test_breakers_are_reported(order_client, admin):
    response = order_client.get("/v1/admin/breakers", headers=admin)
    assert response.status_code == 200
    assert response.json["service"] == "order"
    assert all(b["state"] in ("closed", "open", "half-open") for b in response.json["breakers"].values())


def test_admin_routes_are_rate_limited_per_caller(app_for, auth_header):
    app = app_for("delivery")
    app.config["ADMIN_RATE_LIMIT"] = "2/minute"
    client = app.test_client()
    first, other = auth_header("operator-rl", ADMIN), auth_header("operator-2", ADMIN)
    statuses = [client.get("/v1/admin/breakers", headers=first).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert_problem(client.get("/v1/admin/breakers", headers=first), 429, "too-many-requests")
    assert client.get("/v1/admin/breakers", headers=other).status_code == 200


@pytest.mark.slow
def test_a_running_worker_reports_its_consumers(processes, delivery_app, admin):
    """The worker process installs the admin middleware and beats: its consumers show up alive."""
    delivery_app.config["ADMIN_RATE_LIMIT"] = "10000/minute"  # this test polls it
    delivery_client = delivery_app.test_client()
    processes.worker("delivery")

    def alive():
        rows = delivery_client.get("/v1/admin/consumers", headers=admin).json["consumers"]
        return sorted(r["consumer"] for r in rows if r["alive"])

    names = wait_until(alive, timeout=60, message="the delivery worker's heartbeats")
    assert names == ["delivery:order-cancelled.fifo", "delivery:order-created.fifo"]
