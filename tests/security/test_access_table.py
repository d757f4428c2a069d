"""Who may call what: ONE table of every endpoint of every service.

Each endpoint found in an app's ``url_map`` must have a rule here (a new
endpoint without one fails :func:`test_the_table_covers_every_endpoint`). Per
rule the suite asserts the status for:

* no token at all (401 unless the endpoint is public),
* another customer's token on a customer's own resource (404, so ids cannot be
  probed; for a list, 200 without the other customer's items),
* a non-admin token holding every customer scope on an admin/service endpoint (403),
* on a carrier's resource (``carrier`` rule), a token of another carrier (404, so
  shipment ids cannot be probed; for a list, 200 without the other carrier's items), a
  carrier client bound to no carrier (the same), and the owning carrier (200).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

import pytest

from services.delivery import repository as delivery_repo
from services.notification import repository as notification_repo
from services.notification import webhook_repository as webhook_repo
from tests.support.tokens import TEST_SIGNER

A, B = "customer-a", "customer-b"
# World's shipment is carried by OWN_CARRIER; OTHER_CARRIER is a competitor.
OWN_CARRIER, OTHER_CARRIER = "DHL", "UPS"
CARRIER_SCOPES = ("shipments:read", "shipments:write")
# Everything a customer or a customer's integration can hold; never admin or service scopes.
CUSTOMER_SCOPES = ("orders:read", "orders:write", "webhooks:manage")
ADDRESS = {"name": "Ada Lovelace", "line1": "1 Main St", "city": "Berlin", "postal_code": "10115",
           "country": "DE"}


@dataclass(frozen=True)
class Rule:
    """What each kind of caller gets from one endpoint."""

    anonymous: tuple[int, ...] = (401,)
    # "own": a customer's own resource (another customer gets 404);
    # "list": a listing (another customer sees none of the first one's items);
    # "admin": admin or service-to-service only (a customer token gets 403).
    kind: str | None = None
    body: dict | None = None        # a valid body, so a refusal cannot be a 422 in disguise
    list_key: str | None = None     # the world's id that must not show up in another's list
    # "own" or "list" as for ``kind``, for carrier clients: another carrier's token gets 404
    # (or a list without the item) and the owning carrier's token gets 200.
    carrier: str | None = None
    carrier_body: dict | None = None  # a body the owning carrier may send (a 200, not a 409)


PUBLIC = Rule(anonymous=(200,))
# /health/ready may be 503 when a dependency (e.g. SQS for a plain test app) is not there;
# what matters is that it needs no token and never leaks a 401/403 distinction.
READY = Rule(anonymous=(200, 503))
SUBSCRIPTION = {"name": "hook", "topic": "order.created", "delivery_url": "http://127.0.0.1:9/hook"}
PRODUCT = {"sku": "NEW-1", "name": "New", "price": "1.00", "currency": "EUR", "on_hand": 1}

COMMON = {
    ("GET", "/openapi.json"): PUBLIC,
    ("GET", "/docs"): PUBLIC,
    ("GET", "/docs/assets/<path:filename>"): PUBLIC,  # Swagger UI's files (shared/openapi.py)
    ("GET", "/metrics"): PUBLIC,
    ("GET", "/health/live"): PUBLIC,
    ("GET", "/health/ready"): READY,
}
# shared.admin: every message-handling service's own admin view (admin scope only).
ADMIN = {
    ("GET", "/v1/admin/outbox"): Rule(kind="admin"),
    ("POST", "/v1/admin/outbox/retry"): Rule(kind="admin", body={"all_failed": True}),
    ("GET", "/v1/admin/consumers"): Rule(kind="admin"),
    ("GET", "/v1/admin/groups/blocked"): Rule(kind="admin"),
    ("GET", "/v1/admin/breakers"): Rule(kind="admin"),
}

TABLE: dict[str, dict[tuple[str, str], Rule]] = {
    "order": {
        **COMMON,
        **ADMIN,
        ("POST", "/v1/orders"): Rule(),
        ("GET", "/v1/orders"): Rule(kind="list", list_key="order_id"),
        ("GET", "/v1/orders/<uuid:order_id>"): Rule(kind="own"),
        ("POST", "/v1/orders/<uuid:order_id>/cancel"): Rule(kind="own", body={"reason": "not mine"}),
        ("GET", "/v1/reports/orders/totals"): Rule(kind="admin"),
        ("GET", "/v1/reports/sales"): Rule(kind="admin"),
        ("GET", "/v1/customers/<string(maxlength=128):customer_id>/stats"): Rule(kind="own"),
        ("GET", "/v1/orders/stuck"): Rule(kind="admin"),
    },
    "delivery": {
        **COMMON,
        **ADMIN,
        ("GET", "/v1/shipments"): Rule(kind="list", list_key="shipment_id", carrier="list"),
        ("GET", "/v1/shipments/<uuid:shipment_id>"): Rule(kind="own", carrier="own"),
        ("POST", "/v1/shipments/<uuid:shipment_id>/events"): Rule(
            kind="admin", body={"status": "SHIPPED"}, carrier="own",
            carrier_body={"status": "SHIPPED"}),
        # The order service's own call before it cancels a paid order (shipments:cancel): a
        # customer's or a carrier's token gets 403.
        ("PUT", "/v1/shipment-cancellations/<uuid:order_id>"): Rule(
            kind="admin", body={"reason": "not mine"}),
    },
    "inventory": {
        **COMMON,
        **ADMIN,
        ("GET", "/v1/products"): Rule(),
        ("POST", "/v1/products"): Rule(kind="admin", body=PRODUCT),
        ("GET", "/v1/products/<string:sku>"): Rule(),
        ("PUT", "/v1/products/<string:sku>"): Rule(kind="admin", body=PRODUCT),
        ("DELETE", "/v1/products/<string:sku>"): Rule(kind="admin"),
        ("POST", "/v1/products/<string:sku>/stock-adjustments"): Rule(
            kind="admin", body={"delta": 1, "reason": "correction"}),
        ("POST", "/v1/availability"): Rule(),
        ("GET", "/v1/reservations/<uuid:order_id>"): Rule(kind="admin"),
        ("PUT", "/v1/reservations/<uuid:order_id>"): Rule(
            kind="admin", body={"lines": [{"sku": "SKU-1", "quantity": 1}]}),
        ("DELETE", "/v1/reservations/<uuid:order_id>"): Rule(kind="admin"),
    },
    "payment": {
        **COMMON,
        **ADMIN,
        # Checkout's own call (the order service's token, payments:create).
        ("PUT", "/v1/payments/<uuid:order_id>"): Rule(kind="admin", body={
            "customer_id": A, "currency": "EUR",
            "lines": [{"sku": "SKU-1", "quantity": 1, "unit_price": "9.99"}]}),
        ("GET", "/v1/payments/<uuid:order_id>"): Rule(kind="own"),
        ("POST", "/v1/payments/<uuid:order_id>/confirm"): Rule(
            kind="own", body={"payment_method": "pm_card_visa"}),
        ("POST", "/v1/payments/<uuid:order_id>/refunds"): Rule(kind="admin", body={"full": True}),
        # Stripe's: no token, the signature is the credential (no signature: 400, changes nothing).
        ("POST", "/v1/payments/stripe-events"): Rule(anonymous=(400,)),
    },
    "notification": {
        **COMMON,
        **ADMIN,
        ("GET", "/v1/notifications/stream"): Rule(),
        ("POST", "/v1/notifications/stream/tickets"): Rule(),
        ("GET", "/v1/notifications"): Rule(kind="list", list_key="order_id"),
        ("GET", "/v1/webhooks"): Rule(kind="list", list_key="sub_id"),
        ("POST", "/v1/webhooks"): Rule(),
        ("GET", "/v1/webhooks/<uuid:sub_id>"): Rule(kind="own"),
        ("PUT", "/v1/webhooks/<uuid:sub_id>"): Rule(kind="own", body=SUBSCRIPTION),
        ("DELETE", "/v1/webhooks/<uuid:sub_id>"): Rule(kind="own"),
        ("POST", "/v1/webhooks/<uuid:sub_id>/ping"): Rule(kind="own"),
        ("GET", "/v1/webhooks/<uuid:sub_id>/deliveries"): Rule(kind="own"),
        ("POST", "/v1/webhooks/<uuid:sub_id>/deliveries/<uuid:delivery_id>/redeliver"): Rule(kind="own"),
    },
    "auth": {
        **COMMON,
        # OAuth2 endpoints authenticate the client, not a bearer: no credentials is invalid_client.
        ("POST", "/oauth/token"): Rule(anonymous=(400, 401)),
        ("POST", "/oauth/revoke"): Rule(anonymous=(401,)),
        ("POST", "/oauth/logout"): Rule(),
        # Services only, with the shared feed key; no bearer token of any holder opens it
        # (tests/integration/test_access_token_revocation.py).
        ("GET", "/v1/revocations"): Rule(),
        ("GET", "/.well-known/jwks.json"): PUBLIC,
        ("GET", "/.well-known/oauth-authorization-server"): PUBLIC,
        ("POST", "/v1/customers"): Rule(anonymous=(401,)),
    },
}
TABLE["ops"] = {
    **COMMON,
    **{("GET", f"/v1/ops/{path}"): Rule(kind="admin")
       for path in ("status", "queues", "dlq/<string:queue_name>", "outbox", "groups/blocked",
                    "consumers", "breakers", "audit")},
    ("POST", "/v1/ops/dlq/<string:queue_name>/replay"): Rule(kind="admin", body={"all": True}),
    ("POST", "/v1/ops/dlq/<string:queue_name>/purge"): Rule(
        kind="admin", body={"confirm": "order-created-dlq.fifo"}),
    ("POST", "/v1/ops/outbox/<string:service_name>/retry"): Rule(
        kind="admin", body={"all_failed": True}),
    ("GET", "/v1/ops/orders"): Rule(kind="admin"),
    ("GET", "/v1/ops/orders/<uuid:order_id>"): Rule(kind="admin"),
    # The web pages and their assets are public; what they show comes from the APIs.
    **{("GET", path): PUBLIC for path in ("/console", "/track", "/web/config",
                                          "/web/static/<path:name>")},
    # Sign-in takes the user's name and password (no bearer): a wrong one is 401; with
    # no page client configured (as in this test app), 503.
    ("POST", "/web/session"): Rule(anonymous=(401, 503),
                                   body={"app": "console", "username": "x", "password": "y"}),
}
FORM_ENDPOINTS = {("auth", "POST", "/oauth/token"), ("auth", "POST", "/oauth/revoke")}
CASES = [(service, method, rule) for service, rules in TABLE.items() for (method, rule) in rules]


def _token(subject: str, scopes=CUSTOMER_SCOPES, carrier: str | None = None) -> dict:
    claims = TEST_SIGNER.claims(subject, scopes, 600)
    if carrier is not None:
        claims["carrier"] = carrier  # what the auth service adds for a carrier-bound client
    return {"Authorization": f"Bearer {TEST_SIGNER.sign(claims)}"}


def _discovered(app) -> set[tuple[str, str]]:
    return {(method, rule.rule) for rule in app.url_map.iter_rules()
            for method in rule.methods - {"HEAD", "OPTIONS"}}


@pytest.fixture
def apps(request):
    return {service: request.getfixturevalue(f"{service}_app") for service in TABLE}


@pytest.fixture
def world(apps, clean_db):
    """Customer A's resources in every service (B owns nothing)."""
    order = apps["order"].test_client().post("/v1/orders", headers=_token(A), json={
        "items": [{"sku": "SKU-1", "quantity": 1}], "customer_email": "a@example.com",
        "shipping_address": ADDRESS})
    assert order.status_code == 201, order.get_data(as_text=True)
    order_id = order.json["id"]
    shipment_id = uuid.uuid4()
    with apps["delivery"].extensions["db"].transaction() as cur:
        delivery_repo.insert_shipment(cur, shipment_id, uuid.UUID(order_id), A, OWN_CARRIER,
                                      "DHL123", ADDRESS)
    sub = apps["notification"].test_client().post("/v1/webhooks", headers=_token(A), json=SUBSCRIPTION)
    assert sub.status_code == 201, sub.get_data(as_text=True)
    sub_id = sub.json["id"]
    delivery_id = uuid.uuid4()
    with apps["notification"].extensions["db"].transaction() as cur:
        webhook_repo.insert_delivery(cur, delivery_id, uuid.UUID(sub_id), str(uuid.uuid4()),
                                     "order.created", json.dumps({"x": 1}), None, 5)
        notification_repo.insert_notification(cur, str(uuid.uuid4()), order_id, A, "order.created",
                                              {"order_id": order_id}, "2026-01-01T00:00:00Z")
    return {"order_id": order_id, "shipment_id": str(shipment_id), "sub_id": sub_id,
            "delivery_id": str(delivery_id), "sku": "SKU-1", "filename": "swagger-ui.css", "customer_id": A,
            "queue_name": "order-paid.fifo", "service_name": "order", "name": "app.css"}


