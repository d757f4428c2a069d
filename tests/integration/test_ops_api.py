"""The ops service against real Postgres, SQS (moto over HTTP) and services over real HTTP.

Dead letters are made by the real consumer (a handler that refuses), so their
``dlq_*`` attributes are the runtime's own. The order and delivery admin APIs
are served over HTTP; the notification service's URL points at a closed port
(it is "down"), so every aggregate shows it as unreachable and the rest as usual.
"""

from __future__ import annotations

import json
import threading
import uuid

import pytest

from services.ops import repository as ops_repo
from shared.admin.state import ConsumerState
from shared.messaging import outbox
from shared.messaging.consumer import Consumer, PermanentError
from shared.messaging.sqs import async_client
from shared.queues import queue
from tests.integration.test_messaging_contract import FAST, ConsumerThread, envelope, send
from tests.support.asserts import assert_problem, queue_depths
from tests.support.servers import AppServer
from tests.support.wait import wait_until

SPEC = queue("order-created.fifo")
ADMIN = ("admin",)
CONSUMER = "order:ops-test"


@pytest.fixture
def down_url(port) -> str:
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def ops(app_for, inventory_url, down_url):
    """The ops app, its peers: order and delivery served over HTTP, inventory's session
    server, and notification down."""
    servers = [AppServer(app_for("order"), "order"), AppServer(app_for("delivery"), "delivery")]
    app = app_for("ops", ORDER_URL=servers[0].url, DELIVERY_URL=servers[1].url,
                  INVENTORY_URL=inventory_url, NOTIFICATION_URL=down_url,
                  OPS_PEER_TIMEOUT_S="1", OPS_PEER_ATTEMPTS="1")
    yield app
    for server in servers:
        server.stop()


@pytest.fixture
def ops_client(ops):
    return ops.test_client()


@pytest.fixture
def admin(auth_header):
    return auth_header("operator-1", ADMIN)


@pytest.fixture
def consumer(order_db, sqs_endpoint, queue_prefix, queues):
    """A real consumer on order-created.fifo: events with ``refuse`` go to the DLQ at once;
    ``handled`` lists the event ids its handler committed."""
    handled: list[str] = []
    lock = threading.Lock()

    def handler(cur, event):
        if event.data.get("refuse"):
            raise PermanentError("the carrier does not serve this postal code")
        with lock:
            handled.append(event.event_id)

    runner = ConsumerThread(Consumer(
        CONSUMER, SPEC, order_db, {"order.created": handler},
        lambda: async_client(sqs_endpoint, "us-east-1"), queue_prefix, FAST,
        middleware=[ConsumerState()]))
    runner.start()
    yield handled
    runner.stop()


def _dead_letters(sqs, queues, count: int):
    wait_until(lambda: queue_depths(sqs, queues[SPEC.dlq_name])[0] >= count, timeout=20,
               message=f"{count} dead letter(s)")


def test_dead_letters_are_listed_with_their_facts(ops_client, admin, sqs, queues, consumer):
    order_id = str(uuid.uuid4())
    event = envelope(order_id, refuse=True)
    send(sqs, queues[SPEC.name], event)
    _dead_letters(sqs, queues, 1)
    response = ops_client.get(f"/v1/ops/dlq/{SPEC.name}", headers=admin)
    assert response.status_code == 200, response.get_data(as_text=True)
    [letter] = response.json["dead_letters"]
    assert letter["reason"] == "permanent_error"
    assert "postal code" in letter["error"]
    assert letter["source_queue"] == SPEC.name and letter["consumer"] == CONSUMER
    assert letter["receive_count"] == 1
    assert letter["event_type"] == "order.created" and letter["event_id"] == event.event_id
    assert letter["order_id"] == order_id and letter["group_id"] == order_id
    assert response.json["oldest_failed_at"] == letter["failed_at"]
    # A peek leaves them where they are; the DLQ's name is accepted as well.
    again = ops_client.get(f"/v1/ops/dlq/{SPEC.dlq_name}", headers=admin)
    assert [m["message_id"] for m in again.json["dead_letters"]] == [letter["message_id"]]


