"""The order HTTP API against a real Postgres (Flask test client, no worker).

Bad input must be refused with an ``application/problem+json`` document with a
stable ``type`` (and field paths where fields are involved) and must write
NOTHING: every such test counts the rows of every order table before and after.
Happy paths assert their effects: the order rows, the status history, and the
outbox rows (one per routed queue) with a valid envelope.
"""

from __future__ import annotations

import base64
import copy
import json
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace

import jwt
import pytest

from devstack.tokens import DevSigner, mint_dev_token
from services.order import repository as repo
from services.order.domain import Line
from services.order.handlers import on_delivery_event, on_payment_event
from services.order.idempotency import fingerprint as request_fingerprint
from services.order.schemas import CreateOrderSchema
from shared.messaging.envelope import Envelope
from tests.support import asserts
from tests.support.asserts import assert_problem
from tests.support.inventory import seed_catalog
from tests.support.tokens import TEST_SIGNER

ORDER_TABLES = ("orders", "order_lines", "order_status_history", "outbox", "idempotency_keys")
# What the test apps accept: the test key, whose JWKS the conftest serves to them.
TOKENS = TEST_SIGNER
CUSTOMER = "customer-1"
OTHER_CUSTOMER = "customer-2"
CUSTOMER_SCOPES = ("orders:read", "orders:write")
ADMIN_SCOPES = ("admin", "orders:read", "orders:write")
# repository.IDEMPOTENCY_STALE_AFTER is 60 s; probe both sides of it.
ABANDONED_AGE_S = 61
FRESH_AGE_S = 30
PAGE_SIZE = 10
OWN_ORDERS = 25
OTHER_ORDERS = 3

ORDER = {
    "items": [
        {"sku": "SKU-1", "quantity": 2},
        {"sku": "SKU-2", "quantity": 3},
    ],
    "customer_email": "ada@example.com",
    "shipping_address": {"name": "Ada Lovelace", "line1": "1 Main St", "city": "Berlin",
                         "postal_code": "10115", "country": "DE"},
}
ORDER_TOTAL = "21.48"  # 2 x 9.99 + 3 x 0.50 at the test catalog's prices


# --- helpers ---------------------------------------------------------------------------
def order_body(**changes) -> dict:
    """A deep copy of the valid ORDER with top-level ``changes``."""
    body = copy.deepcopy(ORDER)
    body.update(copy.deepcopy(changes))
    return body


def with_line(index: int = 0, **changes) -> dict:
    """The valid ORDER with fields of line ``index`` changed."""
    body = order_body()
    body["items"][index].update(changes)
    return body


def row_counts(db) -> dict[str, int]:
    """Rows in every order table."""
    return asserts.row_counts(db, ORDER_TABLES)


def nothing_written(db):
    """The block leaves every order table exactly as it found it."""
    return asserts.nothing_written(db, ORDER_TABLES)


def outbox_rows(db) -> list[dict]:
    """Every outbox row, oldest first."""
    with db.transaction() as cur:
        cur.execute("SELECT * FROM outbox ORDER BY id")
        return cur.fetchall()


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def place(client, headers: dict, body: dict | None = None, **extra_headers):
    """POST an order and assert it was created."""
    response = client.post("/v1/orders", json=body or ORDER, headers={**headers, **extra_headers})
    assert response.status_code == 201, response.get_data(as_text=True)
    return response


def raw_post(client, headers: dict, data, content_type: str = "application/json", path="/v1/orders"):
    return client.post(path, data=data, headers={**headers, "Content-Type": content_type})


def set_status(db, order_id: str, status: str) -> None:
    with db.transaction() as cur:
        cur.execute("UPDATE orders SET status = %s WHERE id = %s", (status, order_id))


# --- bad input: POST /v1/orders --------------------------------------------------------
def _deep_json() -> str:
    depth = 20_000  # deeper than Python's recursion limit, still under 64 KiB
    return "[" * depth + "]" * depth


def _huge_integer_json() -> str:
    digits = "9" * 5_000  # past int()'s 4300-digit limit
    return '{"items":[{"sku":"A","quantity":' + digits + '}]}'


