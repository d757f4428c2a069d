"""Forged, stale and misdirected tokens are refused by a real service; real ones work.

Each case is a token a resource server must refuse (401), checked on the
order API's GET /v1/orders. The last group drives the auth service: revoked
and reused refresh tokens, and a deleted client.
"""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from devstack.tokens import DevSigner
from tests.support.auth import make_client, make_user, password_login, token_request
from tests.support.tokens import AUDIENCE, ISSUER, TEST_SIGNER, JwksServer

SCOPES = ("orders:read", "orders:write")


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def _claims(**changes):
    claims = TEST_SIGNER.claims("customer-1", SCOPES, 600)
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _public_pem() -> bytes:
    return TEST_SIGNER.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _hs256_with_public_key() -> str:
    # The classic confusion attack: HMAC keyed with the RSA public key the JWKS publishes.
    import hashlib
    import hmac

    header = _b64({"alg": "HS256", "typ": "JWT", "kid": TEST_SIGNER.kid})
    payload = _b64(_claims())
    mac = hmac.new(_public_pem(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"


FORGED = {
    "alg-none": lambda: f"{_b64({'alg': 'none', 'kid': TEST_SIGNER.kid})}.{_b64(_claims())}.",
    "alg-none-uppercase": lambda: f"{_b64({'alg': 'NONE', 'kid': TEST_SIGNER.kid})}.{_b64(_claims())}.",
    "hs256-signed-with-the-public-key": _hs256_with_public_key,
    "wrong-key-same-kid": lambda: DevSigner(ISSUER, AUDIENCE, kid=TEST_SIGNER.kid).sign(_claims()),
    "unknown-kid": lambda: DevSigner(ISSUER, AUDIENCE, kid="not-published").sign(_claims()),
    "no-kid": lambda: jwt.encode(_claims(), TEST_SIGNER.private_key, algorithm="RS256"),
    "expired": lambda: TEST_SIGNER.sign(_claims(iat=int(time.time()) - 7200, nbf=None,
                                                exp=int(time.time()) - 3600)),
    "not-yet-valid": lambda: TEST_SIGNER.sign(_claims(nbf=int(time.time()) + 3600)),
    "issued-in-the-future": lambda: TEST_SIGNER.sign(_claims(iat=int(time.time()) + 3600, nbf=None,
                                                             exp=int(time.time()) + 7200)),
    "wrong-issuer": lambda: TEST_SIGNER.sign(_claims(iss="https://evil.example")),
    "wrong-audience": lambda: TEST_SIGNER.sign(_claims(aud="another-api")),
    "no-audience": lambda: TEST_SIGNER.sign(_claims(aud=None)),
    "no-expiry": lambda: TEST_SIGNER.sign(_claims(exp=None)),
    "no-client-id": lambda: TEST_SIGNER.sign(_claims(client_id=None)),
    "tampered-payload": lambda: ".".join([TEST_SIGNER.sign(_claims()).split(".")[0],
                                          _b64(_claims(scope="admin orders:read")),
                                          TEST_SIGNER.sign(_claims()).split(".")[2]]),
    "rs384-not-accepted": lambda: jwt.encode(_claims(), TEST_SIGNER.private_key, algorithm="RS384",
                                             headers={"kid": TEST_SIGNER.kid}),
    "garbage": lambda: "not.a.jwt",
}


@pytest.mark.parametrize("case", list(FORGED), ids=list(FORGED))
def test_forged_or_invalid_tokens_get_401(order_client, case):
    response = order_client.get("/v1/orders", headers={"Authorization": f"Bearer {FORGED[case]()}"})
    assert response.status_code == 401, response.get_data(as_text=True)
    assert response.headers["WWW-Authenticate"] == f'Bearer realm="{AUDIENCE}", error="invalid_token"'
    assert response.mimetype == "application/problem+json"


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Basic Y3VzdG9tZXI6cHc="}],
                         ids=["no-authorization-header", "another-scheme"])
def test_a_request_without_a_bearer_token_gets_the_bare_challenge(order_client, headers):
    # RFC 6750 3.1: a request without credentials gets the challenge, but no error code.
    response = order_client.get("/v1/orders", headers=headers)
    assert response.status_code == 401
    assert response.mimetype == "application/problem+json"
    assert response.headers["WWW-Authenticate"] == f'Bearer realm="{AUDIENCE}"'


def test_an_expired_token_keeps_the_invalid_token_error(order_client):
    response = order_client.get("/v1/orders", headers={"Authorization": f"Bearer {FORGED['expired']()}"})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == f'Bearer realm="{AUDIENCE}", error="invalid_token"'


def test_a_valid_token_passes_and_a_missing_scope_is_403(order_client):
    ok = order_client.get("/v1/orders", headers={"Authorization": f"Bearer {TEST_SIGNER.sign(_claims())}"})
    assert ok.status_code == 200
    no_scope = TEST_SIGNER.sign(_claims(scope="shipments:read"))
    response = order_client.get("/v1/orders", headers={"Authorization": f"Bearer {no_scope}"})
    assert response.status_code == 403
    assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]


