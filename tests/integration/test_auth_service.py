"""The auth service over HTTP (Flask test client) against real Postgres.

Grants, token contents, refresh rotation and reuse detection, revocation,
logout, registration, lock-out, rate limits, key rotation and the JWKS.
"""

from __future__ import annotations

import json
import time
import uuid

import jwt
import pytest

from services.auth.crypto import KeyCipher, digest_secret
from services.auth.handlers import delete_client
from tests.support.auth import (
    PASSWORD,
    client_token,
    decode,
    make_client,
    make_user,
    password_login,
    token_request,
)
from tests.support.wait import wait_until

CUSTOMER_SCOPES = ("orders:read", "orders:write")


@pytest.fixture
def storefront(auth_app):
    return make_client(auth_app, "Storefront", CUSTOMER_SCOPES, ("password", "refresh_token"),
                       first_party=True)


@pytest.fixture
def carrier(auth_app):
    return make_client(auth_app, "DHL", ("shipments:write", "shipments:read"))


@pytest.fixture
def customer(auth_app):
    return str(make_user(auth_app, "ada@example.com"))


def _rows(db, sql, params=()):
    with db.transaction() as cur:
        cur.execute(sql, params)
        return cur.fetchall()


# ------------------------------------------------------------ client credentials


def test_client_credentials_issue_an_rs256_jwt_with_every_required_claim(auth_client, carrier):
    response = token_request(auth_client, carrier, grant_type="client_credentials")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = response.json
    assert body["token_type"] == "Bearer" and body["expires_in"] == 900
    assert "refresh_token" not in body
    header = jwt.get_unverified_header(body["access_token"])
    assert header["alg"] == "RS256" and header["typ"] == "at+jwt" and header["kid"]
    claims = decode(auth_client, body["access_token"])
    assert claims["sub"] == claims["client_id"] == carrier.client_id
    assert set(claims["scope"].split()) == {"shipments:write", "shipments:read"}
    assert claims["exp"] - claims["iat"] == 900
    assert {"iss", "aud", "jti"} <= set(claims)
    second = decode(auth_client, client_token(auth_client, carrier))
    assert second["jti"] != claims["jti"]


def test_client_secret_post_works_too(auth_client, carrier):
    response = auth_client.post("/oauth/token", data={
        "grant_type": "client_credentials", "client_id": carrier.client_id,
        "client_secret": carrier.client_secret})
    assert response.status_code == 200


@pytest.mark.parametrize("who", ["wrong-secret", "unknown-client", "no-credentials"])
def test_bad_client_credentials_are_invalid_client(auth_client, carrier, who):
    auth = {"wrong-secret": (carrier.client_id, "nope"), "unknown-client": ("ghost-client", "x"),
            "no-credentials": None}[who]
    response = auth_client.post("/oauth/token", data={"grant_type": "client_credentials"}, auth=auth)
    assert response.status_code in (400, 401)
    assert response.json["error"] == "invalid_client"
    assert "access_token" not in response.json


def test_scope_is_what_was_asked_for_and_only_what_the_client_may_have(auth_client, carrier):
    token = client_token(auth_client, carrier, scope="shipments:write")
    assert decode(auth_client, token)["scope"] == "shipments:write"
    for scope in ("admin", "shipments:write admin", "no-such-scope"):
        response = token_request(auth_client, carrier, grant_type="client_credentials", scope=scope)
        assert response.status_code == 400, scope
        assert response.json["error"] == "invalid_scope"


def test_a_deleted_client_gets_no_tokens_and_its_refresh_tokens_die(auth_app, auth_client, storefront,
                                                                     customer):
    refresh = password_login(auth_client, storefront, "ada@example.com").json["refresh_token"]
    delete_client(auth_app.extensions["db"], storefront.client_id)
    response = token_request(auth_client, storefront, grant_type="refresh_token", refresh_token=refresh)
    assert response.status_code == 401 and response.json["error"] == "invalid_client"
    response = password_login(auth_client, storefront, "ada@example.com")
    assert response.status_code == 401


# ------------------------------------------------------------------ password grant


def test_password_grant_is_for_first_party_clients_only(auth_app, auth_client, customer):
    third_party = make_client(auth_app, "Partner", CUSTOMER_SCOPES, ("client_credentials",))
    response = password_login(auth_client, third_party, "ada@example.com")
    assert response.status_code == 400 and response.json["error"] == "unauthorized_client"
    with pytest.raises(Exception, match="first-party"):
        make_client(auth_app, "Sneaky", CUSTOMER_SCOPES, ("password",), first_party=False)