# (id, body (dict -> JSON, str -> raw), content type, status, problem type, field paths)
BAD_CREATE_REQUESTS = [
    ("malformed-json", '{"items": [', "application/json", 400, "malformed-json", ("_body",)),
    ("invalid-utf8", b'{"currency": "\xff\xfe"}', "application/json", 400, "malformed-json", ()),
    ("nested-too-deep", _deep_json(), "application/json", 400, "malformed-json", ()),
    ("integer-too-long", _huge_integer_json(), "application/json", 400, "malformed-json", ()),
    ("text-plain", json.dumps(ORDER), "text/plain", 415, "unsupported-media-type", ()),
    ("form-encoded", "currency=EUR", "application/x-www-form-urlencoded", 415,
     "unsupported-media-type", ()),
    ("empty-object", {}, "application/json", 422, "validation-error",
     ("items", "shipping_address", "customer_email")),
    ("json-array", [ORDER], "application/json", 422, "validation-error", ("_schema",)),
    ("missing-nested-field",
     order_body(shipping_address={k: v for k, v in ORDER["shipping_address"].items() if k != "city"}),
     "application/json", 422, "validation-error", ("shipping_address.city",)),
    ("missing-line-field", order_body(items=[{"sku": "SKU-1"}]), "application/json",
     422, "validation-error", ("items.0.quantity",)),
    ("unknown-top-level-field", order_body(coupon="FREE"), "application/json", 422,
     "validation-error", ("coupon",)),
    ("unknown-line-field", with_line(0, discount="100%"), "application/json", 422,
     "validation-error", ("items.0.discount",)),
    ("unknown-address-field",
     order_body(shipping_address={**ORDER["shipping_address"], "floor": 3}), "application/json",
     422, "validation-error", ("shipping_address.floor",)),
    ("quantity-as-string", with_line(0, quantity="2"), "application/json", 422, "validation-error",
     ("items.0.quantity",)),
    ("quantity-fractional", with_line(0, quantity=2.5), "application/json", 422, "validation-error",
     ("items.0.quantity",)),
    ("quantity-boolean", with_line(0, quantity=True), "application/json", 422, "validation-error",
     ("items.0.quantity",)),
    ("quantity-zero", with_line(0, quantity=0), "application/json", 422, "validation-error",
     ("items.0.quantity",)),
    ("quantity-negative-second-line", with_line(1, quantity=-3), "application/json", 422,
     "validation-error", ("items.1.quantity",)),
    ("quantity-absurd", with_line(0, quantity=10**12), "application/json", 422, "validation-error",
     ("items.0.quantity",)),
    # Prices and the currency are the catalog's: a client that sends them is told so.
    ("client-price", with_line(0, unit_price="0.01"), "application/json", 422,
     "validation-error", ("items.0.unit_price",)),
    ("sku-invalid", with_line(0, sku="no spaces allowed"), "application/json", 422,
     "validation-error", ("items.0.sku",)),
    ("client-currency", order_body(currency="EUR"), "application/json", 422, "validation-error",
     ("currency",)),
    ("duplicate-skus", order_body(items=[ORDER["items"][0], ORDER["items"][0]]), "application/json",
     422, "validation-error", ("items",)),
    ("no-lines", order_body(items=[]), "application/json", 422, "validation-error", ("items",)),
    ("too-many-lines",
     order_body(items=[{"sku": f"SKU-{n}", "quantity": 1} for n in range(101)]),
     "application/json", 422, "validation-error", ("items",)),
    ("items-not-a-list", order_body(items={"sku": "SKU-1"}), "application/json", 422,
     "validation-error", ("items",)),
    ("bad-email", order_body(customer_email="not-an-email"), "application/json", 422,
     "validation-error", ("customer_email",)),
    ("bad-country", order_body(shipping_address={**ORDER["shipping_address"], "country": "Germany"}),
     "application/json", 422, "validation-error", ("shipping_address.country",)),
    ("body-over-64KiB", order_body(customer_email="a@example.com", padding="x" * (64 * 1024)),
     "application/json", 413, "payload-too-large", ()),
]


@pytest.mark.parametrize(("body", "content_type", "status", "type_", "fields"),
                         [case[1:] for case in BAD_CREATE_REQUESTS],
                         ids=[case[0] for case in BAD_CREATE_REQUESTS])
def test_bad_create_request_is_a_problem_and_writes_nothing(order_client, order_db, auth_header,
                                                            body, content_type, status, type_, fields):
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    # An Idempotency-Key too: a refused request must not leave a claimed key behind.
    headers = {**auth_header(), "Idempotency-Key": f"bad-{uuid.uuid4()}"}
    with nothing_written(order_db):
        response = raw_post(order_client, headers, data, content_type)
        assert_problem(response, status, type_, fields)


def test_exactly_100_lines_are_accepted(order_client, order_db, auth_header, catalog):
    seed_catalog(catalog, {f"BULK-{n}": (f"Bulk item {n}", "1.00") for n in range(100)})
    items = [{"sku": f"BULK-{n}", "quantity": 1} for n in range(100)]
    response = place(order_client, auth_header(), order_body(items=items))
    assert response.get_json()["total"] == "100.00"
    assert row_counts(order_db)["order_lines"] == 100


@pytest.mark.parametrize("key", ["k" * 256, ""], ids=["too-long", "empty"])
def test_invalid_idempotency_key_is_400_and_writes_nothing(order_client, order_db, auth_header, key):
    with nothing_written(order_db):
        response = order_client.post("/v1/orders", json=ORDER,
                                     headers={**auth_header(), "Idempotency-Key": key})
        assert_problem(response, 400, "bad-idempotency-key", ("Idempotency-Key",))


