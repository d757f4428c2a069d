"""SQL injection and oversized strings in every body field and query parameter of every service.

Operations come from each service's OpenAPI document, so a new endpoint or
field is covered without editing this file (a new JSON body needs a valid
example in BODIES, or the suite fails). Every path parameter names a fresh,
existing resource (:class:`Resources`), so each hostile value reaches the
handler and the SQL it targets instead of a 404 from the lookup. Expected:
never a 5xx; a refused request is a validation or state refusal (400, 409,
413, 422) and writes nothing; an accepted one stores the text byte for byte
(a text or jsonb cell of the service's schema equal to it appears), except
the few fields in NOT_STORED that are not kept as text by design.
"""

from __future__ import annotations

import base64
import copy
import uuid
from urllib.parse import quote

import psycopg2
import pytest
from psycopg2 import sql

from shared.auth import SCOPES
from shared.services import SERVICES as TOPOLOGY_SERVICES
from tests.support.tokens import TEST_SIGNER

SERVICES = ("order", "delivery", "inventory", "notification", "auth", "payment")
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
    ("notification", "POST", "/v1/notifications/stream/tickets"): {
        "order_id": "7d0c2b4e-1f0a-4c56-9a43-0c3a7f1b2d9e"},
    ("order", "POST", "/v1/orders"): {"items": [{"sku": "SKU-1", "quantity": 1}],
                                      "customer_email": "a@example.com", "shipping_address": ADDRESS},
    ("order", "POST", "/v1/orders/{order_id}/cancel"): {"reason": "changed my mind"},
    ("delivery", "PUT", "/v1/shipment-cancellations/{order_id}"): {"reason": "changed my mind"},
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
    ("payment", "PUT", "/v1/payments/{order_id}"): {
        "customer_id": "fuzz-customer", "currency": "EUR",
        "lines": [{"sku": "SKU-1", "quantity": 1, "unit_price": "9.99"}]},
    ("payment", "POST", "/v1/payments/{order_id}/confirm"): {"payment_method": "pm_card_visa"},
    ("payment", "POST", "/v1/payments/{order_id}/refunds"): {"lines": [{"sku": "SKU-1",
                                                                        "quantity": 1}]},
    ("auth", "POST", "/oauth/logout"): {"everywhere": False},
    # shared.admin, in every service with a worker (no text field: ids or a flag only).
    **{(s.name, "POST", "/v1/admin/outbox/retry"): {"ids": [1]}
       for s in TOPOLOGY_SERVICES if s.worker is not None},
    ("auth", "POST", "/v1/customers"): {"username": "new@example.com", "password": "long enough pw 1"},
}
# Fields whose text is not kept as given, by design: the password is stored as its argon2 hash,
# availability is a read, and the logout body has no string field at all.
NOT_STORED = {("auth", "POST", "/v1/customers", ("password",)),
              ("inventory", "POST", "/v1/availability", ("lines", 0, "sku"))}
# Refusals that show the hostile value reached the code that judges it: the schema (400, 422), or
# the handler's own rule about the stored state (409). A 404 here would mean the path's resource was
# missing and the hostile field never got past the lookup, so it counts as a failure.
REFUSED = {400, 413, 422}
# Fields that must be unique per owner: each request gets a fresh value there (unless that field is
# the one under test), so an earlier accepted case cannot turn a later one into a 409 duplicate.
UNIQUE = {("inventory", "POST", "/v1/products"): ("sku", "NEW-{}"),
          ("notification", "POST", "/v1/webhooks"): ("delivery_url", "http://127.0.0.1:9/hook/{}"),
          ("notification", "PUT", "/v1/webhooks/{sub_id}"): ("delivery_url",
                                                             "http://127.0.0.1:9/hook/{}"),
          ("auth", "POST", "/v1/customers"): ("username", "new-{}@example.com")}
COPIES = ("alembic_version", "outbox", "inbox", "idempotency_keys")
SCHEMAS = {"order": "order_svc", "delivery": "delivery_svc", "inventory": "inventory_svc",
           "notification": "notification_svc", "auth": "auth_svc", "payment": "payment_svc"}
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


