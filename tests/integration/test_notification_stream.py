"""The live stream (SSE) against real notification API processes (gunicorn -k gevent).

Notifications are committed by the same handler the worker runs (in this
process, or by a real worker in the end-to-end test); clients are
EventSource-like (tests/support/sse.py): they reconnect with Last-Event-ID.
"""

from __future__ import annotations

import json
import signal
import sys
import time
import uuid

import pytest
import requests

from devstack.paths import REPO_ROOT
from devstack.readiness import wait_for_http
from services.notification.consumers import OrderEventHandler
from services.notification.settings import notification_settings
from shared.config import load_settings
from shared.messaging.envelope import Envelope
from tests.conftest import free_port
from tests.support.sse import StreamClient, wait_connected
from tests.support.wait import wait_until

# Every test here starts service processes: deselect with -m "not slow".
pytestmark = pytest.mark.slow

# A short keep-alive: a stopping instance waits that long for idle connections.
STREAM_ENV = {"WEB_CONCURRENCY": "1", "NOTIFICATION_SSE_HEARTBEAT_S": "0.5",
              "GUNICORN_GRACEFUL_TIMEOUT": "5", "GUNICORN_KEEPALIVE": "1"}


def start_api(processes, port: int, **env):
    """The notification API as `make run` and compose start it: gunicorn's gevent worker."""
    proc = processes.start("notification-api", [
        sys.executable, "-m", "gunicorn", "-c", str(REPO_ROOT / "infra" / "gunicorn.conf.py"),
        "--worker-class", "gevent", "--worker-connections", "1000",
        "--bind", f"127.0.0.1:{port}", "services.notification.app:create_app()"],
        **{**STREAM_ENV, **env})
    wait_for_http(f"http://127.0.0.1:{port}/health/live", timeout=30, statuses=(200,),
                  proc=proc.proc)
    return proc


@pytest.fixture
def commit(service_env, notification_db):
    """``commit(event)``: handle an order event as the worker does (one transaction)."""
    handler = OrderEventHandler(notification_settings(load_settings("notification", service_env)))

    def run(event: Envelope) -> None:
        with notification_db.transaction() as cur:
            handler(cur, event)

    return run


def status(order_id: str, customer: str, value: str) -> Envelope:
    return Envelope(event_type="order.status_changed", aggregate_id=order_id,
                    producer="order-service",
                    data={"order_id": order_id, "customer_id": customer, "status": value})


@pytest.fixture
def clients():
    started: list[StreamClient] = []

    def open_(url: str, token: str, **kwargs) -> StreamClient:
        client = StreamClient(url, token, **kwargs).start()
        started.append(client)
        return client

    yield open_
    for client in started:
        client.close()


def stream_url(port: int, query: str = "") -> str:
    return f"http://127.0.0.1:{port}/v1/notifications/stream{query}"


def test_resume_replays_the_gap_without_duplicates(processes, port, commit, make_token, clients):
    start_api(processes, port)
    alice = make_token("alice", ("orders:read",))
    order, other = str(uuid.uuid4()), str(uuid.uuid4())
    first = clients(stream_url(port), alice, reconnect=False)
    narrowed = clients(stream_url(port, f"?order_id={other}"), alice)
    admin = clients(stream_url(port), make_token("ops", ("orders:read", "admin")))
    wait_connected(first, narrowed, admin)

    for value in ("S1", "S2", "S3"):
        commit(status(order, "alice", value))
    commit(status(str(uuid.uuid4()), "bob", "BOB"))  # another customer's order
    wait_until(lambda: len(first.ids()) == 3, 10, message="three live events")
    wait_until(lambda: len(admin.ids()) == 4, 10, message="admin sees every order")
    seen = first.ids()
    assert seen == sorted(seen)
    assert [json.loads(e.data)["data"]["status"] for e in first.data_events()] == ["S1", "S2", "S3"]
    assert {e.event for e in first.data_events()} == {"order.status_changed"}
    first.close()  # the client goes away ...

    for value in ("S4", "S5"):  # ... and misses these
        commit(status(order, "alice", value))
    header_resume = clients(stream_url(port), alice, last_event_id=str(seen[-1]))
    query_resume = StreamClient(stream_url(port, f"?last_event_id={seen[-1]}"), alice,
                                reconnect=False).start()
    try:
        wait_connected(header_resume, query_resume)
        commit(status(order, "alice", "S6"))  # live, after the replay
        for resumed in (header_resume, query_resume):
            wait_until(lambda r=resumed: len(r.ids()) == 3, 10, message="replay then live")
            assert [json.loads(e.data)["data"]["status"] for e in resumed.data_events()] == [
                "S4", "S5", "S6"]
            assert resumed.ids() == sorted(set(resumed.ids())) and resumed.ids()[0] > seen[-1]
    finally:
        query_resume.close()
    assert narrowed.data_events() == []  # ?order_id= narrows to an order with no events


