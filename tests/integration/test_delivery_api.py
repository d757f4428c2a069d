"""The delivery HTTP API against a real Postgres (Flask test client, no worker).

Shipments are created the way the worker creates them: ``on_order_paid``
applied to an ``order.paid`` envelope inside one transaction. Bad input and
forbidden transitions must be problem documents that write nothing (rows in
shipments, shipment_events and outbox are counted before and after).
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime

import jwt
import pytest

from devstack.tokens import DevSigner, mint_dev_token
from services.delivery.domain import choose_carrier
from services.delivery.handlers import on_order_cancelled, on_order_paid
from shared.messaging.envelope import Envelope
from tests.support import asserts
from tests.support.asserts import assert_problem
from tests.support.tokens import TEST_SIGNER

DELIVERY_TABLES = ("shipments", "shipment_events", "cancelled_orders", "outbox")
# What the test apps accept: the test key, whose JWKS the conftest serves to them.
TOKENS = TEST_SIGNER
CUSTOMER = "customer-1"
OTHER_CUSTOMER = "customer-2"
CARRIER = "carrier-1"
CARRIER_SCOPES = ("shipments:write",)
# The carrier CARRIER's client is bound to (the ``carrier`` claim of its tokens), and another.
CARRIER_ID = "DHL"
OTHER_CARRIER_ID = "UPS"
CUSTOMER_SCOPES = ("orders:read",)
ADMIN_SCOPES = ("admin",)
ADDRESS = {"name": "Ada Lovelace", "line1": "1 Main St", "city": "Berlin", "postal_code": "10115",
           "country": "DE"}
PAGE_SIZE = 2
SHIPMENTS_TO_PAGE = 5


# --- helpers ---------------------------------------------------------------------------
def row_counts(db) -> dict[str, int]:
    """Rows in every delivery table."""
    return asserts.row_counts(db, DELIVERY_TABLES)


def nothing_written(db):
    """The block leaves every delivery table exactly as it found it."""
    return asserts.nothing_written(db, DELIVERY_TABLES)


def order_created(order_id: str, customer: str = CUSTOMER) -> Envelope:
    """An ``order.paid`` envelope as the order service publishes it (what delivery ships on)."""
    return Envelope(event_type="order.paid", aggregate_id=order_id, producer="order-service",
                    correlation_id=f"corr-{order_id[:8]}",
                    data={"order_id": order_id, "customer_id": customer, "currency": "EUR",
                          "total": "9.99", "shipping_address": ADDRESS,
                          "paid_at": datetime.now(UTC).isoformat()})


def order_id_for(carrier: str) -> str:
    """A new order id whose shipment goes to ``carrier`` (the worker picks it from the id)."""
    while True:
        order_id = str(uuid.uuid4())
        if choose_carrier(order_id) == carrier:
            return order_id


def create_shipment(db, customer: str = CUSTOMER, carrier: str = CARRIER_ID) -> dict:
    """Create a shipment (carried by ``carrier``) as the worker would, and return its row."""
    order_id = order_id_for(carrier)
    with db.transaction() as cur:
        on_order_paid(cur, order_created(order_id, customer))
        cur.execute("SELECT * FROM shipments WHERE order_id = %s", (order_id,))
        shipment = cur.fetchone()
    assert shipment is not None and shipment["carrier"] == carrier
    return shipment


def outbox_rows(db) -> list[dict]:
    with db.transaction() as cur:
        cur.execute("SELECT * FROM outbox ORDER BY id")
        return cur.fetchall()


def shipment_status(db, shipment_id) -> str:
    with db.transaction() as cur:
        cur.execute("SELECT status FROM shipments WHERE id = %s", (shipment_id,))
        return cur.fetchone()["status"]


def post_event(client, headers: dict, shipment_id, status: str, **fields):
    return client.post(f"/v1/shipments/{shipment_id}/events", json={"status": status, **fields},
                       headers=headers)


def carrier_header(subject: str, scopes, carrier: str | None) -> dict:
    """A carrier client's token: bound to ``carrier`` (the auth service's ``carrier`` claim)."""
    claims = TOKENS.claims(subject, scopes, 600)
    if carrier is not None:
        claims["carrier"] = carrier
    return {"Authorization": f"Bearer {TOKENS.sign(claims)}"}


@pytest.fixture
def carrier() -> dict:
    return carrier_header(CARRIER, CARRIER_SCOPES, CARRIER_ID)


# --- shipments from order events ---------------------------------------------------------
def test_order_created_makes_one_shipment_with_one_event(delivery_db):
    order_id = str(uuid.uuid4())
    event = order_created(order_id)
    with delivery_db.transaction() as cur:
        on_order_paid(cur, event)
    with delivery_db.transaction() as cur:
        on_order_paid(cur, event)  # a redelivery creates nothing more
    assert row_counts(delivery_db) == {"shipments": 1, "shipment_events": 1, "cancelled_orders": 0,
                                       "outbox": 1}
    [row] = outbox_rows(delivery_db)
    envelope = Envelope.from_json(row["body"])
    assert (row["queue"], envelope.event_type) == ("delivery-status.fifo", "delivery.shipment_created")
    assert envelope.aggregate_id == order_id
    assert envelope.causation_id == event.event_id
    assert envelope.correlation_id == event.correlation_id
    assert envelope.data["status"] == "CREATED"


# --- carrier events: happy path ------------------------------------------------------------
def test_carrier_events_walk_shipped_in_transit_delivered(delivery_client, delivery_db, carrier,
                                                          auth_header):
    shipment = create_shipment(delivery_db)
    shipment_id, order_id = str(shipment["id"]), str(shipment["order_id"])
    steps = [("SHIPPED", "Berlin hub"), ("IN_TRANSIT", "Leipzig"), ("DELIVERED", "Front door")]
    for number, (status, location) in enumerate(steps, start=1):
        occurred_at = f"2026-11-2{number}T10:00:00+00:00"
        response = post_event(delivery_client, {**carrier, "X-Request-ID": f"carrier-{status}"},
                              shipment_id, status, location=location, occurred_at=occurred_at,
                              note=f"step {number}")
        assert response.status_code == 200, response.get_data(as_text=True)
        assert response.get_json()["status"] == status
        assert response.headers["X-Request-ID"] == f"carrier-{status}"
        assert shipment_status(delivery_db, shipment_id) == status

    rows = outbox_rows(delivery_db)
    assert [r["event_type"] for r in rows] == ["delivery.shipment_created", "delivery.shipped",
                                               "delivery.in_transit", "delivery.delivered"]
    assert {r["queue"] for r in rows} == {"delivery-status.fifo"}
    for row, (status, location) in zip(rows[1:], steps, strict=True):
        envelope = Envelope.from_json(row["body"])
        assert envelope.aggregate_id == row["aggregate_id"] == order_id
        assert envelope.correlation_id == row["correlation_id"] == f"carrier-{status}"
        assert envelope.producer == "delivery-service"
        assert envelope.data["shipment_id"] == shipment_id
        assert envelope.data["order_id"] == order_id
        assert envelope.data["status"] == status
        assert envelope.data["location"] == location
        assert envelope.data["tracking_number"] == shipment["tracking_number"]

    for reader in (auth_header(CUSTOMER, CUSTOMER_SCOPES), carrier):
        view = delivery_client.get(f"/v1/shipments/{shipment_id}", headers=reader)
        assert view.status_code == 200
        events = view.get_json()["events"]
        assert [(e["status"], e["previous_status"]) for e in events] == [
            ("CREATED", None), ("SHIPPED", "CREATED"), ("IN_TRANSIT", "SHIPPED"),
            ("DELIVERED", "IN_TRANSIT")]
        assert [e["location"] for e in events[1:]] == [location for _, location in steps]
        assert {e["source"] for e in events[1:]} == {f"carrier:{CARRIER}"}
        assert datetime.fromisoformat(events[3]["occurred_at"]) == datetime(2026, 11, 23, 10,
                                                                            tzinfo=UTC)


def test_repeated_carrier_status_is_a_200_no_op(delivery_client, delivery_db, carrier):
    shipment_id = create_shipment(delivery_db)["id"]
    assert post_event(delivery_client, carrier, shipment_id, "SHIPPED").status_code == 200
    with nothing_written(delivery_db):
        again = post_event(delivery_client, carrier, shipment_id, "SHIPPED", location="retry")
        assert again.status_code == 200
        assert again.get_json()["status"] == "SHIPPED"
    assert [r["event_type"] for r in outbox_rows(delivery_db)] == ["delivery.shipment_created",
                                                                   "delivery.shipped"]


# --- carrier events: refused -----------------------------------------------------------------
@pytest.mark.parametrize(("before", "status"), [
    ((), "DELIVERED"),                                  # CREATED cannot skip SHIPPED
    ((), "IN_TRANSIT"),
    (("SHIPPED", "DELIVERED"), "SHIPPED"),              # nothing after DELIVERED
    (("SHIPPED", "DELIVERED"), "FAILED"),
    (("SHIPPED", "FAILED"), "DELIVERED"),
    (("SHIPPED", "OUT_FOR_DELIVERY"), "IN_TRANSIT"),    # no going back
], ids=["created-delivered", "created-in-transit", "delivered-shipped", "delivered-failed",
        "failed-delivered", "out-for-delivery-in-transit"])
def test_invalid_transition_is_409_and_writes_nothing(delivery_client, delivery_db, carrier, before,
                                                      status):
    shipment_id = create_shipment(delivery_db)["id"]
    for step in before:
        assert post_event(delivery_client, carrier, shipment_id, step).status_code == 200
    current = before[-1] if before else "CREATED"
    with nothing_written(delivery_db):
        body = assert_problem(post_event(delivery_client, carrier, shipment_id, status), 409,
                              "invalid-transition")
    assert body["status_now"] == current
    assert shipment_status(delivery_db, shipment_id) == current


def test_cancelled_shipment_refuses_carrier_events(delivery_client, delivery_db, carrier):
    shipment = create_shipment(delivery_db)
    cancel = Envelope(event_type="order.cancelled", aggregate_id=str(shipment["order_id"]),
                      producer="order-service",
                      data={"order_id": str(shipment["order_id"]), "reason": "changed mind"})
    with delivery_db.transaction() as cur:
        on_order_cancelled(cur, cancel)
    assert shipment_status(delivery_db, shipment["id"]) == "CANCELLED"
    with nothing_written(delivery_db):
        assert_problem(post_event(delivery_client, carrier, shipment["id"], "SHIPPED"), 409,
                       "invalid-transition")


def _deep_json() -> str:
    depth = 20_000  # deeper than Python's recursion limit, still under 64 KiB
    return "[" * depth + "]" * depth


# (id, raw body, content type, status, problem type, field paths)
BAD_EVENT_BODIES = [
    ("malformed-json", '{"status": ', "application/json", 400, "malformed-json", ("_body",)),
    ("nested-too-deep", _deep_json(), "application/json", 400, "malformed-json", ()),
    ("text-plain", "SHIPPED", "text/plain", 415, "unsupported-media-type", ()),
    ("body-over-64KiB", json.dumps({"status": "SHIPPED", "note": "x" * (64 * 1024)}),
     "application/json", 413, "payload-too-large", ()),
    ("missing-status", json.dumps({"location": "Berlin"}), "application/json", 422,
     "validation-error", ("status",)),
    ("unknown-status", json.dumps({"status": "LOST_AT_SEA"}), "application/json", 422,
     "validation-error", ("status",)),
    ("lowercase-status", json.dumps({"status": "shipped"}), "application/json", 422,
     "validation-error", ("status",)),
    ("created-is-not-a-carrier-status", json.dumps({"status": "CREATED"}), "application/json", 422,
     "validation-error", ("status",)),
    ("cancelled-is-not-a-carrier-status", json.dumps({"status": "CANCELLED"}), "application/json",
     422, "validation-error", ("status",)),
    ("status-wrong-type", json.dumps({"status": 3}), "application/json", 422, "validation-error",
     ("status",)),
    ("unknown-field", json.dumps({"status": "SHIPPED", "signature": "x"}), "application/json", 422,
     "validation-error", ("signature",)),
    ("naive-occurred-at", json.dumps({"status": "SHIPPED", "occurred_at": "2026-11-24T10:00:00"}),
     "application/json", 422, "validation-error", ("occurred_at",)),
    ("garbage-occurred-at", json.dumps({"status": "SHIPPED", "occurred_at": "yesterday"}),
     "application/json", 422, "validation-error", ("occurred_at",)),
    ("location-too-long", json.dumps({"status": "SHIPPED", "location": "x" * 201}),
     "application/json", 422, "validation-error", ("location",)),
    ("json-array", json.dumps([{"status": "SHIPPED"}]), "application/json", 422, "validation-error",
     ("_schema",)),
]


@pytest.mark.parametrize(("data", "content_type", "status", "type_", "fields"),
                         [c[1:] for c in BAD_EVENT_BODIES], ids=[c[0] for c in BAD_EVENT_BODIES])
def test_bad_carrier_event_is_a_problem_and_writes_nothing(delivery_client, delivery_db, carrier,
                                                           data, content_type, status, type_, fields):
    shipment_id = create_shipment(delivery_db)["id"]
    with nothing_written(delivery_db):
        response = delivery_client.post(f"/v1/shipments/{shipment_id}/events", data=data,
                                        headers={**carrier, "Content-Type": content_type})
        assert_problem(response, status, type_, fields)
    assert shipment_status(delivery_db, shipment_id) == "CREATED"


@pytest.mark.parametrize("bad_id", ["not-a-uuid", "42", "00000000-0000-0000-0000-00000000000z"])
def test_non_uuid_ids_are_404_never_500(delivery_client, delivery_db, carrier, bad_id):
    create_shipment(delivery_db)
    with nothing_written(delivery_db):
        assert_problem(delivery_client.get(f"/v1/shipments/{bad_id}", headers=carrier), 404,
                       "not-found")
        assert_problem(post_event(delivery_client, carrier, bad_id, "SHIPPED"), 404, "not-found")


def test_unknown_shipment_is_404(delivery_client, delivery_db, carrier):
    unknown = uuid.uuid4()
    with nothing_written(delivery_db):
        assert_problem(delivery_client.get(f"/v1/shipments/{unknown}", headers=carrier), 404,
                       "not-found")
        assert_problem(post_event(delivery_client, carrier, unknown, "SHIPPED"), 404, "not-found")


# --- authentication, authorization and visibility -------------------------------------------
def _claims(**changes) -> dict:
    now = int(time.time())
    claims = {"sub": CARRIER, "scope": "shipments:write", "iss": TOKENS.issuer,
              "aud": TOKENS.audience, "iat": now, "nbf": now, "exp": now + 600,
              "client_id": "test-client", "jti": "t-1"}
    claims.update(changes)
    return claims


BAD_AUTHORIZATION = {
    "missing": None,
    "not-bearer": "Basic Y2FycmllcjpwYXNz",
    "garbage": "Bearer abc.def.ghi",
    "expired": "Bearer " + mint_dev_token(TOKENS, CARRIER, CARRIER_SCOPES, ttl_s=-3600),
    "other-key": "Bearer " + DevSigner(TOKENS.issuer, TOKENS.audience, kid=TOKENS.kid).sign(_claims()),
    "wrong-issuer": "Bearer " + TOKENS.sign(_claims(iss="elsewhere")),
    "wrong-audience": "Bearer " + TOKENS.sign(_claims(aud="elsewhere")),
    "alg-none": "Bearer " + jwt.encode(_claims(), None, algorithm="none"),
}


@pytest.mark.parametrize("authorization", list(BAD_AUTHORIZATION.values()),
                         ids=list(BAD_AUTHORIZATION))
def test_bad_token_is_401_with_www_authenticate(delivery_client, delivery_db, authorization):
    shipment_id = create_shipment(delivery_db)["id"]
    headers = {"Authorization": authorization} if authorization else {}
    with nothing_written(delivery_db):
        for response in (
            delivery_client.get("/v1/shipments", headers=headers),
            delivery_client.get(f"/v1/shipments/{shipment_id}", headers=headers),
            post_event(delivery_client, headers, shipment_id, "SHIPPED"),
        ):
            assert_problem(response, 401, "unauthorized")
            assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_wrong_scope_is_403_and_writes_nothing(delivery_client, delivery_db, auth_header):
    shipment_id = create_shipment(delivery_db)["id"]
    customer = auth_header(CUSTOMER, ("orders:read", "orders:write"))
    writer_only = auth_header(CUSTOMER, ("orders:write",))
    with nothing_written(delivery_db):
        # Customers may read their shipment but never report carrier statuses.
        assert_problem(post_event(delivery_client, customer, shipment_id, "SHIPPED"), 403,
                       "insufficient-scope")
        assert_problem(post_event(delivery_client, auth_header("ops", ADMIN_SCOPES), shipment_id,
                                  "SHIPPED"), 403, "insufficient-scope")
        refused = delivery_client.get("/v1/shipments", headers=writer_only)
        assert_problem(refused, 403, "insufficient-scope")
        assert 'error="insufficient_scope"' in refused.headers["WWW-Authenticate"]
        assert_problem(delivery_client.get(f"/v1/shipments/{shipment_id}", headers=writer_only), 403,
                       "insufficient-scope")
    assert shipment_status(delivery_db, shipment_id) == "CREATED"


def test_customers_see_only_their_own_shipments(delivery_client, delivery_db, auth_header, carrier):
    mine = create_shipment(delivery_db, CUSTOMER)
    theirs = create_shipment(delivery_db, OTHER_CUSTOMER)
    me = auth_header(CUSTOMER, CUSTOMER_SCOPES)

    own = delivery_client.get(f"/v1/shipments/{mine['id']}", headers=me)
    assert own.status_code == 200
    assert own.get_json()["order_id"] == str(mine["order_id"])
    assert own.get_json()["tracking_number"] == mine["tracking_number"]
    assert_problem(delivery_client.get(f"/v1/shipments/{theirs['id']}", headers=me), 404, "not-found")

    listed = delivery_client.get("/v1/shipments", headers=me).get_json()
    assert [s["id"] for s in listed["items"]] == [str(mine["id"])]
    # Asking for another customer's order by id reveals nothing either.
    other = delivery_client.get(f"/v1/shipments?order_id={theirs['order_id']}", headers=me).get_json()
    assert other["items"] == []

    for everyone in (auth_header("ops", ADMIN_SCOPES), carrier):
        listed_all = delivery_client.get("/v1/shipments", headers=everyone).get_json()
        assert {s["id"] for s in listed_all["items"]} == {str(mine["id"]), str(theirs["id"])}
        assert delivery_client.get(f"/v1/shipments/{theirs['id']}", headers=everyone).status_code == 200


def test_carriers_see_and_update_only_their_own_shipments(delivery_client, delivery_db, carrier,
                                                         auth_header):
    ours = [create_shipment(delivery_db) for _ in range(3)]
    theirs = create_shipment(delivery_db, OTHER_CUSTOMER, OTHER_CARRIER_ID)
    competitor = carrier_header("carrier-2", ("shipments:read", "shipments:write"),
                                OTHER_CARRIER_ID)
    unbound = carrier_header("carrier-3", ("shipments:read", "shipments:write"), None)

    listed = delivery_client.get("/v1/shipments", headers=carrier).get_json()
    assert {s["id"] for s in listed["items"]} == {str(s["id"]) for s in ours}
    # Paging and filters stay within the carrier's own shipments.
    first = delivery_client.get("/v1/shipments?limit=2", headers=carrier).get_json()
    rest = delivery_client.get(f"/v1/shipments?limit=2&cursor={first['next_cursor']}",
                               headers=carrier).get_json()
    assert {s["id"] for s in first["items"] + rest["items"]} == {str(s["id"]) for s in ours}
    assert rest["next_cursor"] is None
    by_order = delivery_client.get(f"/v1/shipments?order_id={theirs['order_id']}", headers=carrier)
    assert by_order.get_json()["items"] == []
    assert [s["id"] for s in delivery_client.get(
        "/v1/shipments", headers=competitor).get_json()["items"]] == [str(theirs["id"])]
    assert delivery_client.get("/v1/shipments", headers=unbound).get_json()["items"] == []

    with nothing_written(delivery_db):
        # 404, as for a shipment that does not exist: no carrier learns another's shipment ids.
        for headers in (carrier, unbound):
            assert_problem(delivery_client.get(f"/v1/shipments/{theirs['id']}", headers=headers),
                           404, "not-found")
            assert_problem(post_event(delivery_client, headers, theirs["id"], "SHIPPED"), 404,
                           "not-found")
        assert_problem(post_event(delivery_client, competitor, ours[0]["id"], "SHIPPED"), 404,
                       "not-found")
    assert shipment_status(delivery_db, theirs["id"]) == "CREATED"
    assert post_event(delivery_client, competitor, theirs["id"], "SHIPPED").status_code == 200
    assert post_event(delivery_client, carrier, ours[0]["id"], "SHIPPED").status_code == 200
    # The customer still sees their own shipment whoever carries it.
    customer = auth_header(OTHER_CUSTOMER, CUSTOMER_SCOPES)
    assert delivery_client.get(f"/v1/shipments/{theirs['id']}",
                               headers=customer).get_json()["status"] == "SHIPPED"


def test_list_filters_by_order_id_and_status(delivery_client, delivery_db, carrier):
    first = create_shipment(delivery_db)
    second = create_shipment(delivery_db)
    assert post_event(delivery_client, carrier, second["id"], "SHIPPED").status_code == 200

    by_order = delivery_client.get(f"/v1/shipments?order_id={first['order_id']}", headers=carrier)
    assert [s["id"] for s in by_order.get_json()["items"]] == [str(first["id"])]
    assert "events" not in by_order.get_json()["items"][0]
    shipped = delivery_client.get("/v1/shipments?status=SHIPPED", headers=carrier).get_json()
    assert [s["id"] for s in shipped["items"]] == [str(second["id"])]
    unknown = delivery_client.get(f"/v1/shipments?order_id={uuid.uuid4()}", headers=carrier).get_json()
    assert unknown == {"items": [], "next_cursor": None}


def test_cursor_pagination_walks_every_shipment_once(delivery_client, delivery_db, carrier):
    ids = {str(create_shipment(delivery_db)["id"]) for _ in range(SHIPMENTS_TO_PAGE)}
    seen, sizes, cursor = [], [], None
    for _ in range(10):  # a loop guard: a cursor that never ends is a bug
        url = f"/v1/shipments?limit={PAGE_SIZE}" + (f"&cursor={cursor}" if cursor else "")
        page = delivery_client.get(url, headers=carrier).get_json()
        sizes.append(len(page["items"]))
        seen.extend(s["id"] for s in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sizes == [2, 2, 1]
    assert len(seen) == len(set(seen))
    assert set(seen) == ids


BAD_LIST_QUERIES = [
    ("cursor-garbage", "cursor=%25%25%25", 400, "bad-cursor", ("cursor",)),
    ("cursor-not-ours", "cursor=aGVsbG8", 400, "bad-cursor", ("cursor",)),
    ("limit-zero", "limit=0", 422, "validation-error", ("limit",)),
    ("limit-too-big", "limit=1000", 422, "validation-error", ("limit",)),
    ("limit-not-a-number", "limit=some", 422, "validation-error", ("limit",)),
    ("status-unknown", "status=LOST", 422, "validation-error", ("status",)),
    ("order-id-not-uuid", "order_id=order-1", 422, "validation-error", ("order_id",)),
]


@pytest.mark.parametrize(("query", "status", "type_", "fields"), [c[1:] for c in BAD_LIST_QUERIES],
                         ids=[c[0] for c in BAD_LIST_QUERIES])
def test_bad_list_query_is_a_problem(delivery_client, delivery_db, carrier, query, status, type_,
                                     fields):
    create_shipment(delivery_db)
    assert_problem(delivery_client.get(f"/v1/shipments?{query}", headers=carrier), status, type_,
                   fields)


# --- health and docs -----------------------------------------------------------------------
def test_health_live_and_ready(delivery_client):
    assert delivery_client.get("/health/live").get_json() == {"status": "ok"}
    ready = delivery_client.get("/health/ready")
    assert ready.status_code == 200
    assert {name: c["status"] for name, c in ready.get_json()["checks"].items()} == {
        "database": "ok", "sqs": "ok"}


def test_ready_is_503_when_the_database_check_fails(app_for):
    app = app_for("delivery")
    app.extensions["db"].close()  # a closed pool: the probe must report it, not raise or hang
    response = app.test_client().get("/health/ready")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "failing"
    assert body["checks"]["database"]["status"] == "failing"
    assert body["checks"]["sqs"]["status"] == "ok"


def test_openapi_documents_every_endpoint(delivery_client):
    response = delivery_client.get("/openapi.json")
    assert response.status_code == 200
    spec = response.get_json()
    assert "get" in spec["paths"]["/v1/shipments"]
    assert "get" in spec["paths"]["/v1/shipments/{shipment_id}"]
    post = spec["paths"]["/v1/shipments/{shipment_id}/events"]["post"]
    assert {"200", "409", "422"} <= set(post["responses"])
    event_in = spec["components"]["schemas"]["ShipmentEventIn"]
    assert event_in["required"] == ["status"]
    assert set(event_in["properties"]["status"]["enum"]) == {
        "SHIPPED", "IN_TRANSIT", "OUT_FOR_DELIVERY", "DELIVERED", "FAILED"}
