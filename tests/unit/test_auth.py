"""Bearer-token verification and scope checks (no I/O)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from flask import Flask, jsonify

from devstack.tokens import DevSigner, mint_dev_token
from shared.auth import (
    CLOCK_SKEW_S,
    InvalidToken,
    Principal,
    TokenSettings,
    authenticate,
    require_any_scope,
    require_scopes,
    verify_bearer_token,
)
from shared.errors import register_problem_handlers
from tests.support.tokens import StaticKeys

SIGNER = DevSigner("issuer-a", "audience-a", kid="unit-key")
SETTINGS = TokenSettings("issuer-a", "audience-a", StaticKeys(SIGNER.jwks()))
SUBJECT = "customer-7"
SCOPES = ("orders:read", "orders:write")
MAX_SUBJECT_CHARS = 128


def claims(**changes) -> dict:
    now = int(time.time())
    values = {"sub": SUBJECT, "scope": " ".join(SCOPES), "iss": SETTINGS.issuer,
              "aud": SETTINGS.audience, "iat": now, "nbf": now, "exp": now + 600, "jti": "t-1",
              "client_id": "client-a"}
    values.update(changes)
    return {k: v for k, v in values.items() if v is not None}


def sign(payload: dict, signer: DevSigner = SIGNER, algorithm: str = "RS256",
         secret: str | None = None) -> str:
    if algorithm.startswith("HS"):  # an HMAC token naming our key: must never be accepted
        # By hand: PyJWT itself refuses to HMAC with a PEM key, which is the attack we test.
        digest = {"HS256": hashlib.sha256, "HS512": hashlib.sha512}[algorithm]
        signing_input = f"{segment({'alg': algorithm, 'kid': SIGNER.kid})}.{segment(payload)}"
        mac = hmac.new((secret or "s" * 48).encode(), signing_input.encode(), digest).digest()
        return f"{signing_input}.{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"
    return jwt.encode(payload, signer.private_key, algorithm=algorithm, headers={"kid": signer.kid})


def segment(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


# --- verification --------------------------------------------------------------------------------
def test_a_minted_token_verifies_to_its_principal():
    principal = verify_bearer_token(mint_dev_token(SIGNER, SUBJECT, SCOPES, ttl_s=60), SETTINGS)
    assert principal.subject == SUBJECT
    assert principal.scopes == frozenset(SCOPES)
    assert principal.token_id
    assert principal.expires_at == pytest.approx(time.time() + 60, abs=5)
    assert not principal.is_admin
    assert Principal("ops", frozenset({"admin"})).is_admin


def test_clock_skew_is_tolerated_but_no_more():
    now = int(time.time())
    just_expired = sign(claims(exp=now - CLOCK_SKEW_S // 2))
    assert verify_bearer_token(just_expired, SETTINGS).subject == SUBJECT
    with pytest.raises(InvalidToken, match="expired"):
        verify_bearer_token(sign(claims(exp=now - CLOCK_SKEW_S - 60)), SETTINGS)


def _public_pem() -> str:
    from cryptography.hazmat.primitives import serialization

    return SIGNER.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def _tampered_signature() -> str:
    header, payload, signature = sign(claims()).split(".")
    middle = len(signature) // 2
    flipped = "A" if signature[middle] != "A" else "B"
    return f"{header}.{payload}.{signature[:middle]}{flipped}{signature[middle + 1:]}"


def _escalated_payload() -> str:
    header, _payload, signature = sign(claims()).split(".")
    return f"{header}.{segment(claims(scope='admin orders:read'))}.{signature}"


REJECTED = {
    "expired": lambda: mint_dev_token(SIGNER, SUBJECT, SCOPES, ttl_s=-3600),
    "wrong-audience": lambda: sign(claims(aud="audience-b")),
    "wrong-issuer": lambda: sign(claims(iss="issuer-b")),
    "other-key-same-kid": lambda: sign(claims(), signer=DevSigner("issuer-a", "audience-a", kid="unit-key")),
    "unknown-kid": lambda: sign(claims(), signer=DevSigner("issuer-a", "audience-a", kid="elsewhere")),
    "hs256-keyed-with-the-public-key": lambda: sign(claims(), algorithm="HS256", secret=_public_pem()),
    "missing-client-id": lambda: sign(claims(client_id=None)),
    "tampered-signature": _tampered_signature,
    "tampered-payload": _escalated_payload,
    "alg-none": lambda: jwt.encode(claims(), None, algorithm="none"),
    "alg-none-unsigned-header": lambda: f"{segment({'alg': 'none', 'typ': 'JWT'})}.{segment(claims())}.",
    "alg-hs512": lambda: sign(claims(), algorithm="HS512"),
    "not-yet-valid": lambda: sign(claims(nbf=int(time.time()) + 3600)),
    "missing-exp": lambda: sign(claims(exp=None)),
    "missing-sub": lambda: sign(claims(sub=None)),
    "missing-aud": lambda: sign(claims(aud=None)),
    "empty-sub": lambda: sign(claims(sub="")),
    "sub-too-long": lambda: sign(claims(sub="s" * (MAX_SUBJECT_CHARS + 1))),
    "scope-not-a-string": lambda: sign(claims(scope=["admin"])),
    "garbage": lambda: "not-a-jwt",
    "empty": lambda: "",
}


@pytest.mark.parametrize("make", list(REJECTED.values()), ids=list(REJECTED))
def test_invalid_tokens_are_rejected(make):
    with pytest.raises(InvalidToken):
        verify_bearer_token(make(), SETTINGS)


def test_a_token_without_scope_has_no_scopes():
    assert verify_bearer_token(sign(claims(scope=None)), SETTINGS).scopes == frozenset()


# --- decorators ----------------------------------------------------------------------------------
@pytest.fixture
def client():
    app = Flask("unit")
    app.extensions["token_settings"] = SETTINGS
    register_problem_handlers(app)

    @app.get("/write")
    @require_scopes("orders:write")
    def write():
        return jsonify(subject=authenticate().subject)

    @app.get("/both")
    @require_scopes("orders:read", "admin")
    def both():
        return jsonify(ok=True)

    @app.get("/any")
    @require_any_scope("orders:read", "admin")
    def any_():
        return jsonify(ok=True)

    return app.test_client()


def bearer(*scopes: str) -> dict:
    return {"Authorization": f"Bearer {mint_dev_token(SIGNER, SUBJECT, scopes)}"}


def test_missing_or_invalid_token_is_401_with_www_authenticate(client):
    # RFC 6750 3.1: no credentials (or another scheme) get the bare challenge; a bad token the error.
    for headers, error in (({}, ""), ({"Authorization": "Basic abc"}, ""),
                           ({"Authorization": "Bearer "}, ', error="invalid_token"'),
                           ({"Authorization": "Bearer " + _tampered_signature()},
                            ', error="invalid_token"')):
        response = client.get("/write", headers=headers)
        assert response.status_code == 401
        assert response.mimetype == "application/problem+json"
        assert response.get_json()["type"] == "/problems/unauthorized"
        assert response.headers["WWW-Authenticate"] == f'Bearer realm="{SETTINGS.audience}"{error}'


def test_scheme_is_case_insensitive(client):
    token = mint_dev_token(SIGNER, SUBJECT, ["orders:write"])
    response = client.get("/write", headers={"Authorization": f"bearer {token}"})
    assert response.status_code == 200
    assert response.get_json() == {"subject": SUBJECT}


def test_missing_scope_is_403_naming_it(client):
    response = client.get("/write", headers=bearer("orders:read"))
    assert response.status_code == 403
    assert response.get_json()["type"] == "/problems/insufficient-scope"
    assert "orders:write" in response.get_json()["detail"]
    assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]


def test_require_scopes_needs_all_and_require_any_scope_needs_one(client):
    assert client.get("/both", headers=bearer("orders:read")).status_code == 403
    assert client.get("/both", headers=bearer("orders:read", "admin")).status_code == 200
    assert client.get("/any", headers=bearer("admin")).status_code == 200
    assert client.get("/any", headers=bearer("orders:read")).status_code == 200
    refused = client.get("/any", headers=bearer("orders:write"))
    assert refused.status_code == 403
    assert 'error="insufficient_scope"' in refused.headers["WWW-Authenticate"]


def test_unknown_scopes_are_a_programming_error():
    with pytest.raises(ValueError, match="unknown scope"):
        require_scopes("orders:delete")
    with pytest.raises(ValueError, match="unknown scope"):
        require_any_scope("root")


# --- where the keys come from --------------------------------------------------------------------
def test_production_needs_to_know_where_the_auth_service_is():
    from shared.auth import token_settings_from
    from shared.config import ConfigError, load_settings

    env = {"DATABASE_URL": "postgresql://x@localhost/db", "APP_ENV": "production",
           "AUTH_REVOCATION_FEED_KEY": "k" * 40}
    with pytest.raises(ConfigError) as info:
        token_settings_from(load_settings("order", env))
    assert info.value.variable == "AUTH_URL"
    settings = token_settings_from(load_settings("order", {**env, "AUTH_URL": "https://auth.internal/"}))
    assert settings.keys.url == "https://auth.internal/.well-known/jwks.json"
    with pytest.raises(ConfigError):
        token_settings_from(load_settings("order", {**env, "AUTH_JWKS_URL": "ftp://keys"}))
    # Outside production the local auth port is the default.
    local = token_settings_from(load_settings("order", {"DATABASE_URL": env["DATABASE_URL"]}))
    assert local.keys.url == "http://127.0.0.1:8005/.well-known/jwks.json"


def test_production_needs_its_own_revocation_feed_key():
    from shared.auth import token_settings_from
    from shared.config import DEV_REVOCATION_FEED_KEY, ConfigError, load_settings

    env = {"DATABASE_URL": "postgresql://x@localhost/db", "APP_ENV": "production",
           "AUTH_URL": "https://auth.internal"}
    for key in (None, DEV_REVOCATION_FEED_KEY):
        with pytest.raises(ConfigError) as info:
            token_settings_from(load_settings("order", env if key is None
                                              else {**env, "AUTH_REVOCATION_FEED_KEY": key}))
        assert info.value.variable == "AUTH_REVOCATION_FEED_KEY"
    settings = load_settings("order", {**env, "AUTH_REVOCATION_FEED_KEY": "k" * 40})
    assert "k" * 40 not in repr(settings)  # a secret: never in a repr or a log line
    assert token_settings_from(settings).revocations.settings.base_url == "https://auth.internal"
