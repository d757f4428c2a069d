"""Notification HTTP API: webhook subscriptions (bad input, ownership, secrets), ping,
delivery log, redelivery, notification history. Flask test client, real Postgres.

No test here makes the service call anything but a receiver on 127.0.0.1 (public
addresses are only ever validated, never contacted).
"""

from __future__ import annotations

import json
import threading
import uuid

import pytest

from services.notification.consumers import OrderEventHandler
from shared.messaging.envelope import Envelope
from tests.support.asserts import assert_problem
from tests.support.receiver import Receiver
from tests.support.wait import wait_until

MANAGE = ("webhooks:manage",)
ADMIN = ("webhooks:manage", "admin", "orders:read")
PUBLIC_URL = "https://93.184.216.34/hooks/orders"  # validated only, never contacted


def body(**changes) -> dict:
    base = {"name": "orders to ERP", "topic": "*", "delivery_url": PUBLIC_URL}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def create(client, headers, expect=201, **changes):
    response = client.post("/v1/webhooks", json=body(**changes), headers=headers)
    assert response.status_code == expect, response.get_data(as_text=True)
    return response.get_json()


def count(db, table: str) -> int:
    with db.transaction() as cur:
        cur.execute(f"SELECT count(*) AS n FROM {table}")  # noqa: S608 - test constant
        return cur.fetchone()["n"]


@pytest.fixture
def manage(auth_header):
    return auth_header("partner-1", MANAGE)


# --- create: bad input -------------------------------------------------------------------------
BAD = {
    "ftp-url": ({"delivery_url": "ftp://93.184.216.34/x"}, "delivery_url"),
    "no-scheme": ({"delivery_url": "93.184.216.34/x"}, "delivery_url"),
    "loopback": ({"delivery_url": "http://127.0.0.2:8080/hook"}, "delivery_url"),
    "private-10": ({"delivery_url": "http://10.0.0.5/hook"}, "delivery_url"),
    "private-192": ({"delivery_url": "https://192.168.1.10/hook"}, "delivery_url"),
    "link-local": ({"delivery_url": "http://169.254.10.1/hook"}, "delivery_url"),
    "metadata": ({"delivery_url": "http://169.254.169.254/latest/meta-data/"}, "delivery_url"),
    "ipv6-loopback-mapped": ({"delivery_url": "http://[::ffff:10.0.0.1]/hook"}, "delivery_url"),
    "unspecified": ({"delivery_url": "http://0.0.0.0:8080/"}, "delivery_url"),
    "credentials": ({"delivery_url": "https://user:pw@93.184.216.34/x"}, "delivery_url"),
    "unknown-topic": ({"topic": "order.exploded"}, "topic"),
    "secret-too-long": ({"secret": "s" * 129}, "secret"),
    "secret-too-short": ({"secret": "short"}, "secret"),
    "secret-with-space": ({"secret": "a secret with spaces!"}, "secret"),
    "status-disabled": ({"status": "disabled"}, "status"),
    "blank-name": ({"name": "   "}, "name"),
    "unknown-field": ({"priority": "high"}, "priority"),
    "url-too-long": ({"delivery_url": "https://93.184.216.34/" + "a" * 2100}, "delivery_url"),
}


@pytest.mark.parametrize("changes, field", list(BAD.values()), ids=list(BAD))
def test_bad_subscriptions_are_422_and_write_nothing(notification_client, notification_db, manage,
                                                     changes, field):
    response = notification_client.post("/v1/webhooks", json=body(**changes), headers=manage)
    assert_problem(response, 422, "validation-error", (field,))
    assert count(notification_db, "webhook_subscriptions") == 0


def test_missing_fields_malformed_json_and_wrong_media_type(notification_client, manage):
    missing = notification_client.post("/v1/webhooks", json={}, headers=manage)
    assert missing.status_code == 422
    assert {"name", "topic", "delivery_url"} <= {e["field"] for e in missing.get_json()["errors"]}
    broken = notification_client.post("/v1/webhooks", data="{nope",
                                      headers={**manage, "Content-Type": "application/json"})
    assert broken.status_code == 400 and broken.get_json()["type"] == "/problems/malformed-json"
    form = notification_client.post("/v1/webhooks", data="a=b",
                                    headers={**manage, "Content-Type": "text/plain"})
    assert form.status_code == 415