def _dead_letter(sqs, queues, event) -> None:
    """``event`` in the DLQ, as the consumer writes it (the reason attributes included)."""
    sqs.send_message(
        QueueUrl=queues[SPEC.dlq_name], MessageBody=event.to_json(),
        MessageGroupId=event.aggregate_id, MessageDeduplicationId=uuid.uuid4().hex,
        MessageAttributes={k: {"DataType": "String", "StringValue": v} for k, v in {
            "dlq_reason": "max_receives_exceeded", "dlq_source_queue": SPEC.name,
            "dlq_consumer": CONSUMER, "dlq_receive_count": "5", "dlq_error": "boom"}.items()})


def _received_bodies(sqs, url) -> list[dict]:
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                   MessageSystemAttributeNames=["All"]).get("Messages", [])
    return [json.loads(m["Body"]) for m in messages]


def test_replay_of_one_order_keeps_the_others_and_is_audited(ops_client, ops, admin, sqs,
                                                            queues):
    first, second = envelope("order-1", seq=1), envelope("order-2", seq=1)
    for event in (first, second):
        _dead_letter(sqs, queues, event)
    response = ops_client.post(f"/v1/ops/dlq/{SPEC.name}/replay", headers=admin,
                               json={"order_id": "order-1"})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.json["moved"] == 1 and response.json["method"] == "portable"
    replayed = _received_bodies(sqs, queues[SPEC.name])
    assert [b["event_id"] for b in replayed] == [first.event_id]
    left = ops_client.get(f"/v1/ops/dlq/{SPEC.name}", headers=admin).json["dead_letters"]
    assert [m["event_id"] for m in left] == [second.event_id]
    assert left[0]["receive_count"] == 5 and left[0]["reason"] == "max_receives_exceeded"
    with ops.extensions["db"].transaction() as cur:
        [entry] = ops_repo.recent(cur, 10, "dlq.replay")
    assert entry["actor"] == "operator-1" and entry["outcome"] == "ok"
    assert entry["parameters"] == {"order_id": "order-1"}
    assert entry["result"]["moved"] == 1 and entry["target"] == SPEC.dlq_name


def test_a_filtered_replay_never_moves_a_later_event_past_an_earlier_one(ops_client, admin,
                                                                         sqs, queues):
    """Per-order order: the order's first dead letter is not in the set, so its second,
    although it is, stays behind it; another order's matching one moves."""
    created = envelope("order-1", seq=1)
    later = envelope("order-1", seq=2, event_type="order.cancelled")
    other = envelope("order-2", seq=1, event_type="order.cancelled")
    for event in (created, later, other):
        _dead_letter(sqs, queues, event)
    response = ops_client.post(f"/v1/ops/dlq/{SPEC.name}/replay", headers=admin,
                               json={"event_type": "order.cancelled"})
    assert response.json["moved"] == 1, response.get_data(as_text=True)
    assert [b["event_id"] for b in _received_bodies(sqs, queues[SPEC.name])] == [other.event_id]
    left = ops_client.get(f"/v1/ops/dlq/{SPEC.name}", headers=admin).json["dead_letters"]
    assert sorted(m["event_id"] for m in left) == sorted([created.event_id, later.event_id])
    # Replaying the order as a whole moves both, in their order.
    whole = ops_client.post(f"/v1/ops/dlq/{SPEC.name}/replay", headers=admin,
                            json={"order_id": "order-1"})
    assert whole.json["moved"] == 2
    assert [b["data"]["seq"] for b in _received_bodies(sqs, queues[SPEC.name])] == [1, 2]


