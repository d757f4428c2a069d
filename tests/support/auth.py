"""Helpers for auth-service tests: register clients and accounts, ask for tokens, read them."""

from __future__ import annotations

import jwt

from services.auth import handlers

PASSWORD = "correct horse battery staple"


def make_client(app, name: str, scopes, grants=("client_credentials",), first_party: bool = False,
                client_id: str | None = None) -> handlers.ClientCredentials:
    """Register a client through the service's own command."""
    return handlers.create_client(app.extensions["db"], name, list(scopes), list(grants), first_party,
                                  client_id)


def make_user(app, username: str, role: str = "customer", password: str = PASSWORD, scopes=None):
    """Create an account; returns its id (the tokens' ``sub``)."""
    ext = app.extensions
    return handlers.create_user(ext["db"], ext["passwords"], ext["auth_config"], username, password,
                                role, scopes)


def token_request(client, creds, **form):
    """POST /oauth/token with HTTP Basic client authentication."""
    return client.post("/oauth/token", data=form, auth=(creds.client_id, creds.client_secret))


def client_token(client, creds, scope: str | None = None) -> str:
    form = {"grant_type": "client_credentials"}
    if scope:
        form["scope"] = scope
    response = token_request(client, creds, **form)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.json["access_token"]


def password_login(client, creds, username: str, password: str = PASSWORD, scope=None):
    form = {"grant_type": "password", "username": username, "password": password}
    if scope:
        form["scope"] = scope
    return token_request(client, creds, **form)


def decode(client, token: str, audience: str = "order-platform", issuer: str = "order-platform-dev"):
    """Verify ``token`` against the service's JWKS exactly as a resource server would."""
    keys = {k["kid"]: k for k in client.get("/.well-known/jwks.json").json["keys"]}
    kid = jwt.get_unverified_header(token)["kid"]
    return jwt.decode(token, jwt.PyJWK(keys[kid]).key, algorithms=["RS256"], audience=audience,
                      issuer=issuer)