def test_password_login_issues_user_tokens_and_stores_only_a_hash(auth_client, auth_db, storefront,
                                                                  customer):
    response = password_login(auth_client, storefront, "ADA@example.com")  # names are case-insensitive
    assert response.status_code == 200, response.json
    body = response.json
    claims = decode(auth_client, body["access_token"])
    assert claims["sub"] == customer and claims["client_id"] == storefront.client_id
    assert claims["scope"] == "orders:read orders:write" and claims["sid"]
    rows = _rows(auth_db, "SELECT token_hash, family_id::text, scope FROM refresh_tokens")
    assert rows == [{"token_hash": digest_secret(body["refresh_token"]), "family_id": claims["sid"],
                     "scope": "orders:read orders:write"}]
    dump = json.dumps(_rows(auth_db, "SELECT * FROM refresh_tokens"), default=str)
    assert body["refresh_token"] not in dump


def test_a_customer_cannot_get_scopes_beyond_their_account(auth_app, auth_client, customer):
    ops_console = make_client(auth_app, "Ops console", ("admin", "orders:read"), ("password",),
                              first_party=True)
    response = password_login(auth_client, ops_console, "ada@example.com", scope="admin")
    assert response.status_code == 400 and response.json["error"] == "invalid_scope"
    narrowed = password_login(auth_client, ops_console, "ada@example.com")
    assert decode(auth_client, narrowed.json["access_token"])["scope"] == "orders:read"
    make_user(auth_app, "ops@example.com", role="operator")
    admin = password_login(auth_client, ops_console, "ops@example.com", scope="admin orders:read")
    assert decode(auth_client, admin.json["access_token"])["scope"] == "admin orders:read"


def test_wrong_password_and_unknown_user_look_the_same(auth_client, storefront, customer):
    wrong = password_login(auth_client, storefront, "ada@example.com", "not the password")
    unknown = password_login(auth_client, storefront, "nobody@example.com", "not the password")
    assert wrong.status_code == unknown.status_code == 400
    assert wrong.json == unknown.json == {"error": "invalid_grant",
                                          "error_description": "Invalid username or password."}


# ------------------------------------------------------------------ refresh tokens


def test_refresh_rotates_and_reuse_of_a_rotated_token_revokes_the_family(auth_client, auth_db,
                                                                         storefront, customer):
    first = password_login(auth_client, storefront, "ada@example.com").json
    second = token_request(auth_client, storefront, grant_type="refresh_token",
                           refresh_token=first["refresh_token"])
    assert second.status_code == 200
    second = second.json
    assert second["refresh_token"] != first["refresh_token"]
    assert decode(auth_client, second["access_token"])["sid"] == decode(auth_client,
                                                                        first["access_token"])["sid"]
    # An attacker (or a confused client) replays the rotated token...
    replay = token_request(auth_client, storefront, grant_type="refresh_token",
                           refresh_token=first["refresh_token"])
    assert replay.status_code == 400 and replay.json["error"] == "invalid_grant"
    # ...and the legitimate newest token of that family is dead too.
    latest = token_request(auth_client, storefront, grant_type="refresh_token",
                           refresh_token=second["refresh_token"])
    assert latest.status_code == 400 and latest.json["error"] == "invalid_grant"
    reasons = {r["revoked_reason"] for r in _rows(auth_db, "SELECT revoked_reason FROM refresh_tokens")}
    assert reasons == {"reuse_detected"}


def test_refresh_may_narrow_scope_but_not_widen_it(auth_client, storefront, customer):
    first = password_login(auth_client, storefront, "ada@example.com", scope="orders:read").json
    wider = token_request(auth_client, storefront, grant_type="refresh_token",
                          refresh_token=first["refresh_token"], scope="orders:read orders:write")
    assert wider.status_code == 400 and wider.json["error"] == "invalid_scope"
    # A refused request did not burn the token.
    same = token_request(auth_client, storefront, grant_type="refresh_token",
                         refresh_token=first["refresh_token"])
    assert same.status_code == 200 and same.json["scope"] == "orders:read"


def test_a_refresh_token_only_works_for_its_own_client(auth_app, auth_client, storefront, customer):
    other = make_client(auth_app, "Other shop", CUSTOMER_SCOPES, ("password", "refresh_token"),
                        first_party=True)
    refresh = password_login(auth_client, storefront, "ada@example.com").json["refresh_token"]
    response = token_request(auth_client, other, grant_type="refresh_token", refresh_token=refresh)
    assert response.status_code == 400 and response.json["error"] == "invalid_grant"
    assert token_request(auth_client, storefront, grant_type="refresh_token",
                         refresh_token=refresh).status_code == 200