def _path(rule: str, ids: dict) -> str:
    path = rule
    for converter in ("uuid", "string", "path", "string(maxlength=128)"):
        for name, value in ids.items():
            path = path.replace(f"<{converter}:{name}>", str(value))
    assert "<" not in path, f"no value for a placeholder in {rule}"
    return path


def _call(app, service, method, rule, ids, headers=None, body=None):
    client = app.test_client()
    kwargs = {"headers": headers or {}}
    if (service, method, rule) in FORM_ENDPOINTS:
        kwargs["data"] = {}
    elif body is not None:
        kwargs["json"] = body
    return client.open(_path(rule, ids), method=method, **kwargs)


@pytest.mark.parametrize("service", list(TABLE))
def test_the_table_covers_every_endpoint(apps, service):
    discovered = _discovered(apps[service])
    missing = discovered - set(TABLE[service])
    stale = set(TABLE[service]) - discovered
    assert not missing, f"endpoints of {service} without an access rule: {sorted(missing)}"
    assert not stale, f"rules for endpoints {service} no longer has: {sorted(stale)}"


def test_without_a_token(apps, world):
    wrong = []
    for service, method, rule in CASES:
        expected = TABLE[service][(method, rule)]
        if rule == "/v1/notifications/stream":
            continue  # checked below: a 200 would be a stream that never ends
        response = _call(apps[service], service, method, rule, world, body=expected.body)
        if response.status_code not in expected.anonymous:
            wrong.append(f"{service} {method} {rule}: {response.status_code}, "
                         f"expected {expected.anonymous}")
        elif response.status_code == 401 and service != "auth":
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
    stream = apps["notification"].test_client().get("/v1/notifications/stream")
    assert stream.status_code == 401
    assert not wrong, "\n".join(wrong)