def test_auth_is_required_and_scoped(notification_client, auth_header):
    assert notification_client.get("/v1/webhooks").status_code == 401
    wrong = notification_client.get("/v1/webhooks", headers=auth_header("c", ("orders:read",)))
    assert wrong.status_code == 403
    assert "insufficient_scope" in wrong.headers["WWW-Authenticate"]


# --- create / read / update / delete --------------------------------------------------------------
def test_secret_is_generated_and_shown_once(notification_client, manage):
    created = create(notification_client, manage)
    assert created["secret"].startswith("whsec_") and len(created["secret"]) > 40
    assert created["status"] == "active" and created["owner_id"] == "partner-1"
    assert created["all_customers"] is False
    fetched = notification_client.get(f"/v1/webhooks/{created['id']}", headers=manage)
    assert fetched.status_code == 200
    assert "secret" not in fetched.get_json()
    listed = notification_client.get("/v1/webhooks", headers=manage).get_json()["items"]
    assert [s["id"] for s in listed] == [created["id"]] and "secret" not in listed[0]


def test_given_secret_is_kept_and_stored_encrypted(notification_client, notification_db, manage):
    created = create(notification_client, manage, secret="my-own-secret-1234567890")
    assert created["secret"] == "my-own-secret-1234567890"
    with notification_db.transaction() as cur:
        cur.execute("SELECT secret FROM webhook_subscriptions")
        stored = cur.fetchone()["secret"]
    assert stored.startswith("fernet:") and "my-own-secret" not in stored


def test_duplicate_subscription_is_409(notification_client, notification_db, manage, auth_header):
    create(notification_client, manage, topic="order.created")
    again = notification_client.post("/v1/webhooks", json=body(topic="order.created"),
                                     headers=manage)
    assert again.status_code == 409
    assert again.get_json()["type"] == "/problems/duplicate-subscription"
    # Another topic, or another owner, is not a duplicate.
    create(notification_client, manage, topic="order.cancelled")
    create(notification_client, auth_header("partner-2", MANAGE), topic="order.created")
    assert count(notification_db, "webhook_subscriptions") == 3


def test_owners_see_only_their_own_admin_sees_all(notification_client, manage, auth_header):
    mine = create(notification_client, manage)
    other_headers = auth_header("partner-2", MANAGE)
    theirs = create(notification_client, other_headers)
    assert notification_client.get(f"/v1/webhooks/{theirs['id']}", headers=manage).status_code == 404
    assert notification_client.delete(f"/v1/webhooks/{theirs['id']}", headers=manage).status_code == 404
    assert notification_client.put(f"/v1/webhooks/{theirs['id']}", json=body(),
                                   headers=manage).status_code == 404
    assert [s["id"] for s in notification_client.get("/v1/webhooks", headers=manage)
            .get_json()["items"]] == [mine["id"]]
    admin = auth_header("ops", ADMIN)
    everyone = {s["id"] for s in notification_client.get("/v1/webhooks", headers=admin)
                .get_json()["items"]}
    assert everyone == {mine["id"], theirs["id"]}
    assert create(notification_client, admin)["all_customers"] is True


def test_pagination_walks_every_subscription_once(notification_client, manage):
    ids = {create(notification_client, manage, delivery_url=f"{PUBLIC_URL}/{n}")["id"]
           for n in range(5)}
    seen, cursor = [], None
    for _ in range(5):
        url = "/v1/webhooks?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = notification_client.get(url, headers=manage).get_json()
        seen += [s["id"] for s in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids) and len(seen) == 5
    bad = notification_client.get("/v1/webhooks?cursor=nonsense", headers=manage)
    assert bad.status_code == 400