def _cells_holding(database_url, schema: str, value: str) -> int:
    """How many text cells, and strings anywhere inside jsonb cells, of ``schema`` equal ``value``.

    Equality is PostgreSQL's on text (and on jsonb strings), so a value counts only
    when it was stored byte for byte: not truncated, not escaped, not re-encoded.
    The tables in COPIES are left out: they hold the message or the response, so
    a value found only there did not reach the resource's own row.
    """
    if "\x00" in value:  # PostgreSQL text cannot hold NUL: such a value is never stored as given
        return 0
    conn = psycopg2.connect(database_url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT table_name, column_name, data_type FROM information_schema.columns"
                        " WHERE table_schema = %s AND NOT table_name = ANY(%s)"
                        " AND data_type IN ('text', 'character varying', 'jsonb')", (schema, list(COPIES)))
            total = 0
            for table, column, data_type in cur.fetchall():
                target = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))
                if data_type == "jsonb":
                    condition = sql.SQL("jsonb_path_exists({}, 'lax $.** ? (@ == $v)',"
                                        " jsonb_build_object('v', %s::text))").format(
                        sql.Identifier(column))
                else:
                    condition = sql.SQL("{} = %s").format(sql.Identifier(column))
                cur.execute(sql.SQL("SELECT count(*) FROM {} WHERE {}").format(target, condition),
                            (value,))
                total += cur.fetchone()[0]
            return total
    finally:
        conn.close()


class Resources:
    """A fresh, existing resource for each path parameter, so every case reaches its handler.

    An id nobody holds is answered 404 by the lookup before the body or the query
    is used; a resource reused across cases would answer 409 once its state moved
    on (a cancelled order cannot be cancelled again). So each request gets its own.
    """

    def __init__(self, service: str, app, database_url: str):
        self.service, self.app, self.database_url = service, app, database_url
        self.client = app.test_client()
        self._storefront = None

    def headers(self, path: str) -> dict:
        """Registration takes first-party client credentials; everything else the operator's token."""
        if (self.service, path) != ("auth", "/v1/customers"):
            return _admin()
        if self._storefront is None:
            from tests.support.auth import make_client

            self._storefront = make_client(self.app, "Fuzz storefront", ("orders:read",),
                                           ("password",), first_party=True)
        basic = base64.b64encode(
            f"{self._storefront.client_id}:{self._storefront.client_secret}".encode()).decode()
        return {"Authorization": f"Basic {basic}"}

    @staticmethod
    def body(key, base, field=None, value=None):
        """``base`` with ``value`` at ``field``, and a fresh value in its unique field, if any."""
        body = copy.deepcopy(base)
        if key in UNIQUE and UNIQUE[key][0] != (field[0] if field else None):
            body[UNIQUE[key][0]] = UNIQUE[key][1].format(uuid.uuid4().hex[:12])
        return _with(body, field, value) if field else body

    def url(self, path: str) -> str:
        if "{order_id}" in path:
            path = path.replace("{order_id}", self._order_id())
        if "{shipment_id}" in path:
            path = path.replace("{shipment_id}", self._shipment_id())
        if "{sub_id}" in path:
            path = path.replace("{sub_id}", self._subscription_id())
        # No case sends a hostile value to redeliver (it takes no body and no query).
        return path.replace("{delivery_id}", str(uuid.uuid4())).replace("{sku}", "SKU-1")

    def _order_id(self) -> str:
        if self.service != "order":  # the inventory's reservation is created by its PUT
            return str(uuid.uuid4())
        body = BODIES[("order", "POST", "/v1/orders")]
        response = self.client.post("/v1/orders", json=body, headers=_admin())
        assert response.status_code == 201, response.get_data(as_text=True)
        return response.json["id"]

    def _shipment_id(self) -> str:
        from services.delivery.repository import insert_shipment

        shipment_id = uuid.uuid4()
        conn = psycopg2.connect(self.database_url)
        try:
            with conn, conn.cursor() as cur:
                cur.execute("SET LOCAL search_path TO delivery_svc")
                assert insert_shipment(cur, shipment_id, uuid.uuid4(), "fuzz-customer", "acme",
                                       f"TRK-{shipment_id.hex[:12]}", ADDRESS)
        finally:
            conn.close()
        return str(shipment_id)

    def _subscription_id(self) -> str:
        key = ("notification", "POST", "/v1/webhooks")
        response = self.client.post("/v1/webhooks", json=self.body(key, BODIES[key]), headers=_admin())
        assert response.status_code == 201, response.get_data(as_text=True)
        return response.json["id"]


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


