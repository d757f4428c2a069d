"""Stream tickets (services/notification/tickets.py): what an EventSource opens the SSE
stream with instead of a bearer token. Flask test client, real Postgres.

Single use, expiry, binding to the principal and the order, bad input as problem
documents, only a hash stored, and the ticket never in a log line.
"""

from __future__ import annotations

import hashlib
import logging
import uuid

import pytest
import structlog.testing

from services.notification.consumers import OrderEventHandler
from services.notification.tickets import MAX_LIVE_TICKETS
from shared.messaging.envelope import Envelope
from tests.support.asserts import assert_problem

READ = ("orders:read",)
ADMIN = ("orders:read", "admin")
TICKETS = "/v1/notifications/stream/tickets"
STREAM = "/v1/notifications/stream"


@pytest.fixture
def app(app_for):
    # A short heartbeat: a stream read past its replay returns a comment soon.
    return app_for("notification", NOTIFICATION_SSE_HEARTBEAT_S="0.2")


@pytest.fixture
def client(app):
    return app.test_client()


def notify(app, db, customer: str, order: str, status: str) -> None:
    settings = app.extensions["notification_settings"]
    with db.transaction() as cur:
        OrderEventHandler(settings)(cur, Envelope(
            event_type="order.status_changed", aggregate_id=order, producer="order-service",
            data={"order_id": order, "customer_id": customer, "status": status}))


def ticket_for(client, headers, order_id: str | None = None) -> str:
    response = client.post(TICKETS, json={"order_id": order_id} if order_id else {}, headers=headers)
    assert response.status_code == 201, response.get_data(as_text=True)
    body = response.get_json()
    assert body["expires_in"] == 30
    return body["ticket"]


def read_stream(response, chunks: int) -> str:
    """The first ``chunks`` pieces of an SSE body (replay and the first heartbeat)."""
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/event-stream"
    out = []
    iterator = iter(response.response)
    for _ in range(chunks):
        piece = next(iterator)
        out.append(piece.decode() if isinstance(piece, bytes) else piece)
    response.close()
    return "".join(out)


def test_a_ticket_opens_the_callers_stream_once(client, app, notification_db, auth_header):
    order = str(uuid.uuid4())
    notify(app, notification_db, "alice", order, "PENDING_SHIPMENT")
    notify(app, notification_db, "bob", str(uuid.uuid4()), "SHIPPED")
    ticket = ticket_for(client, auth_header("alice", READ))
    # No Authorization header: the ticket alone; last_event_id=0 replays everything of alice's.
    body = read_stream(client.get(f"{STREAM}?ticket={ticket}&last_event_id=0", buffered=False), 3)
    assert "PENDING_SHIPMENT" in body and "SHIPPED" not in body
    again = client.get(f"{STREAM}?ticket={ticket}")
    assert_problem(again, 401, "invalid-ticket", ("ticket",))
    assert ticket not in again.get_data(as_text=True)


def test_only_the_hash_is_stored(client, notification_db, auth_header):
    ticket = ticket_for(client, auth_header("alice", READ))
    with notification_db.transaction() as cur:
        cur.execute("SELECT ticket_hash, subject FROM stream_tickets")
        [row] = cur.fetchall()
    assert bytes(row["ticket_hash"]) == hashlib.sha256(ticket.encode()).digest()
    assert row["subject"] == "alice"


def test_an_expired_ticket_is_refused(client, notification_db, auth_header):
    ticket = ticket_for(client, auth_header("alice", READ))
    with notification_db.transaction() as cur:
        cur.execute("UPDATE stream_tickets SET expires_at = now() - interval '1 second'")
    assert_problem(client.get(f"{STREAM}?ticket={ticket}"), 401, "invalid-ticket")


def test_a_ticket_is_bound_to_its_principal(client, auth_header):
    ticket = ticket_for(client, auth_header("alice", READ))
    # Sent with someone else's token: refused, and burnt for alice too.
    assert_problem(client.get(f"{STREAM}?ticket={ticket}", headers=auth_header("bob", READ)),
                   401, "invalid-ticket")
    assert_problem(client.get(f"{STREAM}?ticket={ticket}"), 401, "invalid-ticket")