def test_another_customers_resources_are_not_found(apps, world):
    wrong = []
    for service, method, rule in CASES:
        expected = TABLE[service][(method, rule)]
        if expected.kind == "own":
            response = _call(apps[service], service, method, rule, world, _token(B), expected.body)
            if response.status_code != 404:
                wrong.append(f"{service} {method} {rule}: {response.status_code}, expected 404")
        elif expected.kind == "list":
            response = _call(apps[service], service, method, rule, world, _token(B))
            body = response.get_data(as_text=True)
            if response.status_code != 200 or world[expected.list_key] in body:
                wrong.append(f"{service} {method} {rule}: {response.status_code}, "
                             f"another customer's item listed: {world[expected.list_key] in body}")
            own = _call(apps[service], service, method, rule, world, _token(A))
            assert world[expected.list_key] in own.get_data(as_text=True), (service, rule)
    assert not wrong, "\n".join(wrong)
    # Nothing of A's was changed by B's attempts.
    order = apps["order"].test_client().get(f"/v1/orders/{world['order_id']}", headers=_token(A))
    assert order.status_code == 200 and order.json["status"] != "CANCELLED"
    sub = apps["notification"].test_client().get(f"/v1/webhooks/{world['sub_id']}", headers=_token(A))
    assert sub.status_code == 200 and sub.json["name"] == SUBSCRIPTION["name"]