def test_update_rotates_secret_pauses_and_reactivates(notification_client, notification_db, manage):
    created = create(notification_client, manage)
    url = f"/v1/webhooks/{created['id']}"
    paused = notification_client.put(url, json=body(status="paused", topic="order.created"),
                                     headers=manage)
    assert paused.status_code == 200, paused.get_data(as_text=True)
    assert paused.get_json()["status"] == "paused" and "secret" not in paused.get_json()
    with notification_db.transaction() as cur:
        cur.execute("UPDATE webhook_subscriptions SET status = 'disabled', disabled_reason = 'x',"
                    " consecutive_failures = 10 WHERE id = %s", (created["id"],))
    rotated = notification_client.put(url, json=body(secret="rotated-secret-0123456789"),
                                      headers=manage).get_json()
    assert rotated["secret"] == "rotated-secret-0123456789"
    assert (rotated["status"], rotated["disabled_reason"], rotated["consecutive_failures"]) == (
        "active", None, 0)
    bad = notification_client.put(url, json=body(delivery_url="http://10.1.1.1/"), headers=manage)
    assert bad.status_code == 422


def test_update_into_a_duplicate_is_409(notification_client, manage):
    first = create(notification_client, manage, topic="order.created")
    second = create(notification_client, manage, topic="order.cancelled")
    clash = notification_client.put(f"/v1/webhooks/{second['id']}", json=body(topic="order.created"),
                                    headers=manage)
    assert clash.status_code == 409
    assert notification_client.get(f"/v1/webhooks/{first['id']}", headers=manage).status_code == 200


def test_delete(notification_client, notification_db, manage):
    created = create(notification_client, manage)
    assert notification_client.delete(f"/v1/webhooks/{created['id']}", headers=manage).status_code == 204
    assert notification_client.get(f"/v1/webhooks/{created['id']}", headers=manage).status_code == 404
    assert count(notification_db, "webhook_subscriptions") == 0


# --- ping, delivery log, redelivery --------------------------------------------------------------
@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


def test_ping_signs_and_records_the_attempt(notification_client, manage, receiver):
    created = create(notification_client, manage, delivery_url=receiver.url)
    result = notification_client.post(f"/v1/webhooks/{created['id']}/ping", headers=manage)
    assert result.status_code == 200, result.get_data(as_text=True)
    outcome = result.get_json()
    assert outcome["delivered"] is True and outcome["status_code"] == 200
    [request] = receiver.verified(created["secret"])
    assert request.headers["Webhook-Topic"] == "webhook.ping"
    assert request.headers["Webhook-Id"] == outcome["delivery_id"]
    assert json.loads(request.body)["data"]["subscription_id"] == created["id"]
    log = notification_client.get(f"/v1/webhooks/{created['id']}/deliveries",
                                  headers=manage).get_json()["items"]
    assert [(d["topic"], d["status"], d["attempts"]) for d in log] == [("webhook.ping", "delivered", 1)]
    [attempt] = log[0]["attempt_log"]
    assert attempt["status_code"] == 200 and attempt["duration_ms"] >= 0
    assert attempt["response_excerpt"].startswith("answer 200")


def test_ping_reports_a_failing_endpoint_and_never_follows_redirects(notification_client, manage):
    redirecting = Receiver(script=lambda n: 302).start()
    try:
        created = create(notification_client, manage, delivery_url=redirecting.url)
        outcome = notification_client.post(f"/v1/webhooks/{created['id']}/ping",
                                           headers=manage).get_json()
        assert (outcome["delivered"], outcome["outcome"], outcome["status_code"]) == (
            False, "retry", 302)
        assert redirecting.count() == 1
    finally:
        redirecting.stop()


def test_redeliver_requeues_and_refuses_when_not_active(notification_client, notification_app,
                                                        notification_db, manage, receiver):
    created = create(notification_client, manage, delivery_url=receiver.url)
    event = Envelope(event_type="order.created", aggregate_id=str(uuid.uuid4()),
                     producer="order-service",
                     data={"order_id": str(uuid.uuid4()), "customer_id": "partner-1"})
    settings = notification_app.extensions["notification_settings"]
    with notification_db.transaction() as cur:
        OrderEventHandler(settings)(cur, event)
    [delivery] = notification_client.get(f"/v1/webhooks/{created['id']}/deliveries",
                                         headers=manage).get_json()["items"]
    assert delivery["status"] == "pending" and delivery["topic"] == "order.created"
    url = f"/v1/webhooks/{created['id']}/deliveries/{delivery['id']}/redeliver"
    again = notification_client.post(url, headers=manage)
    assert again.status_code == 202 and again.get_json()["status"] == "pending"
    with notification_db.transaction() as cur:
        cur.execute("SELECT count(*) AS n FROM outbox WHERE queue = 'webhook-delivery'")
        assert cur.fetchone()["n"] == 2  # the first attempt and the redelivery
    notification_client.put(f"/v1/webhooks/{created['id']}", json=body(
        delivery_url=receiver.url, status="paused"), headers=manage)
    refused = notification_client.post(url, headers=manage)
    assert refused.status_code == 409
    assert notification_client.post(f"/v1/webhooks/{created['id']}/deliveries/{uuid.uuid4()}"
                                     "/redeliver", headers=manage).status_code == 404