def test_a_replayed_event_already_handled_is_absorbed_by_the_inbox(ops_client, admin, sqs,
                                                                  queues, consumer):
    event = envelope(str(uuid.uuid4()))
    send(sqs, queues[SPEC.name], event)
    wait_until(lambda: consumer == [event.event_id], timeout=20, message="handled once")
    # The same event in the DLQ, as if its delete had been lost and it was dead-lettered later.
    sqs.send_message(QueueUrl=queues[SPEC.dlq_name], MessageBody=event.to_json(),
                     MessageGroupId=event.aggregate_id, MessageDeduplicationId=uuid.uuid4().hex)
    response = ops_client.post(f"/v1/ops/dlq/{SPEC.name}/replay", headers=admin,
                               json={"all": True})
    assert response.status_code == 200, response.get_data(as_text=True)
    wait_until(lambda: queue_depths(sqs, queues[SPEC.name]) == (0, 0)
               and queue_depths(sqs, queues[SPEC.dlq_name]) == (0, 0), timeout=20,
               message="replayed and acknowledged")
    assert consumer == [event.event_id]  # the handler did not run a second time


def test_purge_needs_the_dlq_name_and_is_audited_either_way(ops_client, ops, admin, sqs, queues):
    for _ in range(2):
        sqs.send_message(QueueUrl=queues[SPEC.dlq_name], MessageBody="{}", MessageGroupId="g",
                         MessageDeduplicationId=uuid.uuid4().hex)
    wrong = ops_client.post(f"/v1/ops/dlq/{SPEC.name}/purge", headers=admin,
                            json={"confirm": SPEC.name})
    assert_problem(wrong, 422, "confirmation-mismatch", ["confirm"])
    assert queue_depths(sqs, queues[SPEC.dlq_name])[0] == 2
    right = ops_client.post(f"/v1/ops/dlq/{SPEC.name}/purge", headers=admin,
                            json={"confirm": SPEC.dlq_name})
    assert right.status_code == 200, right.get_data(as_text=True)
    assert right.json["purged_about"] == 2
    wait_until(lambda: queue_depths(sqs, queues[SPEC.dlq_name]) == (0, 0), timeout=10,
               message="purged")
    audit = ops_client.get("/v1/ops/audit?action=dlq.purge", headers=admin).json["entries"]
    assert [e["outcome"] for e in audit] == ["ok", "refused"]
    assert audit[1]["parameters"] == {"confirm": SPEC.name}


def test_status_shows_what_it_can_and_names_what_is_down(ops_client, admin, sqs, queues):
    response = ops_client.get("/v1/ops/status", headers=admin)
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.json
    assert {q["name"] for q in body["queues"]} >= {SPEC.name}
    assert body["queues_error"] is None
    assert all(q["oldest_age_s"] is None for q in body["queues"])
    for part in ("outbox", "consumers", "breakers", "blocked_groups"):
        by_service = {a["service"]: a for a in body[part]}
        assert by_service["notification"]["error"].startswith("unreachable"), part
        for name in ("order", "delivery", "inventory"):
            assert by_service[name]["error"] is None and by_service[name]["data"]["service"] == name


def test_outbox_retry_goes_to_the_service_and_is_audited(ops_client, admin, order_db):
    event = envelope("order-x")
    with order_db.transaction() as cur:
        outbox.add_event(cur, _OneQueue(), "order", event)
        cur.execute("SELECT id FROM outbox")
        row_id = cur.fetchone()["id"]
        outbox.record_failure(cur, row_id, 2, "EndpointConnectionError", 600)
    listed = ops_client.get("/v1/ops/outbox", headers=admin).json["services"]
    order = next(a for a in listed if a["service"] == "order")
    assert [r["id"] for r in order["data"]["failed"]] == [row_id]
    response = ops_client.post("/v1/ops/outbox/order/retry", headers=admin, json={"ids": [row_id]})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.json["retried"] == [row_id]
    down = ops_client.post("/v1/ops/outbox/notification/retry", headers=admin,
                           json={"all_failed": True})
    assert_problem(down, 503, "service-unavailable")
    unknown = ops_client.post("/v1/ops/outbox/auth/retry", headers=admin,
                              json={"all_failed": True})
    assert_problem(unknown, 404, "not-found")
    audit = ops_client.get("/v1/ops/audit?action=outbox.retry", headers=admin).json["entries"]
    assert [(e["target"], e["outcome"]) for e in audit] == [("notification", "failed"),
                                                            ("order", "ok")]


class _OneQueue:
    def routes_for(self, service, event_type):
        return [SPEC]