def test_revocation_rfc7009(auth_app, auth_client, storefront, customer):
    tokens = password_login(auth_client, storefront, "ada@example.com").json
    other = make_client(auth_app, "Other shop", CUSTOMER_SCOPES, ("password", "refresh_token"),
                        first_party=True)
    foreign = auth_client.post("/oauth/revoke", data={"token": tokens["refresh_token"]},
                               auth=(other.client_id, other.client_secret))
    assert foreign.status_code == 400  # another client's token: refused, nothing revoked
    unknown = auth_client.post("/oauth/revoke", data={"token": "never-issued"},
                               auth=(storefront.client_id, storefront.client_secret))
    assert unknown.status_code == 200  # RFC 7009 2.2: unknown tokens are not an error
    foreign_access = auth_client.post("/oauth/revoke", data={"token": tokens["access_token"]},
                                      auth=(other.client_id, other.client_secret))
    assert foreign_access.status_code == 400  # another client's access token: refused too
    live = auth_client.post("/oauth/logout", headers={"Authorization": f"Bearer {tokens['access_token']}"},
                            json={"everywhere": False})
    assert live.status_code == 204  # (the foreign revocation revoked nothing)
    revoked = auth_client.post("/oauth/revoke", data={"token": tokens["refresh_token"],
                                                      "token_type_hint": "refresh_token"},
                               auth=(storefront.client_id, storefront.client_secret))
    assert revoked.status_code == 200
    after = token_request(auth_client, storefront, grant_type="refresh_token",
                          refresh_token=tokens["refresh_token"])
    assert after.status_code == 400 and after.json["error"] == "invalid_grant"
    assert auth_client.post("/oauth/revoke", data={"token": "x"}).status_code == 401


def test_logout_revokes_the_session_and_everywhere_revokes_all(auth_client, storefront, customer):
    laptop = password_login(auth_client, storefront, "ada@example.com").json
    phone = password_login(auth_client, storefront, "ada@example.com").json
    response = auth_client.post("/oauth/logout",
                                headers={"Authorization": f"Bearer {laptop['access_token']}"})
    assert response.status_code == 204

    def refresh(tokens):
        return token_request(auth_client, storefront, grant_type="refresh_token",
                             refresh_token=tokens["refresh_token"])

    assert refresh(laptop).status_code == 400
    phone = refresh(phone).json  # the other session lives on
    auth_client.post("/oauth/logout", json={"everywhere": True},
                     headers={"Authorization": f"Bearer {phone['access_token']}"})
    assert refresh(phone).status_code == 400
    assert auth_client.post("/oauth/logout").status_code == 401
    assert auth_client.post("/oauth/logout", headers={"Authorization": "Bearer x.y.z"}).status_code == 401


# ------------------------------------------------------------------ registration


def test_registration_needs_a_first_party_client_and_hashes_the_password(auth_app, auth_client, auth_db,
                                                                         storefront, carrier):
    body = {"username": "new@example.com", "password": PASSWORD}
    assert auth_client.post("/v1/customers", json=body).status_code == 401
    assert auth_client.post("/v1/customers", json=body,
                            auth=(carrier.client_id, carrier.client_secret)).status_code == 401
    created = auth_client.post("/v1/customers", json=body,
                               auth=(storefront.client_id, storefront.client_secret))
    assert created.status_code == 201
    # Every customer may manage their own webhook subscriptions (README "Webhooks").
    assert created.json["scopes"] == [*CUSTOMER_SCOPES, "webhooks:manage"]
    again = auth_client.post("/v1/customers", json=body, auth=(storefront.client_id,
                                                               storefront.client_secret))
    assert again.status_code == 409
    weak = auth_client.post("/v1/customers", json={"username": "weak@example.com", "password": "short"},
                            auth=(storefront.client_id, storefront.client_secret))
    assert weak.status_code == 422 and weak.json["errors"][0]["field"] == "password"
    rows = _rows(auth_db, "SELECT username, password_hash, role FROM users")
    assert [r["username"] for r in rows] == ["new@example.com"]
    assert rows[0]["password_hash"].startswith("$argon2id$") and PASSWORD not in rows[0]["password_hash"]
    login = password_login(auth_client, storefront, "new@example.com")
    assert decode(auth_client, login.json["access_token"])["sub"] == created.json["id"]


# ------------------------------------------------------------- lock-out and rate limits


