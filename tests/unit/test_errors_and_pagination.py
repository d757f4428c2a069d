"""Problem documents (RFC 9457), field-error flattening and list cursors (no I/O)."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from flask import Flask, abort
from werkzeug.exceptions import BadRequest, UnprocessableEntity

from services.order.schemas import CreateOrderSchema
from shared.errors import (
    PROBLEM_MEDIA_TYPE,
    Problem,
    flatten_field_errors,
    problem_response,
    register_problem_handlers,
)
from shared.pagination import decode_cursor, encode_cursor

SECRET_DETAIL = "password=hunter2 at db-primary:5432"


# --- flattening ----------------------------------------------------------------------------------
def test_flatten_nested_dicts_lists_and_indexes():
    messages = {
        "items": {0: {"quantity": ["Not a valid integer."]},
                  2: {"sku": ["Bad sku.", "Too long."], "unit_price": ["Too many decimals."]}},
        "shipping_address": {"country": ["Must be an ISO code."]},
        "currency": ["Unknown."],
    }
    assert flatten_field_errors(messages) == [
        {"field": "items.0.quantity", "message": "Not a valid integer."},
        {"field": "items.2.sku", "message": "Bad sku."},
        {"field": "items.2.sku", "message": "Too long."},
        {"field": "items.2.unit_price", "message": "Too many decimals."},
        {"field": "shipping_address.country", "message": "Must be an ISO code."},
        {"field": "currency", "message": "Unknown."},
    ]


def test_flatten_top_level_messages_and_scalars():
    assert flatten_field_errors(["Invalid input type."]) == [
        {"field": "_body", "message": "Invalid input type."}]
    assert flatten_field_errors("Broken.") == [{"field": "_body", "message": "Broken."}]
    assert flatten_field_errors({"_schema": ["Each sku once."]}) == [
        {"field": "_schema", "message": "Each sku once."}]
    assert flatten_field_errors({}) == []


def test_flatten_a_list_of_nested_errors():
    assert flatten_field_errors({"tags": [{"name": ["Required."]}, {"name": ["Too long."]}]}) == [
        {"field": "tags.name", "message": "Required."}, {"field": "tags.name", "message": "Too long."}]


def test_flatten_real_marshmallow_errors_gives_the_field_paths():
    body = {"items": [{"sku": "A", "quantity": 1},
                      {"sku": "B", "quantity": "2", "unit_price": "1.001", "colour": "red"}],
            "customer_email": "x@example.com",
            "shipping_address": {"name": "A", "line1": "B", "city": "C", "postal_code": "1"}}
    fields = {e["field"] for e in flatten_field_errors(CreateOrderSchema().validate(body))}
    assert fields == {"items.1.quantity", "items.1.unit_price", "items.1.colour",
                      "shipping_address.country"}


# --- problem documents --------------------------------------------------------------------------
def test_problem_response_renders_rfc9457_with_errors_extensions_and_headers():
    app = Flask("unit")
    problem = Problem(409, "Conflict", "Already shipped.", "order-not-cancellable",
                      errors=[{"field": "status", "message": "SHIPPED"}],
                      headers={"Retry-After": "1"}, status_now="SHIPPED")
    with app.test_request_context("/v1/orders/1/cancel", method="POST"):
        response = problem_response(problem)
    assert response.status_code == 409
    assert response.mimetype == PROBLEM_MEDIA_TYPE
    assert response.headers["Retry-After"] == "1"
    assert json.loads(response.get_data(as_text=True)) == {
        "type": "/problems/order-not-cancellable", "title": "Conflict", "status": 409,
        "detail": "Already shipped.", "instance": "/v1/orders/1/cancel",
        "errors": [{"field": "status", "message": "SHIPPED"}], "status_now": "SHIPPED"}


@pytest.mark.parametrize(("status", "type_"), [(400, "bad-request"), (404, "not-found"),
                                               (413, "payload-too-large"), (503, "service-unavailable"),
                                               (418, "error")])
def test_default_problem_types_by_status(status, type_):
    assert Problem(status, "t", "d").type == type_


@pytest.fixture
def client():
    """A bare app with only the problem handlers, and routes that fail in each way."""
    app = Flask("unit")
    register_problem_handlers(app)

    @app.get("/boom")
    def boom():
        raise RuntimeError(SECRET_DETAIL)

    @app.get("/webargs-422")
    def webargs_422():
        error = UnprocessableEntity()
        error.data = {"messages": {"json": {"items": {0: {"quantity": ["Not a valid integer."]}}}}}
        raise error

    @app.get("/webargs-bad-json")
    def webargs_bad_json():
        error = BadRequest()
        error.data = {"messages": {"json": ["Invalid JSON body."]}}
        raise error

    @app.get("/webargs-two-locations")
    def webargs_two_locations():
        error = UnprocessableEntity()
        error.data = {"messages": {"query": {"limit": ["Too big."]}, "json": {"x": ["Unknown field."]}}}
        raise error

    @app.get("/gone")
    def gone():
        abort(410)

    @app.post("/only-post")
    def only_post():
        return "ok"

    return app.test_client()


def test_unexpected_exception_is_a_generic_500_that_leaks_nothing(client):
    response = client.get("/boom")
    assert response.status_code == 500
    assert response.mimetype == PROBLEM_MEDIA_TYPE
    body = response.get_json()
    assert body["type"] == "/problems/internal-error"
    assert "hunter2" not in response.get_data(as_text=True)
    assert "RuntimeError" not in response.get_data(as_text=True)


def test_webargs_validation_errors_keep_field_paths(client):
    body = client.get("/webargs-422").get_json()
    assert body["type"] == "/problems/validation-error"
    assert body["errors"] == [{"field": "items.0.quantity", "message": "Not a valid integer."}]


def test_webargs_invalid_json_is_malformed_json(client):
    response = client.get("/webargs-bad-json")
    assert response.status_code == 400
    assert response.get_json()["type"] == "/problems/malformed-json"


def test_errors_from_two_locations_are_all_reported(client):
    fields = {e["field"] for e in client.get("/webargs-two-locations").get_json()["errors"]}
    assert fields == {"query.limit", "json.x"}


def test_http_errors_become_problems(client):
    gone = client.get("/gone")
    assert (gone.status_code, gone.mimetype) == (410, PROBLEM_MEDIA_TYPE)
    assert gone.get_json()["type"] == "/problems/error"
    missing = client.get("/nowhere")
    assert missing.get_json()["type"] == "/problems/not-found"
    wrong_method = client.get("/only-post")
    assert wrong_method.status_code == 405
    assert wrong_method.get_json()["type"] == "/problems/method-not-allowed"
    assert "POST" in wrong_method.headers["Allow"]


# --- cursors -----------------------------------------------------------------------------------
def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def test_cursor_round_trip_keeps_microseconds_timezone_and_id():
    when = datetime(2026, 11, 24, 10, 15, 30, 123456, tzinfo=UTC)
    row_id = uuid.uuid4()
    cursor = encode_cursor(when, row_id)
    assert "=" not in cursor and "+" not in cursor and "/" not in cursor  # safe in a query string
    assert decode_cursor(cursor) == (when, row_id)
    offset = datetime(2026, 11, 24, 11, 0, tzinfo=timezone(timedelta(hours=2)))
    decoded_at, _ = decode_cursor(encode_cursor(offset, row_id))
    assert decoded_at == offset and decoded_at.utcoffset() == timedelta(hours=2)


@pytest.mark.parametrize("cursor", [
    "!!!",
    "abc",
    _b64(b"\xff\xfe\xfd"),
    _b64(b"not json"),
    _b64(b"[1, 2]"),
    _b64(b'"just a string"'),
    _b64(b"42"),
    _b64(json.dumps({"t": "2026-11-24T10:00:00"}).encode()),
    _b64(json.dumps({"i": str(uuid.uuid4())}).encode()),
    _b64(json.dumps({"t": "2026-11-24T10:00:00", "i": str(uuid.uuid4())}).encode()),  # naive
    _b64(json.dumps({"t": "yesterday", "i": str(uuid.uuid4())}).encode()),
    _b64(json.dumps({"t": "2026-11-24T10:00:00+00:00", "i": "not-a-uuid"}).encode()),
    _b64(json.dumps({"t": 1732442400, "i": str(uuid.uuid4())}).encode()),
], ids=["punctuation", "short", "not-utf8", "not-json", "list", "string", "number", "no-id", "no-time",
        "naive-time", "bad-time", "bad-id", "numeric-time"])
def test_bad_cursor_is_a_400_problem(cursor):
    with pytest.raises(Problem) as info:
        decode_cursor(cursor)
    problem = info.value
    assert (problem.status, problem.type) == (400, "bad-cursor")
    assert problem.errors == [{"field": "cursor", "message": "Invalid cursor."}]