def test_admin_and_service_endpoints_refuse_customer_tokens(apps, world):
    wrong = []
    for service, method, rule in CASES:
        expected = TABLE[service][(method, rule)]
        if expected.kind != "admin":
            continue
        response = _call(apps[service], service, method, rule, world, _token(A), expected.body)
        if response.status_code != 403:
            wrong.append(f"{service} {method} {rule}: {response.status_code}, expected 403")
    assert not wrong, "\n".join(wrong)


def test_the_same_resources_are_reachable_by_their_owner_and_by_admin(apps, world):
    admin = _token("operator-1", ("admin", "orders:read", "webhooks:manage", "shipments:read"))
    for headers in (_token(A), admin):
        for service, rule in (("order", "/v1/orders/<uuid:order_id>"),
                              ("delivery", "/v1/shipments/<uuid:shipment_id>"),
                              ("notification", "/v1/webhooks/<uuid:sub_id>")):
            response = _call(apps[service], service, "GET", rule, world, headers)
            assert response.status_code == 200, (service, rule, response.status_code)


def test_carriers_reach_only_their_own_shipments(apps, world):
    """A carrier client is bound to its carrier: another carrier's shipment is not found (404,
    not 403: whether a shipment exists is not another carrier's business), a list holds only
    its own, an unbound carrier client reaches nothing, and nothing is changed by them."""
    delivery = apps["delivery"]
    other = _token("carrier-ups", CARRIER_SCOPES, carrier=OTHER_CARRIER)
    unbound = _token("carrier-legacy", CARRIER_SCOPES)
    wrong = []
    for service, method, rule in CASES:
        expected = TABLE[service][(method, rule)]
        if expected.carrier is None:
            continue
        for name, headers in (("other carrier", other), ("unbound carrier", unbound)):
            response = _call(delivery, service, method, rule, world, headers,
                             expected.carrier_body)
            body = response.get_data(as_text=True)
            if expected.carrier == "own" and response.status_code != 404:
                wrong.append(f"{name}: {method} {rule}: {response.status_code}, expected 404")
            elif expected.carrier == "list" and (response.status_code != 200
                                                 or world[expected.list_key] in body):
                wrong.append(f"{name}: {method} {rule}: {response.status_code}, another "
                             f"carrier's item listed: {world[expected.list_key] in body}")
    assert not wrong, "\n".join(wrong)
    mine = _token("carrier-dhl", CARRIER_SCOPES, carrier=OWN_CARRIER)
    shipment = delivery.test_client().get(f"/v1/shipments/{world['shipment_id']}",
                                          headers=mine)
    assert shipment.status_code == 200 and shipment.json["status"] == "CREATED"
    assert [e["status"] for e in shipment.json["events"]] == []


