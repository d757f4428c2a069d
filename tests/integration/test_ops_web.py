"""The ops service's web pages (services/ops/web.py): the pages and their assets with a
strict CSP, the browser config, and sign-in through the real auth service (demo clients as
`make run` makes them) without a client secret or refresh token reaching the page.
"""

from __future__ import annotations

import json
import os

import pytest

from services.auth.demo import DEMO_CUSTOMER, DEMO_OPERATOR, OPS_CONSOLE, STOREFRONT, ensure_demo
from tests.support.asserts import assert_problem
from tests.support.servers import AppServer


@pytest.fixture
def auth(app_for, service_env, tmp_path):
    """The auth API over HTTP with the demo identities; yields (url, saved credentials)."""
    server = AppServer(app_for("auth"), "auth")
    path = tmp_path / "demo-credentials.json"
    ensure_demo(service_env["DATABASE_URL"], path, server.url, env={**os.environ, **service_env})
    yield server.url, json.loads(path.read_text())
    server.stop()


@pytest.fixture
def web(app_for, auth):
    url, saved = auth
    app = app_for("ops", AUTH_URL=url, OPS_WEB_CONSOLE_CLIENT_SECRET=saved["clients"][OPS_CONSOLE],
                  OPS_WEB_TRACKING_CLIENT_SECRET=saved["clients"][STOREFRONT],
                  OPS_WEB_NOTIFICATION_URL="http://127.0.0.1:18004")
    return app.test_client(), saved


@pytest.mark.parametrize("path, marker", [("/console", "Operations console"),
                                          ("/track", "Track your orders")])
def test_pages_are_served_with_a_strict_csp(ops_client, path, marker):
    response = ops_client.get(path)
    assert response.status_code == 200 and response.mimetype == "text/html"
    assert marker in response.get_data(as_text=True)
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp
    assert "unsafe-inline" not in csp and "http" not in csp.split("connect-src")[0]
    assert response.headers["X-Frame-Options"] == "DENY"


def test_assets_are_served_and_traversal_is_refused(ops_client):
    script = ops_client.get("/web/static/js/live.js")
    assert script.status_code == 200 and "javascript" in script.mimetype
    assert "EventSource" in script.get_data(as_text=True)
    assert ops_client.get("/web/static/app.css").mimetype == "text/css"
    assert ops_client.get("/web/static/../web.py").status_code == 404
    assert ops_client.get("/web/static/nothing.js").status_code == 404


def test_config_names_the_apis_and_the_stream_events(web):
    client, _saved = web
    config = client.get("/web/config").get_json()
    assert config["api"]["notification"] == "http://127.0.0.1:18004"
    assert config["api"]["order"].startswith("http://")
    assert "order.status_changed" in config["stream_event_types"]
    # The browser may call exactly those APIs.
    assert "http://127.0.0.1:18004" in client.get("/track").headers["Content-Security-Policy"]


def test_sign_in_answers_an_access_token_only(web, auth_db):
    client, saved = web
    response = client.post("/web/session", json={
        "app": "tracking", "username": DEMO_CUSTOMER, "password": saved["users"][DEMO_CUSTOMER]})
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
    assert "orders:read" in body["scope"].split() and "admin" not in body["scope"].split()
    text = response.get_data(as_text=True)
    assert saved["clients"][STOREFRONT] not in text
    # The grant's refresh token stays with the ops service (never in the answer) and is not
    # revoked: revoking it would deny the page's access token too (the deny-list).
    with auth_db.transaction() as cur:
        cur.execute("SELECT count(*) FILTER (WHERE revoked_at IS NULL) AS live, count(*) AS n"
                    " FROM refresh_tokens WHERE client_id = %s", (STOREFRONT,))
        counts = cur.fetchone()
    assert counts["n"] == 1 and counts["live"] == 1


def test_the_console_client_gives_an_operator_admin(web):
    client, saved = web
    body = client.post("/web/session", json={
        "app": "console", "username": DEMO_OPERATOR,
        "password": saved["users"][DEMO_OPERATOR]}).get_json()
    assert "admin" in body["scope"].split()
    assert body["access_token"].count(".") == 2  # a JWT (verified by every API against the JWKS)


def test_wrong_password_is_one_refusal(web):
    client, _saved = web
    response = client.post("/web/session", json={"app": "tracking", "username": DEMO_CUSTOMER,
                                                  "password": "not-the-password"})
    assert_problem(response, 401, "sign-in-failed")
    assert "not-the-password" not in response.get_data(as_text=True)


@pytest.mark.parametrize("payload, field", [
    ({"username": "a", "password": "b"}, "app"),
    ({"app": "admin", "username": "a", "password": "b"}, "app"),
    ({"app": "tracking", "password": "b"}, "username"),
    ({"app": "tracking", "username": "a", "password": ""}, "password"),
    ({"app": "tracking", "username": "a", "password": "b", "scope": "admin"}, "scope"),
    ({"app": "tracking", "username": "a" * 300, "password": "b"}, "username"),
])
def test_bad_sign_in_input_is_a_validation_problem(web, payload, field):
    client, _saved = web
    assert_problem(client.post("/web/session", json=payload), 422, "validation-error", (field,))


def test_sign_in_needs_json(web):
    client, _saved = web
    response = client.post("/web/session", data="app=tracking",
                           content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415 and response.mimetype == "application/problem+json"
    not_json = client.post("/web/session", data="{", content_type="application/json")
    assert not_json.status_code == 400 and not_json.mimetype == "application/problem+json"


def test_sign_in_without_a_configured_client_is_503(ops_client):
    response = ops_client.post("/web/session", json={"app": "console", "username": "a",
                                                     "password": "b"})
    assert_problem(response, 503, "sign-in-unavailable")


def test_sign_in_attempts_are_rate_limited(app_for):
    client = app_for("ops", OPS_WEB_SIGN_IN_RATE_LIMIT="2/minute").test_client()
    attempt = {"app": "tracking", "username": "a", "password": "b"}
    assert [client.post("/web/session", json=attempt).status_code for _ in range(2)] == [503, 503]
    refused = client.post("/web/session", json=attempt)
    assert_problem(refused, 429, "too-many-requests")
    assert int(refused.headers["Retry-After"]) > 0