@pytest.fixture
def lockout_app(app_for):
    return app_for("auth", AUTH_LOGIN_LOCK_THRESHOLD="2", AUTH_LOGIN_LOCK_BASE_S="1")


@pytest.fixture
def limited_app(app_for):
    return app_for("auth", AUTH_TOKEN_RATE_LIMIT_PER_IP="8/minute",
                   AUTH_TOKEN_RATE_LIMIT_PER_CLIENT="3/minute")


def _assert_429(response, retry_after=None):
    assert response.status_code == 429, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    assert int(response.headers["Retry-After"]) >= 1
    if retry_after is not None:
        assert int(response.headers["Retry-After"]) == retry_after
    assert response.json["status"] == 429


def _retry_after_of(response) -> int | None:
    return int(response.headers["Retry-After"]) if response.status_code == 429 else None


def test_failed_logins_lock_the_account_exponentially(lockout_app):
    app = lockout_app
    client = app.test_client()
    shop = make_client(app, "Shop", CUSTOMER_SCOPES, ("password",), first_party=True)
    make_user(app, "ada@example.com")
    assert password_login(client, shop, "ada@example.com", "bad password 1").status_code == 400
    _assert_429(password_login(client, shop, "ada@example.com", "bad password 2"), retry_after=1)
    # While locked even the right password is refused (and not checked).
    _assert_429(password_login(client, shop, "ada@example.com"))
    # Once the 1 s lock is over, the third failure locks for 2 s (base * 2^(3 - threshold)).
    third = wait_until(lambda: _retry_after_of(password_login(client, shop, "ada@example.com", "bad 3"))
                       == 2, timeout=5, interval=0.2, message="a 2 s lock after the third failure")
    assert third
    started = time.monotonic()
    wait_until(lambda: password_login(client, shop, "ada@example.com").status_code == 200, timeout=6,
               interval=0.25, message="account never unlocked")
    assert time.monotonic() - started >= 1.0
    # Success reset the counter: one failure is no lock again.
    assert password_login(client, shop, "ada@example.com", "bad again").status_code == 400
    # Names without an account lock the same way (no account enumeration).
    password_login(client, shop, "ghost@example.com", "x1")
    _assert_429(password_login(client, shop, "ghost@example.com", "x2"))


def test_token_endpoint_rate_limits_per_client_and_per_ip(limited_app):
    app = limited_app
    client = app.test_client()
    a = make_client(app, "A", ("shipments:read",))
    b = make_client(app, "B", ("shipments:read",))
    # Wrong secrets sent in A's name do not use up A's quota...
    for _ in range(2):
        assert client.post("/oauth/token", data={"grant_type": "client_credentials"},
                           auth=(a.client_id, "wrong")).status_code == 401
    for _ in range(3):
        assert token_request(client, a, grant_type="client_credentials").status_code == 200
    _assert_429(token_request(client, a, grant_type="client_credentials"))  # per client
    assert token_request(client, b, grant_type="client_credentials").status_code == 200
    # The per-IP limit (8/minute) counts every request from this address, failed ones too:
    # fresh clients (each far from its own limit) are refused once the address is over it.
    fresh = [make_client(app, f"C{i}", ("shipments:read",)) for i in range(4)]
    statuses = [token_request(client, c, grant_type="client_credentials") for c in fresh]
    limited = [r for r in statuses if r.status_code == 429]
    assert limited, [r.status_code for r in statuses]
    _assert_429(limited[0])
    assert "8 per 1 minute" in limited[0].json["detail"]
    other_ip = client.post("/oauth/token", data={"grant_type": "client_credentials"},
                           auth=(b.client_id, b.client_secret),
                           environ_base={"REMOTE_ADDR": "10.9.8.7"})
    assert other_ip.status_code == 200


# ------------------------------------------------------------------ keys


def test_jwks_and_metadata(auth_client):
    jwks = auth_client.get("/.well-known/jwks.json")
    assert jwks.status_code == 200 and "max-age" in jwks.headers["Cache-Control"]
    (key,) = jwks.json["keys"]
    assert key["kty"] == "RSA" and key["alg"] == "RS256" and key["use"] == "sig"
    assert "d" not in key and "p" not in key  # public parts only
    meta = auth_client.get("/.well-known/oauth-authorization-server").json
    assert meta["issuer"] == "order-platform-dev"
    assert meta["jwks_uri"].endswith("/.well-known/jwks.json")
    assert "password" in meta["grant_types_supported"]