def test_consumers_and_blocked_groups_are_gathered(ops_client, admin, order_db):
    ConsumerState().beat(order_db)  # nothing consumed yet: no rows
    with order_db.transaction() as cur:
        cur.execute("INSERT INTO blocked_groups (consumer, group_id, blocked_since, receive_count,"
                    " retry_in_s, last_error) VALUES ('order:x', 'order-9',"
                    " now() - interval '6 minutes', 4, 8, 'boom')")
    groups = ops_client.get("/v1/ops/groups/blocked?min_age_s=300", headers=admin).json
    order = next(a for a in groups["services"] if a["service"] == "order")
    assert [g["group_id"] for g in order["data"]["groups"]] == ["order-9"]
    breakers = ops_client.get("/v1/ops/breakers", headers=admin).json["services"]
    assert {a["service"] for a in breakers} == {"order", "delivery", "inventory", "notification",
                                                "ops"}
    ops_breakers = next(a for a in breakers if a["service"] == "ops")["data"]["breakers"]
    assert ops_breakers["ops-notification"]["failures"] >= 1


@pytest.mark.parametrize("path, body, field", [
    (f"/v1/ops/dlq/{SPEC.name}/replay", {}, "all"),
    (f"/v1/ops/dlq/{SPEC.name}/replay", {"all": True, "order_id": "x"}, "all"),
    (f"/v1/ops/dlq/{SPEC.name}/replay", {"limit": 0}, "limit"),
    (f"/v1/ops/dlq/{SPEC.name}/replay", {"message_ids": []}, "message_ids"),
    (f"/v1/ops/dlq/{SPEC.name}/replay", {"all": True, "extra": 1}, "extra"),
    (f"/v1/ops/dlq/{SPEC.name}/purge", {}, "confirm"),
    ("/v1/ops/outbox/order/retry", {"ids": [1], "all_failed": True}, "ids"),
])
def test_bad_actions_are_problems_and_not_audited(ops_client, ops, admin, path, body, field):
    assert_problem(ops_client.post(path, headers=admin, json=body), 422, "validation-error",
                   [field])
    with ops.extensions["db"].transaction() as cur:
        assert ops_repo.recent(cur, 10, None) == []


@pytest.mark.parametrize("path, status, type_", [
    ("/v1/ops/dlq/no-such.fifo", 404, "not-found"),
    (f"/v1/ops/dlq/{SPEC.name}?limit=0", 422, "validation-error"),
    ("/v1/ops/audit?action=drop", 422, "validation-error"),
    ("/v1/ops/groups/blocked?min_age_s=-1", 422, "validation-error"),
    (f"/v1/ops/dlq/{SPEC.name}?order=x", 422, "validation-error"),
])
def test_bad_reads_are_problems(ops_client, admin, path, status, type_):
    assert_problem(ops_client.get(path, headers=admin), status, type_)


def test_an_unreachable_broker_is_a_503(app_for, auth_header, down_url):
    app = app_for("ops", SQS_ENDPOINT_URL=down_url, NOTIFICATION_URL=down_url,
                  ORDER_URL=down_url, DELIVERY_URL=down_url, INVENTORY_URL=down_url)
    client = app.test_client()
    response = client.get("/v1/ops/queues", headers=auth_header("operator-1", ADMIN))
    body = assert_problem(response, 503, "broker-unavailable")
    assert "EndpointConnectionError" in body["detail"] and response.headers["Retry-After"]
    status = client.get("/v1/ops/status", headers=auth_header("operator-1", ADMIN))
    assert status.status_code == 200 and status.json["queues_error"]


def test_actions_are_rate_limited_per_operator(app_for, auth_header, sqs, queues):
    client = app_for("ops", OPS_ACTION_RATE_LIMIT="1/minute").test_client()
    headers = auth_header("operator-rl", ADMIN)
    first = client.post(f"/v1/ops/dlq/{SPEC.name}/replay", headers=headers, json={"limit": 1})
    assert first.status_code == 200, first.get_data(as_text=True)
    second = client.post(f"/v1/ops/dlq/{SPEC.name}/replay", headers=headers, json={"limit": 1})
    assert_problem(second, 429, "too-many-requests")
