"""Security headers on every response of every service; CORS only for configured origins."""

from __future__ import annotations

import pytest

from shared.config import ConfigError, load_settings
from shared.web import SECURITY_HEADERS

SERVICES = ("order", "delivery", "inventory", "notification", "auth", "payment")
ORIGIN = "https://shop.example"


@pytest.mark.parametrize("service", SERVICES)
def test_every_response_carries_the_security_headers(request, service):
    client = request.getfixturevalue(f"{service}_app").test_client()
    responses = [client.get("/health/live"), client.get("/openapi.json"), client.get("/no-such-path"),
                 client.post("/health/live")]  # 200, 200, 404, 405: errors too
    for response in responses:
        for name, value in SECURITY_HEADERS.items():
            assert response.headers.get(name) == value, (service, response.status_code, name)
        assert response.headers["Strict-Transport-Security"].startswith("max-age=")
        assert response.headers["X-Request-ID"]
    docs = client.get("/docs")
    assert "script-src 'self'" in docs.headers["Content-Security-Policy"]  # no CDN (test_docs_page.py)
    assert "frame-ancestors 'none'" in docs.headers["Content-Security-Policy"]


def test_no_cors_unless_configured(order_client):
    response = order_client.get("/health/live", headers={"Origin": ORIGIN})
    assert "Access-Control-Allow-Origin" not in response.headers


@pytest.fixture
def cors_client(app_for):
    return app_for("order", CORS_ALLOWED_ORIGINS=f"{ORIGIN}, http://localhost:3000").test_client()


def test_cors_allows_configured_origins_only(cors_client):
    preflight = cors_client.options("/v1/orders", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "Authorization, Content-Type, Idempotency-Key"})
    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == ORIGIN
    allowed = preflight.headers["Access-Control-Allow-Headers"].lower()
    assert "authorization" in allowed and "idempotency-key" in allowed
    assert "Access-Control-Allow-Credentials" not in preflight.headers  # bearer tokens, no cookies
    actual = cors_client.get("/v1/orders", headers={"Origin": ORIGIN})
    assert actual.status_code == 401  # CORS is not authentication
    assert actual.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Retry-After" in actual.headers["Access-Control-Expose-Headers"]
    evil = cors_client.get("/v1/orders", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in evil.headers


@pytest.mark.parametrize("value, app_env", [("*", "production"), ("shop.example", "development"),
                                            ("https://shop.example/path", "development")])
def test_bad_cors_origins_are_refused_at_start(value, app_env):
    with pytest.raises(ConfigError) as info:
        load_settings("order", {"DATABASE_URL": "postgresql://unused/db", "APP_ENV": app_env,
                                "CORS_ALLOWED_ORIGINS": value})
    assert info.value.variable == "CORS_ALLOWED_ORIGINS"