def test_private_keys_are_encrypted_at_rest(auth_client, auth_db, service_env):
    client_token_kid = auth_client.get("/.well-known/jwks.json").json["keys"][0]["kid"]
    (row,) = _rows(auth_db, "SELECT kid, private_key_encrypted FROM signing_keys")
    stored = bytes(row["private_key_encrypted"])
    assert row["kid"] == client_token_kid
    assert b"PRIVATE KEY" not in stored
    from services.auth.settings import DEV_KEY_ENCRYPTION_KEY

    assert b"PRIVATE KEY" in KeyCipher((DEV_KEY_ENCRYPTION_KEY,)).decrypt(stored)
    from cryptography.fernet import Fernet, InvalidToken

    with pytest.raises(InvalidToken):
        KeyCipher((Fernet.generate_key().decode(),)).decrypt(stored)


def test_key_rotation_keeps_old_tokens_verifiable_until_they_expire(auth_app, auth_client, auth_db,
                                                                   carrier):
    old_token = client_token(auth_client, carrier)
    old_kid = jwt.get_unverified_header(old_token)["kid"]
    keys = auth_app.extensions["signing_keys"]
    # Published ahead of use: a new key that is not active yet does not sign.
    upcoming = keys.rotate(activates_in_s=60)
    kids = [k["kid"] for k in auth_client.get("/.well-known/jwks.json").json["keys"]]
    assert set(kids) == {old_kid, upcoming.kid}
    keys._loaded_at = 0  # noqa: SLF001 - skip this process's key cache
    assert jwt.get_unverified_header(client_token(auth_client, carrier))["kid"] == old_kid
    # Rotate again, effective at once: the new key signs and replaces the pending one; the old
    # key stays published until every token it signed has expired.
    now_key = keys.rotate(activates_in_s=0)
    keys._loaded_at = 0  # noqa: SLF001
    new_token = client_token(auth_client, carrier)
    assert jwt.get_unverified_header(new_token)["kid"] == now_key.kid
    published = {k["kid"] for k in auth_client.get("/.well-known/jwks.json").json["keys"]}
    assert published == {old_kid, now_key.kid}
    assert decode(auth_client, old_token)["sub"] == decode(auth_client, new_token)["sub"]
    rows = {r["kid"]: r for r in _rows(auth_db, "SELECT kid, publish_until - now() AS left"
                                                " FROM signing_keys")}
    grace = auth_app.extensions["auth_config"].key_publish_grace_s
    assert rows[now_key.kid]["left"] is None
    assert grace - 5 <= rows[old_kid]["left"].total_seconds() <= grace + 60
    assert grace >= 900  # at least the access-token lifetime
    # Once the window ends the key is gone from the JWKS (pruned).
    with auth_db.transaction() as cur:
        cur.execute("UPDATE signing_keys SET publish_until = now() - interval '1 second'"
                    " WHERE kid = %s", (old_kid,))
    assert old_kid not in {k["kid"] for k in auth_client.get("/.well-known/jwks.json").json["keys"]}
    assert keys.prune() == 1


def test_openapi_documents_the_auth_endpoints(auth_client):
    spec = auth_client.get("/openapi.json").json
    for path in ("/oauth/token", "/oauth/revoke", "/oauth/logout", "/.well-known/jwks.json",
                 "/v1/customers"):
        assert path in spec["paths"], path
    assert "application/x-www-form-urlencoded" in \
        spec["paths"]["/oauth/token"]["post"]["requestBody"]["content"]


def test_json_token_requests_are_refused_with_a_hint(auth_client, carrier):
    response = auth_client.post("/oauth/token", json={"grant_type": "client_credentials"},
                                auth=(carrier.client_id, carrier.client_secret))
    assert response.status_code == 415
    assert "x-www-form-urlencoded" in response.json["detail"]


def test_tokens_have_unique_ids(auth_client, carrier):
    ids = {decode(auth_client, client_token(auth_client, carrier))["jti"] for _ in range(5)}
    assert len(ids) == 5 and all(uuid.UUID(i) for i in ids)


@pytest.mark.parametrize("credentials", ["l5c=", "%%%not-base64", "Zm9v"])  # not UTF-8, not base64, no ':'
def test_garbage_basic_credentials_are_invalid_client_not_a_500(auth_client, credentials):
    for path in ("/oauth/token", "/oauth/revoke"):
        response = auth_client.post(path, data={"grant_type": "client_credentials", "token": "x"},
                                    headers={"Authorization": f"Basic {credentials}"})
        assert response.status_code in (400, 401), (path, response.get_data(as_text=True))
        assert response.json["error"] == "invalid_client"