# --- authentication and authorization ----------------------------------------------------
def _claims(**changes) -> dict:
    now = int(time.time())
    claims = {"sub": CUSTOMER, "scope": " ".join(CUSTOMER_SCOPES), "iss": TOKENS.issuer,
              "aud": TOKENS.audience, "iat": now, "nbf": now, "exp": now + 600,
              "client_id": "test-client", "jti": "t-1"}
    claims.update(changes)
    return claims


def _tampered_signature() -> str:
    header, payload, signature = mint_dev_token(TOKENS, CUSTOMER, CUSTOMER_SCOPES).split(".")
    middle = len(signature) // 2
    flipped = "A" if signature[middle] != "A" else "B"
    return ".".join((header, payload, signature[:middle] + flipped + signature[middle + 1:]))


def _escalated_payload() -> str:
    """A valid token whose payload was swapped for one claiming admin (signature kept)."""
    header, _payload, signature = mint_dev_token(TOKENS, CUSTOMER, CUSTOMER_SCOPES).split(".")
    forged = base64.urlsafe_b64encode(json.dumps(_claims(scope="admin orders:read orders:write"))
                                      .encode()).decode().rstrip("=")
    return ".".join((header, forged, signature))


BAD_AUTHORIZATION = {
    "missing": None,
    "not-bearer": "Basic Y3VzdG9tZXI6cGFzc3dvcmQ=",
    "empty-bearer": "Bearer ",
    "garbage": "Bearer not.a.jwt",
    "expired": "Bearer " + mint_dev_token(TOKENS, CUSTOMER, CUSTOMER_SCOPES, ttl_s=-3600),
    "tampered-signature": "Bearer " + _tampered_signature(),
    "tampered-payload": "Bearer " + _escalated_payload(),
    "other-key": "Bearer " + DevSigner(TOKENS.issuer, TOKENS.audience, kid=TOKENS.kid).sign(_claims()),
    "wrong-issuer": "Bearer " + TOKENS.sign(_claims(iss="someone-else")),
    "wrong-audience": "Bearer " + TOKENS.sign(_claims(aud="another-api")),
    "alg-none": "Bearer " + jwt.encode(_claims(), None, algorithm="none"),
    "no-subject": "Bearer " + TOKENS.sign({k: v for k, v in _claims().items() if k != "sub"}),
}


@pytest.mark.parametrize("authorization", list(BAD_AUTHORIZATION.values()),
                         ids=list(BAD_AUTHORIZATION))
def test_bad_token_is_401_with_www_authenticate_on_every_endpoint(order_client, order_db,
                                                                  auth_header, authorization):
    order_id = place(order_client, auth_header()).get_json()["id"]
    headers = {"Authorization": authorization} if authorization else {}
    with nothing_written(order_db):
        for response in (
            order_client.post("/v1/orders", json=ORDER, headers=headers),
            order_client.get("/v1/orders", headers=headers),
            order_client.get(f"/v1/orders/{order_id}", headers=headers),
            order_client.post(f"/v1/orders/{order_id}/cancel", json={}, headers=headers),
        ):
            assert_problem(response, 401, "unauthorized")
            assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_wrong_scope_is_403_and_writes_nothing(order_client, order_db, auth_header):
    order_id = place(order_client, auth_header()).get_json()["id"]
    read_only = auth_header(CUSTOMER, ["orders:read"])
    write_only = auth_header(CUSTOMER, ["orders:write"])
    with nothing_written(order_db):
        refused = order_client.post("/v1/orders", json=ORDER, headers=read_only)
        assert_problem(refused, 403, "insufficient-scope")
        assert 'error="insufficient_scope"' in refused.headers["WWW-Authenticate"]
        assert_problem(order_client.post(f"/v1/orders/{order_id}/cancel", headers=read_only), 403,
                       "insufficient-scope")
        assert_problem(order_client.get("/v1/orders", headers=write_only), 403, "insufficient-scope")
        assert_problem(order_client.get(f"/v1/orders/{order_id}", headers=write_only), 403,
                       "insufficient-scope")
        # admin alone does not imply orders:read
        assert_problem(order_client.get("/v1/orders", headers=auth_header("ops", ["admin"])), 403,
                       "insufficient-scope")
    assert order_client.get(f"/v1/orders/{order_id}", headers=read_only).get_json()["status"] == \
        "PENDING_PAYMENT"


def test_another_customers_order_is_404_not_403(order_client, order_db, auth_header):
    order_id = place(order_client, auth_header(CUSTOMER)).get_json()["id"]
    intruder = auth_header(OTHER_CUSTOMER)
    with nothing_written(order_db):
        assert_problem(order_client.get(f"/v1/orders/{order_id}", headers=intruder), 404, "not-found")
        assert_problem(order_client.post(f"/v1/orders/{order_id}/cancel", json={}, headers=intruder),
                       404, "not-found")
    assert order_client.get("/v1/orders", headers=intruder).get_json()["items"] == []
    owner_view = order_client.get(f"/v1/orders/{order_id}", headers=auth_header(CUSTOMER))
    assert owner_view.get_json()["status"] == "PENDING_PAYMENT"


