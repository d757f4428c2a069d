"""SQL injection and oversized strings in every body field and query parameter of every service.

Operations come from each service's OpenAPI document, so a new endpoint or
field is covered without editing this file (a new JSON body needs a valid
example in BODIES, or the suite fails). Expected: never a 5xx; a refused
request writes nothing; an accepted one stores the text as text (the tables
are all still there and the row went in whole).
"""

from __future__ import annotations

import copy

import psycopg2
import pytest

from shared.auth import SCOPES
from tests.support.tokens import TEST_SIGNER

SERVICES = ("order", "delivery", "inventory", "notification", "auth")
HOSTILE = (
    "' OR '1'='1",
    "'; DROP TABLE orders; --",
    "\" OR 1=1 --",
    "1); SELECT pg_sleep(5); --",
    "%' UNION SELECT password_hash FROM auth_svc.users --",
    "\x00",
    "x" * 10_000,  # oversized, still under the 64 KiB body limit
)
ADDRESS = {"name": "Ada", "line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "DE"}
# A valid body per JSON operation: each string in it is replaced by each hostile value in turn.
BODIES = {
    ("order", "POST", "/v1/orders"): {"items": [{"sku": "SKU-1", "quantity": 1}],
                                      "customer_email": "a@example.com", "shipping_address": ADDRESS},
    ("order", "POST", "/v1/orders/{order_id}/cancel"): {"reason": "changed my mind"},
    ("delivery", "POST", "/v1/shipments/{shipment_id}/events"): {"status": "SHIPPED", "location": "Hub"},
    ("inventory", "POST", "/v1/products"): {"sku": "NEW-1", "name": "New", "price": "1.00",
                                            "currency": "EUR", "on_hand": 1},
    ("inventory", "PUT", "/v1/products/{sku}"): {"sku": "SKU-1", "name": "Renamed", "price": "2.00",
                                                 "currency": "EUR", "on_hand": 5},
    ("inventory", "POST", "/v1/products/{sku}/stock-adjustments"): {"delta": 1, "reason": "correction",
                                                                     "note": "count"},
    ("inventory", "POST", "/v1/availability"): {"lines": [{"sku": "SKU-1", "quantity": 1}]},
    ("inventory", "PUT", "/v1/reservations/{order_id}"): {"lines": [{"sku": "SKU-1", "quantity": 1}]},
    ("notification", "POST", "/v1/webhooks"): {"name": "hook", "topic": "order.created",
                                               "delivery_url": "http://127.0.0.1:9/hook"},
    ("notification", "PUT", "/v1/webhooks/{sub_id}"): {"name": "hook", "topic": "order.created",
                                                        "delivery_url": "http://127.0.0.1:9/hook"},
    ("auth", "POST", "/oauth/logout"): {"everywhere": False},
    ("auth", "POST", "/v1/customers"): {"username": "new@example.com", "password": "long enough pw 1"},
}
PATH_VALUES = {"order_id": "5f2b0a1e-0000-4000-8000-000000000001",
               "shipment_id": "5f2b0a1e-0000-4000-8000-000000000002",
               "sub_id": "5f2b0a1e-0000-4000-8000-000000000003",
               "delivery_id": "5f2b0a1e-0000-4000-8000-000000000004", "sku": "SKU-1"}
STREAMS = {"/v1/notifications/stream"}  # never ends by itself; its parameters are checked by its tests


def _admin() -> dict:
    claims = TEST_SIGNER.claims("fuzz-operator", SCOPES, 600)
    return {"Authorization": f"Bearer {TEST_SIGNER.sign(claims)}"}


def _rows(database_url) -> dict[str, int]:
    """Row count of every table of every service schema."""
    conn = psycopg2.connect(database_url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT schemaname, tablename FROM pg_tables WHERE schemaname LIKE '%%\\_svc'"
                        " AND tablename <> 'alembic_version'")
            counts = {}
            for schema, table in cur.fetchall():
                cur.execute(f'SELECT count(*) FROM "{schema}"."{table}"')
                counts[f"{schema}.{table}"] = cur.fetchone()[0]
            return counts
    finally:
        conn.close()


def _string_paths(node, prefix=()):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _string_paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _string_paths(value, (*prefix, index))
    elif isinstance(node, str):
        yield prefix


def _with(body, path, value):
    body = copy.deepcopy(body)
    target = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return body


def _operations(app):
    spec = app.test_client().get("/openapi.json").json
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method.upper() in ("GET", "POST", "PUT", "PATCH", "DELETE"):
                yield method.upper(), path, operation


def _url(path: str) -> str:
    for name, value in PATH_VALUES.items():
        path = path.replace("{" + name + "}", value)
    return path


@pytest.mark.parametrize("service", SERVICES)
def test_hostile_strings_in_every_field_and_parameter(request, service, catalog):
    app = request.getfixturevalue(f"{service}_app")
    client = app.test_client()
    database_url = catalog
    problems = []
    for method, path, operation in _operations(app):
        if path in STREAMS:
            continue
        json_body = "application/json" in (operation.get("requestBody") or {}).get("content", {})
        if json_body:
            base = BODIES.get((service, method, path))
            if base is None:
                problems.append(f"{method} {path}: no example body in BODIES")
                continue
            for field in _string_paths(base):
                for value in HOSTILE:
                    before = _rows(database_url)
                    response = client.open(_url(path), method=method, headers=_admin(),
                                           json=_with(base, field, value))
                    label = f"{method} {path} {'.'.join(map(str, field))}={value[:20]!r}"
                    if response.status_code >= 500:
                        problems.append(f"{label}: {response.status_code}")
                    elif response.status_code >= 400 and _rows(database_url) != before:
                        problems.append(f"{label}: refused with {response.status_code} but wrote rows")
        for parameter in operation.get("parameters", []):
            if parameter.get("in") != "query":
                continue
            for value in HOSTILE:
                before = _rows(database_url)
                response = client.open(_url(path), method=method, headers=_admin(),
                                       query_string={parameter["name"]: value},
                                       json=BODIES.get((service, method, path)) if json_body else None)
                label = f"{method} {path}?{parameter['name']}={value[:20]!r}"
                if response.status_code >= 500:
                    problems.append(f"{label}: {response.status_code}")
                elif method == "GET" and _rows(database_url) != before:
                    problems.append(f"{label}: a GET wrote rows")
        if "{sku}" in path:  # the one free-text path segment
            for value in HOSTILE[:5]:
                response = client.open(path.replace("{sku}", value), method=method, headers=_admin(),
                                       json=BODIES.get((service, method, path)) if json_body else None)
                if response.status_code >= 500:
                    problems.append(f"{method} {path} sku={value[:20]!r}: {response.status_code}")
    # Every table is still there and the hostile text, where accepted, is stored as text.
    assert _rows(database_url)
    assert not problems, "\n".join(problems)


def test_an_oversized_body_is_413_and_writes_nothing(order_client, catalog):
    before = _rows(catalog)
    response = order_client.post("/v1/orders", headers=_admin(), data="x" * (70 * 1024),
                                 content_type="application/json")
    assert response.status_code == 413
    assert _rows(catalog) == before