def test_every_instance_streams_every_event(processes, commit, make_token, clients):
    ports = [free_port(), free_port()]
    for p in ports:
        start_api(processes, p)
    token = make_token("carol", ("orders:read",))
    readers = [clients(stream_url(p), token) for p in ports for _ in range(2)]
    wait_connected(*readers)
    order = str(uuid.uuid4())
    for n in range(5):
        commit(status(order, "carol", f"S{n}"))
    for reader in readers:
        wait_until(lambda r=reader: len(r.ids()) == 5, 10, message="all five on every instance")
    assert len({tuple(r.ids()) for r in readers}) == 1


def test_clients_resume_across_an_instance_restart(processes, port, commit, make_token, clients):
    api = start_api(processes, port)
    token = make_token("dave", ("orders:read",))
    readers = [clients(stream_url(port), token) for _ in range(3)]
    wait_connected(*readers)
    order = str(uuid.uuid4())
    commit(status(order, "dave", "BEFORE"))
    for reader in readers:
        wait_until(lambda r=reader: len(r.ids()) == 1, 10, message="first event")

    api.proc.send_signal(signal.SIGTERM)
    # Streams end at once with a reason (not after the graceful timeout) ...
    wait_until(lambda: all(any(e.event == "stream.closed" and "shutdown" in e.data
                               for e in r.events) for r in readers), 2,
               message="every stream closed for the shutdown")
    assert api.proc.wait(15) == 0  # ... and the instance exits cleanly
    commit(status(order, "dave", "WHILE-DOWN-1"))
    commit(status(order, "dave", "WHILE-DOWN-2"))
    api = start_api(processes, port)
    commit(status(order, "dave", "AFTER"))
    for reader in readers:
        wait_until(lambda r=reader: len(r.ids()) == 4, 20, message="resumed after restart")
        assert [json.loads(e.data)["data"]["status"] for e in reader.data_events()] == [
            "BEFORE", "WHILE-DOWN-1", "WHILE-DOWN-2", "AFTER"]
        assert reader.connections >= 2

    api.kill()  # a crash this time: clients keep retrying until the instance is back
    commit(status(order, "dave", "AFTER-CRASH"))
    start_api(processes, port)
    for reader in readers:
        wait_until(lambda r=reader: len(r.ids()) == 5, 20, message="resumed after a crash")
        assert len(set(reader.ids())) == 5


def test_heartbeat_and_clean_close_when_the_token_expires(processes, port, make_token):
    start_api(processes, port)
    token = make_token("erin", ("orders:read",), ttl_s=3)
    lines, started = [], time.monotonic()
    with requests.get(stream_url(port), headers={"Authorization": f"Bearer {token}"}, stream=True,
                      timeout=(2, 10)) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        assert response.headers["Cache-Control"] == "no-cache"
        for line in response.iter_lines(decode_unicode=True):
            lines.append(line)
    # The server ended the response itself, within a second of the expiry.
    assert time.monotonic() - started < 5
    assert lines.count(": heartbeat") >= 3
    assert "event: stream.closed" in lines
    assert json.loads(lines[lines.index("event: stream.closed") + 1].removeprefix("data: ")) == {
        "reason": "token_expired"}


def test_the_whole_pipeline_streams_an_order(order_client, processes, port, make_token, clients,
                                             auth_header):
    """order API -> outbox -> order-status.fifo -> notification worker -> NOTIFY -> SSE."""
    processes.worker("order")
    processes.worker("notification", NOTIFICATION_EMAIL_ENABLED="false")
    start_api(processes, port)
    reader = clients(stream_url(port), make_token("customer-1", ("orders:read",)))
    wait_connected(reader)
    order = {"items": [{"sku": "SKU-1", "quantity": 1}], "customer_email": "c1@example.com",
             "shipping_address": {"name": "C One", "line1": "1 St", "city": "Berlin",
                                  "postal_code": "10115", "country": "DE"}}
    created = order_client.post("/v1/orders", json=order, headers=auth_header())
    assert created.status_code == 201
    order_id = created.get_json()["id"]
    assert order_client.post(f"/v1/orders/{order_id}/cancel", json={},
                             headers=auth_header()).status_code == 200
    wait_until(lambda: len(reader.ids()) == 3, 30, message="created, cancelled, status change")
    assert [e.event for e in reader.data_events()] == ["order.created", "order.cancelled",
                                                       "order.status_changed"]
    assert {json.loads(e.data)["order_id"] for e in reader.data_events()} == {order_id}