def test_the_owning_carrier_and_admin_reach_the_shipment(apps, world):
    delivery = apps["delivery"]
    mine = _token("carrier-dhl", CARRIER_SCOPES, carrier=OWN_CARRIER)
    listed = _call(delivery, "delivery", "GET", "/v1/shipments", world, mine)
    assert listed.status_code == 200 and world["shipment_id"] in listed.get_data(as_text=True)
    for service, method, rule in CASES:
        expected = TABLE[service][(method, rule)]
        if expected.carrier == "own":
            response = _call(delivery, service, method, rule, world, mine, expected.carrier_body)
            assert response.status_code == 200, (method, rule, response.get_data(as_text=True))
    operator = _token("operator-1", ("admin", "shipments:read", "shipments:write"))
    for headers in (operator, _token("operator-2", ("admin",))):
        listed = _call(delivery, "delivery", "GET", "/v1/shipments", world, headers)
        assert world["shipment_id"] in listed.get_data(as_text=True)
        one = _call(delivery, "delivery", "GET", "/v1/shipments/<uuid:shipment_id>", world,
                    headers)
        assert one.status_code == 200 and one.json["status"] == "SHIPPED"
    # An operator may correct any carrier's shipment.
    moved = delivery.test_client().post(f"/v1/shipments/{world['shipment_id']}/events",
                                        headers=operator, json={"status": "IN_TRANSIT"})
    assert moved.status_code == 200 and moved.json["status"] == "IN_TRANSIT"
