"""The docs page (Swagger UI) loads with nothing from another origin, and can log in.

Its script and styles come from the installed flask-swagger-ui package, served
by the service itself; the only other origin it may reach is the auth
service's token endpoint, which its OAuth2 scheme points at.
"""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from shared.openapi import ASSETS_PACKAGE, assets_dir

SERVICES = ("order", "delivery", "inventory", "notification", "auth")
AUTH_ORIGIN = "http://auth.example:8005"
DOCS_ORIGIN = "http://127.0.0.1:8001"


class _References(HTMLParser):
    """Every URL the page makes the browser load (src and href attributes)."""

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.urls.extend(value for name, value in attrs if name in ("src", "href") and value)


def _references(html: str) -> list[str]:
    parser = _References()
    parser.feed(html)
    return parser.urls


@pytest.mark.parametrize("service", SERVICES)
def test_the_docs_page_and_its_assets_load_from_the_service_itself(request, service):
    client = request.getfixturevalue(f"{service}_app").test_client()
    page = client.get("/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert "http://" not in html and "https://" not in html  # no CDN, no absolute URL at all
    assert '"validatorUrl": null' in html  # the validator badge would send the document away
    urls = _references(html)
    assert {url.rsplit("/", 1)[-1] for url in urls} == {
        "swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js"}
    for url in urls:
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert asset.mimetype in ("text/css", "text/javascript", "application/javascript"), url
        assert len(asset.data) > 10_000, url  # the real file, not an error page
        assert asset.headers["Cache-Control"].startswith("public")
        name = url.rsplit("/", 1)[-1]
        assert asset.data == (assets_dir() / name).read_bytes(), f"{name} is not {ASSETS_PACKAGE}'s"
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self' 'unsafe-inline'" in policy and "cdn" not in policy


@pytest.mark.parametrize("path", ["/docs/assets/../openapi.json", "/docs/assets/%2e%2e/__init__.py",
                                  "/docs/assets/no-such-file.js"])
def test_only_the_packaged_files_are_served(order_client, path):
    response = order_client.get(path)
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"


def test_the_oauth2_scheme_points_at_the_configured_token_endpoint(app_for):
    client = app_for("order", AUTH_URL=AUTH_ORIGIN).test_client()
    document = client.get("/openapi.json").json
    flows = document["components"]["securitySchemes"]["oauth2"]["flows"]
    assert set(flows) == {"clientCredentials", "password"}  # the grants the auth service issues
    assert {flow["tokenUrl"] for flow in flows.values()} == {f"{AUTH_ORIGIN}/oauth/token"}
    assert "orders:write" in flows["password"]["scopes"]
    # The page may send the token request there, and nowhere else off its own origin.
    policy = client.get("/docs").headers["Content-Security-Policy"]
    assert f"connect-src 'self' {AUTH_ORIGIN};" in policy
    create = document["paths"]["/v1/orders"]["post"]
    assert {"oauth2": ["orders:write"]} in create["security"]


def test_the_auth_service_lets_a_docs_page_ask_for_a_token(app_for):
    """The page's password / client-credentials login is a cross-origin POST to /oauth/token."""
    client = app_for("auth", CORS_ALLOWED_ORIGINS=DOCS_ORIGIN).test_client()
    preflight = client.options("/oauth/token", headers={
        "Origin": DOCS_ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "Authorization, Content-Type"})
    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == DOCS_ORIGIN
    assert "authorization" in preflight.headers["Access-Control-Allow-Headers"].lower()
    refused = client.post("/oauth/token", data={"grant_type": "client_credentials"},
                          headers={"Origin": DOCS_ORIGIN})
    assert refused.status_code == 401 and refused.headers["Access-Control-Allow-Origin"] == DOCS_ORIGIN


def test_the_token_url_can_be_the_one_browsers_reach(app_for):
    client = app_for("order", AUTH_URL="http://auth.internal:8005",
                     DOCS_TOKEN_URL="https://login.example/oauth/token").test_client()
    flows = client.get("/openapi.json").json["components"]["securitySchemes"]["oauth2"]["flows"]
    assert flows["password"]["tokenUrl"] == "https://login.example/oauth/token"
    policy = client.get("/docs").headers["Content-Security-Policy"]
    assert "connect-src 'self' https://login.example;" in policy


@pytest.mark.parametrize("value", ["login.example/oauth/token", "https://x.example; script-src *",
                                   "javascript:alert(1)"])
def test_a_token_url_that_is_not_a_url_is_refused_at_start(value):
    from shared.config import ConfigError, load_settings

    with pytest.raises(ConfigError, match="DOCS_TOKEN_URL"):
        load_settings("order", {"DATABASE_URL": "postgresql://unused/db", "DOCS_TOKEN_URL": value})