def test_admin_sees_any_order(order_client, auth_header):
    order_id = place(order_client, auth_header(CUSTOMER)).get_json()["id"]
    response = order_client.get(f"/v1/orders/{order_id}", headers=auth_header("ops", ADMIN_SCOPES))
    assert response.status_code == 200
    assert response.get_json()["customer_id"] == CUSTOMER


# --- bad input: ids, queries, cancel bodies ------------------------------------------------
@pytest.mark.parametrize("bad_id", ["not-a-uuid", "123", "00000000-0000-0000-0000-00000000000g",
                                    "00000000-0000-0000-0000-0000000000000"])
def test_non_uuid_ids_are_404_never_500(order_client, order_db, auth_header, bad_id):
    headers = auth_header()
    with nothing_written(order_db):
        assert_problem(order_client.get(f"/v1/orders/{bad_id}", headers=headers), 404, "not-found")
        assert_problem(order_client.post(f"/v1/orders/{bad_id}/cancel", json={}, headers=headers),
                       404, "not-found")


def test_unknown_order_id_is_404(order_client, order_db, auth_header):
    unknown = uuid.uuid4()
    with nothing_written(order_db):
        assert_problem(order_client.get(f"/v1/orders/{unknown}", headers=auth_header()), 404,
                       "not-found")
        assert_problem(order_client.post(f"/v1/orders/{unknown}/cancel", json={},
                                         headers=auth_header()), 404, "not-found")