def test_a_ticket_is_bound_to_its_order(client, app, notification_db, auth_header):
    mine, other = str(uuid.uuid4()), str(uuid.uuid4())
    notify(app, notification_db, "alice", mine, "SHIPPED")
    notify(app, notification_db, "alice", other, "DELIVERED")
    headers = auth_header("alice", READ)
    refused = client.get(f"{STREAM}?ticket={ticket_for(client, headers, mine)}&order_id={other}")
    assert_problem(refused, 401, "invalid-ticket")
    # Without order_id in the query the ticket's order applies: only that order's events.
    body = read_stream(client.get(f"{STREAM}?ticket={ticket_for(client, headers, mine)}"
                                  "&last_event_id=0", buffered=False), 3)
    assert "SHIPPED" in body and "DELIVERED" not in body


def test_an_admin_ticket_streams_every_customer(client, app, notification_db, auth_header):
    notify(app, notification_db, "alice", str(uuid.uuid4()), "SHIPPED")
    notify(app, notification_db, "bob", str(uuid.uuid4()), "DELIVERED")
    ticket = ticket_for(client, auth_header("ops", ADMIN))
    body = read_stream(client.get(f"{STREAM}?ticket={ticket}&last_event_id=0", buffered=False), 3)
    assert "SHIPPED" in body and "DELIVERED" in body


@pytest.mark.parametrize("headers_for, payload, status, type_, field", [
    (lambda h: {}, {}, 401, "unauthorized", None),
    (lambda h: h("c", ("webhooks:manage",)), {}, 403, "insufficient-scope", None),
    (lambda h: h("c", READ), {"order_id": "not-a-uuid"}, 422, "validation-error", "order_id"),
    (lambda h: h("c", READ), {"order": str(uuid.uuid4())}, 422, "validation-error", "order"),
])
def test_issuing_refuses_bad_requests(client, notification_db, auth_header, headers_for, payload,
                                      status, type_, field):
    response = client.post(TICKETS, json=payload, headers=headers_for(auth_header))
    assert_problem(response, status, type_, (field,) if field else ())
    with notification_db.transaction() as cur:
        cur.execute("SELECT count(*) AS n FROM stream_tickets")
        assert cur.fetchone()["n"] == 0


@pytest.mark.parametrize("ticket", ["short", "x" * 43 + "y", "a" * 42 + "!", "%00" * 15])
def test_a_malformed_ticket_is_a_validation_problem(client, ticket):
    response = client.get(f"{STREAM}?ticket={ticket}")
    assert response.status_code in (400, 422)
    assert response.mimetype == "application/problem+json"


def test_an_unknown_ticket_is_refused(client, notification_db):
    assert_problem(client.get(f"{STREAM}?ticket={'A' * 43}"), 401, "invalid-ticket")


def test_the_ticket_never_reaches_the_logs(client, auth_header, caplog):
    ticket = ticket_for(client, auth_header("alice", READ))
    with structlog.testing.capture_logs() as events, caplog.at_level(logging.DEBUG):
        read_stream(client.get(f"{STREAM}?ticket={ticket}", buffered=False), 1)
        client.get(f"{STREAM}?ticket={ticket}")  # refused: its log line too
    access = [e for e in events if e["event"] == "http_request"]
    assert [e["status"] for e in access] == [200, 401]  # the access log lines were written ...
    assert ticket not in repr(events) + caplog.text  # ... without the query string


def test_unused_tickets_are_capped_per_principal(client, auth_header):
    headers = auth_header("alice", READ)
    for _ in range(MAX_LIVE_TICKETS):
        ticket_for(client, headers)
    refused = client.post(TICKETS, json={}, headers=headers)
    assert_problem(refused, 429, "too-many-tickets")
    assert refused.headers["Retry-After"] == "30"
    ticket_for(client, auth_header("bob", READ))  # another principal is not affected