@pytest.mark.parametrize("service", SERVICES)
def test_hostile_strings_in_every_field_and_parameter(request, service, catalog):
    app = request.getfixturevalue(f"{service}_app")
    client = app.test_client()
    database_url = catalog
    resources = Resources(service, app, database_url)
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
                    url, headers = resources.url(path), resources.headers(path)
                    before = _rows(database_url)
                    held = _cells_holding(database_url, SCHEMAS[service], value)
                    response = client.open(url, method=method, headers=headers,
                                           json=resources.body((service, method, path), base,
                                                               field, value))
                    label = f"{method} {path} {'.'.join(map(str, field))}={value[:20]!r}"
                    if response.status_code < 300:
                        stored = (service, method, path, field) not in NOT_STORED
                        if stored and _cells_holding(database_url, SCHEMAS[service], value) <= held:
                            problems.append(f"{label}: accepted ({response.status_code}) but the"
                                            " text was not stored as given")
                    elif response.status_code not in REFUSED:
                        problems.append(f"{label}: {response.status_code}, never reached the field")
                    elif _rows(database_url) != before:
                        problems.append(f"{label}: refused with {response.status_code} but wrote rows")
        for parameter in operation.get("parameters", []):
            if parameter.get("in") != "query":
                continue
            for value in HOSTILE:
                url, headers = resources.url(path), resources.headers(path)
                before = _rows(database_url)
                response = client.open(url, method=method, headers=headers,
                                       query_string={parameter["name"]: value},
                                       json=resources.body((service, method, path),
                                                           BODIES[(service, method, path)])
                                       if json_body else None)
                label = f"{method} {path}?{parameter['name']}={value[:20]!r}"
                if response.status_code >= 300 and response.status_code not in REFUSED:
                    problems.append(f"{label}: {response.status_code}, never reached the parameter")
                elif method == "GET" and _rows(database_url) != before:
                    problems.append(f"{label}: a GET wrote rows")
        if "{sku}" in path:  # the one free-text path segment: looked up as given, so 404 or refused
            for value in HOSTILE[:5]:
                url = resources.url(path.replace("{sku}", quote(value, safe="")))
                before = _rows(database_url)
                response = client.open(url, method=method, headers=_admin(),
                                       json=BODIES.get((service, method, path)) if json_body else None)
                if response.status_code >= 500:
                    problems.append(f"{method} {path} sku={value[:20]!r}: {response.status_code}")
                elif response.status_code >= 400 and _rows(database_url) != before:
                    problems.append(f"{method} {path} sku={value[:20]!r}: refused but wrote rows")
    assert not problems, "\n".join(problems)


def test_an_oversized_body_is_413_and_writes_nothing(order_client, catalog):
    before = _rows(catalog)
    response = order_client.post("/v1/orders", headers=_admin(), data="x" * (70 * 1024),
                                 content_type="application/json")
    assert response.status_code == 413
    assert _rows(catalog) == before


@pytest.mark.parametrize("path, form", [
    ("/oauth/token", {"grant_type": "client_credentials", "client_id": "a\x00b", "client_secret": "s"}),
    ("/oauth/revoke", {"token": "t", "client_id": "\x00", "client_secret": "s"}),
])
def test_a_nul_in_a_form_client_id_is_an_unknown_client(auth_client, path, form):
    """Form bodies are not parsed by the JSON parser that refuses NULs: the lookup must (found by
    schemathesis: a 500 from PostgreSQL's refusal of NUL in text)."""
    response = auth_client.post(path, data=form)
    # RFC 6749 5.2: 401 only when the client authenticated with a header; from the body, 400.
    assert response.status_code == 400 and response.json["error"] == "invalid_client"


def test_a_nul_in_a_password_grant_username_is_an_invalid_grant(auth_app, auth_client):
    from tests.support.auth import make_client, token_request

    storefront = make_client(auth_app, "Storefront", ["orders:read"], ("password",), first_party=True)
    response = token_request(auth_client, storefront, grant_type="password", username="a\x00@example.com",
                             password="whatever-it-is")
    assert response.status_code == 400 and response.json["error"] == "invalid_grant"