# --- notification history ---------------------------------------------------------------------
def test_history_is_owner_scoped_and_paginated(notification_client, notification_app,
                                               notification_db, auth_header):
    settings = notification_app.extensions["notification_settings"]
    order = str(uuid.uuid4())
    with notification_db.transaction() as cur:
        for n in range(3):
            OrderEventHandler(settings)(cur, Envelope(
                event_type="order.status_changed", aggregate_id=order, producer="order-service",
                data={"order_id": order, "customer_id": "alice", "status": f"S{n}"}))
        bob_order = str(uuid.uuid4())  # order ids are UUIDs (shared/contracts.py)
        OrderEventHandler(settings)(cur, Envelope(
            event_type="order.created", aggregate_id=bob_order, producer="order-service",
            data={"order_id": bob_order, "customer_id": "bob"}))
    alice = auth_header("alice", ("orders:read",))
    page = notification_client.get("/v1/notifications?limit=2", headers=alice).get_json()
    assert [n["data"]["status"] for n in page["items"]] == ["S2", "S1"]
    rest = notification_client.get(f"/v1/notifications?limit=2&before={page['next_before']}",
                                   headers=alice).get_json()
    assert [n["data"]["status"] for n in rest["items"]] == ["S0"] and rest["next_before"] is None
    admin = notification_client.get("/v1/notifications", headers=auth_header("ops", ADMIN))
    assert len(admin.get_json()["items"]) == 4


# --- stream: refused before streaming ------------------------------------------------------------
@pytest.mark.parametrize("headers_for, query, status, type_", [
    (lambda h: {}, "", 401, "unauthorized"),
    (lambda h: h("c", ("webhooks:manage",)), "", 403, "insufficient-scope"),
    (lambda h: {**h("c", ("orders:read",)), "Last-Event-ID": "abc"}, "", 400, "bad-last-event-id"),
    (lambda h: {**h("c", ("orders:read",)), "Last-Event-ID": "9" * 30}, "", 400,
     "bad-last-event-id"),
    (lambda h: h("c", ("orders:read",)), "?last_event_id=-1", 422, "validation-error"),
    (lambda h: h("c", ("orders:read",)), "?order_id=not-a-uuid", 422, "validation-error"),
])
def test_stream_refuses_bad_requests_with_problems(notification_client, auth_header, headers_for,
                                                   query, status, type_):
    response = notification_client.get(f"/v1/notifications/stream{query}",
                                       headers=headers_for(auth_header))
    assert_problem(response, status, type_)


def test_openapi_documents_the_stream_and_webhooks(notification_client):
    spec = notification_client.get("/openapi.json").get_json()
    paths = spec["paths"]
    assert {"/v1/notifications/stream", "/v1/webhooks", "/v1/webhooks/{sub_id}/ping",
            "/v1/webhooks/{sub_id}/deliveries",
            "/v1/webhooks/{sub_id}/deliveries/{delivery_id}/redeliver"} <= set(paths)
    assert "text/event-stream" in paths["/v1/notifications/stream"]["get"]["responses"]["200"][
        "content"]


def test_the_stream_hub_ends_with_its_apps_database(app_for):
    """An app torn down (its pool closed) leaves no hub thread polling a closed pool."""
    app = app_for("notification")
    hub = app.extensions["notification_hub"]
    client = hub.subscribe("customer-1", None)  # starts the hub thread and waits for LISTEN
    hub.unsubscribe(client)
    assert any(t.name == "notification-hub" and t.is_alive() for t in threading.enumerate())
    app.extensions["db"].close()
    wait_until(lambda: hub._thread is not None and not hub._thread.is_alive(), timeout=10,
               message="the hub thread outlived its database")