def _b64(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


BAD_LIST_QUERIES = [
    ("cursor-garbage", "cursor=!!!not-base64!!!", 400, "bad-cursor", ("cursor",)),
    ("cursor-not-json", f"cursor={_b64('hello')}", 400, "bad-cursor", ("cursor",)),
    ("cursor-json-list", f"cursor={_b64('[1, 2]')}", 400, "bad-cursor", ("cursor",)),
    ("cursor-naive-time",
     f"cursor={_b64(json.dumps({'t': '2026-01-01T00:00:00', 'i': str(uuid.UUID(int=1))}))}",
     400, "bad-cursor", ("cursor",)),
    ("cursor-bad-id", f"cursor={_b64(json.dumps({'t': '2026-01-01T00:00:00+00:00', 'i': 'x'}))}",
     400, "bad-cursor", ("cursor",)),
    ("cursor-too-long", "cursor=" + "a" * 300, 422, "validation-error", ("cursor",)),
    ("limit-zero", "limit=0", 422, "validation-error", ("limit",)),
    ("limit-too-big", "limit=101", 422, "validation-error", ("limit",)),
    ("limit-not-a-number", "limit=ten", 422, "validation-error", ("limit",)),
    ("status-unknown", "status=LOST", 422, "validation-error", ("status",)),
    ("status-lowercase", "status=cancelled", 422, "validation-error", ("status",)),
]


@pytest.mark.parametrize(("query", "status", "type_", "fields"), [c[1:] for c in BAD_LIST_QUERIES],
                         ids=[c[0] for c in BAD_LIST_QUERIES])
def test_bad_list_query_is_a_problem(order_client, auth_header, query, status, type_, fields):
    place(order_client, auth_header())
    assert_problem(order_client.get(f"/v1/orders?{query}", headers=auth_header()), status, type_,
                   fields)


BAD_CANCEL_BODIES = [
    ("malformed-json", "{", "application/json", 400, "malformed-json", ()),
    ("text-plain", "changed my mind", "text/plain", 415, "unsupported-media-type", ()),
    ("reason-not-a-string", json.dumps({"reason": 5}), "application/json", 422, "validation-error",
     ("reason",)),
    ("reason-too-long", json.dumps({"reason": "x" * 501}), "application/json", 422,
     "validation-error", ("reason",)),
    ("unknown-field", json.dumps({"refund": True}), "application/json", 422, "validation-error",
     ("refund",)),
]


@pytest.mark.parametrize(("data", "content_type", "status", "type_", "fields"),
                         [c[1:] for c in BAD_CANCEL_BODIES], ids=[c[0] for c in BAD_CANCEL_BODIES])
def test_bad_cancel_body_is_a_problem_and_cancels_nothing(order_client, order_db, auth_header,
                                                          data, content_type, status, type_, fields):
    headers = auth_header()
    order_id = place(order_client, headers).get_json()["id"]
    with nothing_written(order_db):
        response = raw_post(order_client, headers, data, content_type, f"/v1/orders/{order_id}/cancel")
        assert_problem(response, status, type_, fields)
    assert order_client.get(f"/v1/orders/{order_id}", headers=headers).get_json()["status"] == \
        "PENDING_PAYMENT"


# --- placing an order ----------------------------------------------------------------------
def test_place_order_returns_the_order_and_writes_one_outbox_event(order_client, order_db,
                                                                   auth_header, sqs, queues):
    request_id = f"req-{uuid.uuid4()}"
    response = order_client.post("/v1/orders", json=ORDER,
                                 headers={**auth_header(), "X-Request-ID": request_id})
    assert response.status_code == 201
    order = response.get_json()
    order_id = order["id"]
    assert response.headers["Location"] == f"/v1/orders/{order_id}"
    assert response.headers["X-Request-ID"] == request_id
    assert "Idempotent-Replayed" not in response.headers
    assert order["status"] == "PENDING_PAYMENT"  # shipped only once paid
    assert order["payment"]["amount_minor"] == 2148 and order["payment"]["currency"] == "EUR"
    assert order["payment"]["client_secret"].startswith(order["payment"]["payment_intent_id"])
    assert order["customer_id"] == CUSTOMER
    assert order["total"] == ORDER_TOTAL
    assert [(i["sku"], i["quantity"], i["unit_price"], i["line_total"]) for i in order["items"]] == [
        ("SKU-1", 2, "9.99", "19.98"), ("SKU-2", 3, "0.50", "1.50")]
    assert [(h["event"], h["status"], h["previous_status"]) for h in order["history"]] == [
        ("order.created", "PENDING_PAYMENT", None)]
    assert order["shipment"] is None

    assert row_counts(order_db) == {"orders": 1, "order_lines": 2, "order_status_history": 1,
                                    "outbox": 2, "idempotency_keys": 0}
    with order_db.transaction() as cur:
        cur.execute("SELECT total, status, customer_id FROM orders WHERE id = %s", (order_id,))
        assert cur.fetchone() == {"total": Decimal(ORDER_TOTAL), "status": "PENDING_PAYMENT",
                                  "customer_id": CUSTOMER}
    row, inventory_copy = outbox_rows(order_db)
    # The same event goes to the notification service's status stream and to inventory; not to
    # delivery, which ships on order.paid.
    assert row["queue"] == "order-status.fifo"
    assert (inventory_copy["queue"], inventory_copy["event_id"]) == ("inventory-events.fifo",
                                                                     row["event_id"])
    assert row["event_type"] == "order.created"
    assert row["aggregate_id"] == order_id
    assert row["correlation_id"] == request_id
    assert row["published_at"] is None
    envelope = Envelope.from_json(row["body"])  # validates the envelope schema
    assert uuid.UUID(envelope.event_id) == row["event_id"]
    assert envelope.event_type == "order.created"
    assert envelope.event_version == 1
    assert envelope.producer == "order-service"
    assert envelope.aggregate_id == order_id
    assert envelope.correlation_id == request_id
    assert envelope.causation_id is None
    assert datetime.fromisoformat(envelope.occurred_at).tzinfo is not None
    assert envelope.data["order_id"] == order_id
    assert envelope.data["customer_id"] == CUSTOMER
    assert envelope.data["total"] == ORDER_TOTAL
    assert envelope.data["currency"] == "EUR"
    assert [line["sku"] for line in envelope.data["lines"]] == ["SKU-1", "SKU-2"]
    assert envelope.data["shipping_address"]["city"] == "Berlin"
    # Nothing is sent to SQS from inside a request: the relay does that later.
    received = sqs.receive_message(QueueUrl=queues["order-status.fifo"], WaitTimeSeconds=0)
    assert received.get("Messages", []) == []

    fetched = order_client.get(response.headers["Location"], headers=auth_header())
    assert fetched.status_code == 200
    assert fetched.get_json() == order


def test_request_id_is_generated_when_absent_or_unusable(order_client, order_db, auth_header):
    response = place(order_client, auth_header())
    generated = response.headers["X-Request-ID"]
    uuid.UUID(generated)
    row, _inventory_copy = outbox_rows(order_db)
    assert row["correlation_id"] == generated

    too_long = order_client.get("/health/live", headers={"X-Request-ID": "r" * 201})
    uuid.UUID(too_long.headers["X-Request-ID"])
    second = order_client.get("/health/live")
    assert second.headers["X-Request-ID"] != too_long.headers["X-Request-ID"]


# --- idempotency keys ----------------------------------------------------------------------
def _key_rows(db) -> list[dict]:
    with db.transaction() as cur:
        cur.execute("SELECT customer_id, key, state, response_status FROM idempotency_keys"
                    " ORDER BY customer_id")
        return cur.fetchall()


def _insert_key(db, customer: str, key: str, body: dict, age_s: float, state: str = "in_progress",
                expires_in_s: float = 3600) -> None:
    """Put a key row as a concurrent (or crashed) request would have left it."""
    fingerprint = request_fingerprint(CreateOrderSchema().load(body))
    with db.transaction() as cur:
        cur.execute(
            "INSERT INTO idempotency_keys (customer_id, key, request_hash, state, created_at,"
            " expires_at) VALUES (%s, %s, %s, %s, now() - make_interval(secs => %s),"
            " now() + make_interval(secs => %s))",
            (customer, key, fingerprint, state, age_s, expires_in_s))


def test_same_key_and_body_replays_the_first_response(order_client, order_db, auth_header):
    headers = {**auth_header(), "Idempotency-Key": "key-replay"}
    first = place(order_client, headers)
    second = order_client.post("/v1/orders", json=ORDER,
                               headers={**headers, "X-Request-ID": "a-retry"})
    assert second.status_code == 201
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.headers["Location"] == first.headers["Location"]
    assert second.get_json() == first.get_json()
    assert row_counts(order_db)["orders"] == 1
    assert len(outbox_rows(order_db)) == 2  # order-status, inventory-events
    assert _key_rows(order_db) == [{"customer_id": CUSTOMER, "key": "key-replay",
                                    "state": "completed", "response_status": 201}]


def test_same_key_with_another_body_is_422(order_client, order_db, auth_header):
    headers = {**auth_header(), "Idempotency-Key": "key-mismatch"}
    place(order_client, headers)
    with nothing_written(order_db):
        response = order_client.post("/v1/orders", json=with_line(0, quantity=5), headers=headers)
        assert_problem(response, 422, "idempotency-key-mismatch")


def test_key_in_progress_is_409_and_writes_nothing(order_client, order_db, auth_header):
    _insert_key(order_db, CUSTOMER, "key-busy", ORDER, age_s=FRESH_AGE_S)
    with nothing_written(order_db):
        response = order_client.post("/v1/orders", json=ORDER,
                                     headers={**auth_header(), "Idempotency-Key": "key-busy"})
        assert_problem(response, 409, "idempotency-key-in-progress")
        assert response.headers["Retry-After"]
    assert _key_rows(order_db)[0]["state"] == "in_progress"


def test_abandoned_in_progress_key_is_taken_over(order_client, order_db, auth_header):
    _insert_key(order_db, CUSTOMER, "key-crashed", ORDER, age_s=ABANDONED_AGE_S)
    headers = {**auth_header(), "Idempotency-Key": "key-crashed"}
    response = place(order_client, headers)
    assert "Idempotent-Replayed" not in response.headers
    assert row_counts(order_db)["orders"] == 1
    assert _key_rows(order_db) == [{"customer_id": CUSTOMER, "key": "key-crashed",
                                    "state": "completed", "response_status": 201}]
    replay = order_client.post("/v1/orders", json=ORDER, headers=headers)
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.get_json()["id"] == response.get_json()["id"]


def test_expired_completed_key_is_reused_for_a_new_order(order_client, order_db, auth_header):
    _insert_key(order_db, CUSTOMER, "key-old", ORDER, age_s=90_000, state="completed",
                expires_in_s=-3600)
    response = place(order_client, {**auth_header(), "Idempotency-Key": "key-old"})
    assert "Idempotent-Replayed" not in response.headers
    assert row_counts(order_db)["orders"] == 1


def test_idempotency_keys_are_per_customer(order_client, order_db, auth_header):
    first = place(order_client, {**auth_header(CUSTOMER), "Idempotency-Key": "shared-key"})
    second = place(order_client, {**auth_header(OTHER_CUSTOMER), "Idempotency-Key": "shared-key"})
    assert "Idempotent-Replayed" not in second.headers
    assert first.get_json()["id"] != second.get_json()["id"]
    assert second.get_json()["customer_id"] == OTHER_CUSTOMER
    assert row_counts(order_db)["orders"] == 2
    assert len(outbox_rows(order_db)) == 4  # two orders, each on two queues
    assert [r["customer_id"] for r in _key_rows(order_db)] == [CUSTOMER, OTHER_CUSTOMER]


# --- listing -------------------------------------------------------------------------------
def _walk(client, headers: dict, query: str = "") -> list[list[dict]]:
    """Every page of GET /v1/orders, following next_cursor."""
    pages, cursor = [], None
    for _ in range(20):  # a loop guard: a cursor that never ends is a bug
        url = f"/v1/orders?limit={PAGE_SIZE}{query}" + (f"&cursor={cursor}" if cursor else "")
        response = client.get(url, headers=headers)
        assert response.status_code == 200, response.get_data(as_text=True)
        page = response.get_json()
        pages.append(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return pages
    raise AssertionError("pagination did not end")


def test_cursor_pagination_walks_every_order_once(order_client, order_db, auth_header):
    own = [place(order_client, auth_header(CUSTOMER)).get_json()["id"] for _ in range(OWN_ORDERS)]
    others = [place(order_client, auth_header(OTHER_CUSTOMER)).get_json()["id"]
              for _ in range(OTHER_ORDERS)]
    # Ties on created_at across a page boundary: only the id tie-breaker keeps them apart.
    with order_db.transaction() as cur:
        cur.execute("UPDATE orders SET created_at = %s WHERE id = ANY(%s::uuid[])",
                    (datetime(2026, 1, 1, tzinfo=UTC), own[5:17]))
        cur.execute("SELECT id::text FROM orders WHERE customer_id = %s"
                    " ORDER BY created_at DESC, id DESC", (CUSTOMER,))
        expected_order = [r["id"] for r in cur.fetchall()]

    pages = _walk(order_client, auth_header(CUSTOMER))
    assert [len(p) for p in pages] == [10, 10, 5]
    walked = [o["id"] for page in pages for o in page]
    assert walked == expected_order
    assert sorted(walked) == sorted(own)
    assert all("history" not in o for page in pages for o in page)

    admin_walk = [o["id"] for page in _walk(order_client, auth_header("ops", ADMIN_SCOPES))
                  for o in page]
    assert len(admin_walk) == len(set(admin_walk)) == OWN_ORDERS + OTHER_ORDERS
    assert set(admin_walk) == set(own) | set(others)

    other_walk = [o["id"] for page in _walk(order_client, auth_header(OTHER_CUSTOMER)) for o in page]
    assert sorted(other_walk) == sorted(others)


def test_status_filter(order_client, auth_header):
    headers = auth_header()
    ids = [place(order_client, headers).get_json()["id"] for _ in range(4)]
    for order_id in ids[:2]:
        assert order_client.post(f"/v1/orders/{order_id}/cancel", json={},
                                 headers=headers).status_code == 200
    cancelled = order_client.get("/v1/orders?status=CANCELLED", headers=headers).get_json()
    pending = order_client.get("/v1/orders?status=PENDING_PAYMENT", headers=headers).get_json()
    shipped = order_client.get("/v1/orders?status=SHIPPED", headers=headers).get_json()
    assert sorted(o["id"] for o in cancelled["items"]) == sorted(ids[:2])
    assert sorted(o["id"] for o in pending["items"]) == sorted(ids[2:])
    assert shipped["items"] == []
    assert {o["status"] for o in cancelled["items"]} == {"CANCELLED"}


# --- cancelling ----------------------------------------------------------------------------
def test_cancel_pending_order_writes_history_and_two_events(order_client, order_db, auth_header):
    headers = auth_header()
    order_id = place(order_client, headers).get_json()["id"]
    response = order_client.post(f"/v1/orders/{order_id}/cancel", json={"reason": "changed my mind"},
                                 headers={**headers, "X-Request-ID": "cancel-req-1"})
    assert response.status_code == 200
    order = response.get_json()
    assert order["status"] == "CANCELLED"
    assert order["cancel_reason"] == "changed my mind"
    assert [(h["event"], h["status"], h["previous_status"]) for h in order["history"]] == [
        ("order.created", "PENDING_PAYMENT", None),
        ("order.cancelled", "CANCELLED", "PENDING_PAYMENT")]

    (created, created_inventory, cancelled, cancelled_status, cancelled_inventory,
     cancelled_payments, status_changed, status_changed_payments) = outbox_rows(order_db)
    assert cancelled_status["event_id"] == cancelled["event_id"]
    assert (created_inventory["event_id"], cancelled_inventory["event_id"]) == (
        created["event_id"], cancelled["event_id"])
    assert {created["queue"], cancelled_status["queue"]} == {"order-status.fifo"}
    assert {created_inventory["queue"], cancelled_inventory["queue"]} == {"inventory-events.fifo"}
    # The payment service voids the payment on it, and hears of every status change.
    assert (cancelled_payments["queue"], cancelled_payments["event_id"]) == (
        "order-payments.fifo", cancelled["event_id"])
    assert (status_changed_payments["queue"], status_changed_payments["event_id"]) == (
        "order-payments.fifo", status_changed["event_id"])
    assert created["event_type"] == "order.created"
    assert (cancelled["queue"], cancelled["event_type"]) == ("order-cancelled.fifo", "order.cancelled")
    assert (status_changed["queue"], status_changed["event_type"]) == (
        "order-status.fifo", "order.status_changed")
    cancel_event = Envelope.from_json(cancelled["body"])
    change_event = Envelope.from_json(status_changed["body"])
    for row, event in ((cancelled, cancel_event), (status_changed, change_event)):
        assert row["aggregate_id"] == event.aggregate_id == order_id
        assert row["correlation_id"] == event.correlation_id == "cancel-req-1"
    assert cancel_event.data == {"order_id": order_id, "customer_id": CUSTOMER,
                                 "reason": "changed my mind"}
    assert change_event.causation_id == cancel_event.event_id
    assert change_event.data["previous_status"] == "PENDING_PAYMENT"
    assert change_event.data["status"] == "CANCELLED"


def test_cancelling_twice_is_200_and_adds_nothing(order_client, order_db, auth_header):
    headers = auth_header()
    order_id = place(order_client, headers).get_json()["id"]
    first = order_client.post(f"/v1/orders/{order_id}/cancel", headers=headers)
    assert first.status_code == 200
    with nothing_written(order_db):
        again = order_client.post(f"/v1/orders/{order_id}/cancel", json={"reason": "again"},
                                  headers=headers)
        assert again.status_code == 200
    assert again.get_json()["status"] == "CANCELLED"
    assert again.get_json()["cancel_reason"] is None
    assert again.get_json()["history"] == first.get_json()["history"]


def _ship(order_db, order_id: str) -> None:
    """Drive the order to SHIPPED the way the worker does: paid, then a delivery.shipped event."""
    paid = Envelope(event_type="payment.authorized", aggregate_id=order_id,
                    producer="payment-service",
                    data={"order_id": order_id, "payment_intent_id": "pi_test", "currency": "EUR",
                          "amount_minor": 2148, "authorized_at": datetime.now(UTC).isoformat()})
    with order_db.transaction() as cur:
        on_payment_event(cur, paid)
    event = Envelope(event_type="delivery.shipped", aggregate_id=order_id, producer="delivery-service",
                     data={"shipment_id": str(uuid.uuid4()), "order_id": order_id,
                           "status": "SHIPPED", "carrier": "DHL", "tracking_number": "DHL0000TEST1",
                           "occurred_at": datetime.now(UTC).isoformat()})
    with order_db.transaction() as cur:
        on_delivery_event(cur, event)


def test_cancel_shipped_order_is_409_and_writes_nothing(order_client, order_db, auth_header):
    headers = auth_header()
    order_id = place(order_client, headers).get_json()["id"]
    _ship(order_db, order_id)
    assert order_client.get(f"/v1/orders/{order_id}", headers=headers).get_json()["status"] == "SHIPPED"
    with nothing_written(order_db):
        response = order_client.post(f"/v1/orders/{order_id}/cancel", json={}, headers=headers)
        body = assert_problem(response, 409, "order-not-cancellable")
    assert body["status_now"] == "SHIPPED"
    assert order_client.get(f"/v1/orders/{order_id}", headers=headers).get_json()["status"] == "SHIPPED"


@pytest.mark.parametrize("status", ["DELIVERED", "DELIVERY_FAILED"])
def test_cancel_after_delivery_outcome_is_409(order_client, order_db, auth_header, status):
    headers = auth_header()
    order_id = place(order_client, headers).get_json()["id"]
    set_status(order_db, order_id, status)
    with nothing_written(order_db):
        response = order_client.post(f"/v1/orders/{order_id}/cancel", json={}, headers=headers)
        assert assert_problem(response, 409, "order-not-cancellable")["status_now"] == status


# --- health and docs -----------------------------------------------------------------------
def test_health_live_and_ready(order_client):
    live = order_client.get("/health/live")
    assert live.status_code == 200
    assert live.get_json() == {"status": "ok"}
    ready = order_client.get("/health/ready")
    assert ready.status_code == 200
    body = ready.get_json()
    assert body["status"] == "ok"
    assert {name: check["status"] for name, check in body["checks"].items()} == {
        "database": "ok", "sqs": "ok"}


def test_ready_is_503_when_its_queue_is_missing(app_for):
    app = app_for("order", QUEUE_PREFIX=f"absent{uuid.uuid4().hex[:8]}-")
    response = app.test_client().get("/health/ready")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "failing"
    assert body["checks"]["sqs"]["status"] == "failing"
    assert body["checks"]["database"]["status"] == "ok"


def test_openapi_documents_every_endpoint(order_client):
    response = order_client.get("/openapi.json")
    assert response.status_code == 200
    spec = response.get_json()
    paths = spec["paths"]
    assert set(paths["/v1/orders"]) >= {"get", "post"}
    assert "get" in paths["/v1/orders/{order_id}"]
    assert "post" in paths["/v1/orders/{order_id}/cancel"]
    post = paths["/v1/orders"]["post"]
    assert "201" in post["responses"] and "422" in post["responses"]
    assert any(p["name"] == "Idempotency-Key" for p in post.get("parameters", []))
    assert "bearerAuth" in spec["components"]["securitySchemes"]
    create = spec["components"]["schemas"]["CreateOrder"]
    assert set(create["required"]) == {"items", "shipping_address", "customer_email"}


def test_unknown_route_and_method_are_problems(order_client, auth_header):
    assert_problem(order_client.get("/v1/nothing-here", headers=auth_header()), 404, "not-found")
    response = order_client.delete("/v1/orders", headers=auth_header())
    assert_problem(response, 405, "method-not-allowed")
    assert "GET" in response.headers["Allow"]


def test_the_new_order_row_is_read_back_as_get_order_reads_it(order_db):
    """insert_order writes order, lines and history in one statement and returns what is stored."""
    order_id = uuid.uuid4()
    lines = [Line("SKU-1", 2, Decimal("9.5")), Line("SKU-2", 1, Decimal("0.333"))]
    payment = SimpleNamespace(intent_id="pi_1", client_secret="pi_1_secret", amount_minor=1933)
    with order_db.transaction() as cur:
        created = repo.insert_order(cur, order_id, "customer-1", "a@example.com", "EUR",
                                    Decimal("19.33"), {"country": "DE"}, lines, payment)
    with order_db.transaction() as cur:
        stored = repo.get_order(cur, order_id)
    assert created == stored
    assert [line["unit_price"] for line in created["lines"]] == [Decimal("9.50"), Decimal("0.33")]
    assert [(h["status"], h["previous_status"], h["event"]) for h in created["history"]] == [
        ("PENDING_PAYMENT", None, "order.created")]