# ---------------------------------------------- real tokens from the auth service


@pytest.fixture
def auth_jwks(auth_client):
    """The in-process auth service's JWKS served over HTTP, for the other services to fetch."""
    server = JwksServer(lambda: auth_client.get("/.well-known/jwks.json").json).start()
    yield server
    server.stop()


@pytest.fixture
def order_with_auth(app_for, auth_jwks):
    # Rotations below take effect at once (no activation delay), so no refresh back-off either.
    return app_for("order", AUTH_JWKS_URL=auth_jwks.url, AUTH_JWKS_MIN_REFRESH_S="0").test_client()


@pytest.fixture
def shop(auth_app):
    creds = make_client(auth_app, "Shop", SCOPES, ("password", "refresh_token"), first_party=True)
    make_user(auth_app, "ada@example.com")
    return creds


def test_auth_service_tokens_are_accepted_across_a_key_rotation(auth_app, auth_client, order_with_auth,
                                                               shop):
    first = password_login(auth_client, shop, "ada@example.com").json["access_token"]
    assert order_with_auth.get("/v1/orders", headers={"Authorization": f"Bearer {first}"}).status_code == 200
    keys = auth_app.extensions["signing_keys"]
    keys.rotate(activates_in_s=0)
    keys._loaded_at = 0  # noqa: SLF001 - this process's signing-key cache
    second = password_login(auth_client, shop, "ada@example.com").json["access_token"]
    assert jwt.get_unverified_header(second)["kid"] != jwt.get_unverified_header(first)["kid"]
    for token in (first, second):  # the old key is still published; the new one is fetched on sight
        response = order_with_auth.get("/v1/orders", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200, token


def test_the_test_signer_is_not_trusted_where_the_auth_service_is(order_with_auth):
    response = order_with_auth.get("/v1/orders",
                                   headers={"Authorization": f"Bearer {TEST_SIGNER.sign(_claims())}"})
    assert response.status_code == 401


def test_revoked_refresh_token_is_refused(auth_client, shop):
    tokens = password_login(auth_client, shop, "ada@example.com").json
    revoke = auth_client.post("/oauth/revoke", data={"token": tokens["refresh_token"]},
                              auth=(shop.client_id, shop.client_secret))
    assert revoke.status_code == 200
    again = token_request(auth_client, shop, grant_type="refresh_token",
                          refresh_token=tokens["refresh_token"])
    assert again.status_code == 400 and again.json["error"] == "invalid_grant"


def test_reused_refresh_token_revokes_the_family(auth_client, shop):
    first = password_login(auth_client, shop, "ada@example.com").json["refresh_token"]
    second = token_request(auth_client, shop, grant_type="refresh_token", refresh_token=first)
    assert second.status_code == 200
    assert token_request(auth_client, shop, grant_type="refresh_token",
                         refresh_token=first).status_code == 400
    newest = token_request(auth_client, shop, grant_type="refresh_token",
                           refresh_token=second.json["refresh_token"])
    assert newest.status_code == 400 and newest.json["error"] == "invalid_grant"


def test_a_deleted_client_gets_nothing_more(auth_app, auth_client, shop):
    from services.auth.handlers import delete_client

    refresh = password_login(auth_client, shop, "ada@example.com").json["refresh_token"]
    delete_client(auth_app.extensions["db"], shop.client_id)
    assert token_request(auth_client, shop, grant_type="refresh_token",
                         refresh_token=refresh).status_code == 401
    assert password_login(auth_client, shop, "ada@example.com").status_code == 401
    assert auth_client.post("/oauth/revoke", data={"token": refresh},
                            auth=(shop.client_id, shop.client_secret)).status_code == 401


def test_the_auth_service_challenges_like_every_resource_server(auth_client):
    # Its logout endpoint takes a bearer token too: RFC 6750 3.1 applies there as well.
    bare = auth_client.post("/oauth/logout")
    assert bare.status_code == 401
    assert bare.headers["WWW-Authenticate"] == f'Bearer realm="{AUDIENCE}"'
    forged = auth_client.post("/oauth/logout", headers={"Authorization": "Bearer x.y.z"})
    assert forged.status_code == 401
    assert forged.headers["WWW-Authenticate"] == f'Bearer realm="{AUDIENCE}", error="invalid_token"'
