"""HTTP: the OAuth2 endpoints, the JWKS and metadata, customer registration, logout,
and the internal revocation feed (``GET /v1/revocations``, services/auth/revocations.py).

Rate limits (``AUTH_*_RATE_LIMIT_*``): the token endpoint per client and per
IP, revocation and registration per IP. :data:`PROBLEMS` answers the
refusals of the handlers and of the service's login.
"""

from __future__ import annotations

import base64
import binascii
import functools

import jwt as pyjwt
from flask import current_app, g, jsonify, request
from flask.views import MethodView

from services.auth import handlers
from services.auth.handlers import AccountExists, PasswordRefused
from services.auth.oauth import decode_own_access_token
from services.auth.revocations import feed_key_matches, read_feed
from services.auth.schemas import (
    REVOKE_REQUEST_DOC,
    TOKEN_REQUEST_DOC,
    CustomerSchema,
    JwksSchema,
    LogoutSchema,
    OAuthErrorSchema,
    RegisterCustomerSchema,
    RevocationFeedQuerySchema,
    RevocationFeedSchema,
    TokenResponseSchema,
)
from services.auth.service import AccountLocked
from shared.auth import SCOPES
from shared.errors import Problem, ProblemMap
from shared.openapi import response_headers
from shared.ratelimit import client_ip, rate_limit
from shared.web import Blueprint, database

oauth = Blueprint("oauth", __name__, url_prefix="/oauth",
                  description="OAuth2 token endpoint (RFC 6749), revocation (RFC 7009), logout.")
well_known = Blueprint("well_known", __name__, url_prefix="/.well-known",
                       description="Signing keys (JWKS) and server metadata (RFC 8414).")
customers = Blueprint("customers", __name__, url_prefix="/v1/customers",
                      description="Customer accounts (registration through a first-party client).")
revocations = Blueprint("revocations", __name__, url_prefix="/v1/revocations",
                        description="Internal: the access-token deny-list every service follows.")

TOKEN_ENDPOINT = "oauth.token"
REVOKE_ENDPOINT = "oauth.revoke"
# Verifiers may cache the JWKS this long; rotation publishes new keys
# AUTH_KEY_ACTIVATION_DELAY_S ahead, so keep this below it.
JWKS_MAX_AGE_S = 15
MAX_CLIENT_ID_CHARS = 64
BASIC_AUTH = [{"basicAuth": []}]

PROBLEMS = ProblemMap({
    PasswordRefused: lambda exc: Problem(422, "Validation failed",
                                         "The request has invalid fields; see errors.",
                                         "validation-error",
                                         errors=[{"field": "password", "message": exc.detail}]),
    AccountExists: (409, "Conflict", "account-exists"),
    AccountLocked: lambda exc: Problem(429, "Too Many Requests", exc.detail, "login-locked",
                                       headers={"Retry-After": str(exc.retry_after_s)},
                                       retry_after_s=exc.retry_after_s),
})


def _ext(name: str):
    return current_app.extensions[name]


def token_client_key() -> str:
    """Rate-limit key of the token endpoint: the client id the request claims.

    Only requests from a client that did authenticate are counted against it
    (see ``deduct_when``), so nobody can use up another client's quota by
    sending its id with a wrong secret; the per-IP limit covers those.
    """
    auth = request.authorization
    client_id = auth.username if auth is not None and auth.type == "basic" else None
    client_id = client_id or request.form.get("client_id") or "anonymous"
    return "client:" + client_id[:MAX_CLIENT_ID_CHARS]


def client_authenticated(_response) -> bool:
    """Whether the current token request authenticated its client."""
    return bool(g.get("authenticated_client"))


def ip_key() -> str:
    return "ip:" + client_ip()


def _configured(name: str):
    """The rate limit ``name`` of the app's auth configuration, read per request."""
    return lambda: getattr(_ext("auth_config"), name)


@oauth.route("/token", methods=["POST"])
@rate_limit(_configured("token_rate_per_ip"), key=ip_key)
@rate_limit(_configured("token_rate_per_client"), key=token_client_key,
            deduct_when=client_authenticated)
@oauth.doc(requestBody=TOKEN_REQUEST_DOC, security=[{"basicAuth": []}, {}])
@oauth.response(200, TokenResponseSchema, description="Access token (and refresh token for users)")
@oauth.alt_response(400, schema=OAuthErrorSchema, description="invalid_request, invalid_grant, "
                    "invalid_scope, unsupported_grant_type, unauthorized_client")
@oauth.alt_response(401, schema=OAuthErrorSchema, description="invalid_client")
@oauth.alt_response(429, description="Rate limited, or the account is locked after failed logins "
                    "(problem+json with Retry-After)")
def token():
    """Issue tokens: client_credentials, password (first-party clients), refresh_token."""
    return _ext("oauth_server").create_token_response()


@oauth.route("/revoke", methods=["POST"])
@rate_limit(_configured("token_rate_per_ip"), key=ip_key)
@oauth.doc(requestBody=REVOKE_REQUEST_DOC, security=BASIC_AUTH)
@oauth.response(200, description="Revoked, or the token was unknown (RFC 7009 2.2)")
@oauth.alt_response(400, schema=OAuthErrorSchema, description="Token of another client, "
                    "or an access token (unsupported_token_type)")
@oauth.alt_response(401, schema=OAuthErrorSchema, description="invalid_client")
def revoke():
    """Revoke a refresh token and every token of its family (RFC 7009)."""
    return _ext("oauth_server").create_endpoint_response("revocation")


@oauth.route("/logout", methods=["POST"])
@oauth.arguments(LogoutSchema, required=False)
@oauth.response(204, description="The session's refresh tokens are revoked")
@oauth.alt_response(401, description="No valid access token")
@oauth.doc(security=[{"bearerAuth": []}])
def logout(payload):
    """Log out the bearer's session (its refresh-token family), or every session with ``everywhere``.

    The session's refresh tokens are revoked and its access tokens, this one
    included, put on the deny-list: every service refuses them at once.
    """
    claims = verify_own_token(_bearer())
    if claims.get("sub") == claims.get("client_id"):
        raise Problem(400, "Bad Request", "Client tokens have no session to log out.", "no-session")
    handlers.logout(database(), claims["sub"], claims["client_id"], claims.get("sid"),
                    bool((payload or {}).get("everywhere")), access_token=(claims["jti"], claims["exp"]))
    return "", 204


@revocations.route("", methods=["GET"])
@revocations.arguments(RevocationFeedQuerySchema, location="query")
@revocations.response(200, RevocationFeedSchema)
@revocations.alt_response(401, description="Not a service: AUTH_REVOCATION_FEED_KEY is required")
@revocations.doc(security=[{"feedKey": []}])
def revocation_feed(query):
    """Revoked, unexpired access tokens after ``after``; waits up to ``wait`` s for a new one."""
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    expected = _ext("settings").revocation_feed_key.get_secret_value()
    if scheme.lower() != "bearer" or not feed_key_matches(key.strip(), expected):
        raise Problem(401, "Unauthorized", "The revocation feed's key is required.", "unauthorized",
                      headers={"WWW-Authenticate": 'Bearer realm="revocation-feed"'})
    return read_feed(database(), _ext("revocation_hub"), query["after"], query["wait"])


@well_known.route("/jwks.json", methods=["GET"])
@well_known.response(200, JwksSchema, headers=response_headers("Cache-Control"))
@well_known.doc(security=[])
def jwks():
    """The public signing keys: the active one, one about to activate, and retiring ones."""
    response = jsonify(_ext("signing_keys").jwks())
    response.headers["Cache-Control"] = f"public, max-age={JWKS_MAX_AGE_S}"
    return response


@well_known.route("/oauth-authorization-server", methods=["GET"])
@well_known.doc(security=[])
@well_known.response(200, description="RFC 8414 authorization server metadata")
def metadata():
    """Where the endpoints are and what they support."""
    issuer = _ext("settings").jwt_issuer
    base = request.host_url.rstrip("/")
    return jsonify({
        "issuer": issuer,
        "token_endpoint": f"{base}/oauth/token",
        "revocation_endpoint": f"{base}/oauth/revoke",
        "jwks_uri": f"{base}/.well-known/jwks.json",
        "grant_types_supported": ["client_credentials", "password", "refresh_token"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "scopes_supported": list(SCOPES),
        "response_types_supported": [],
    })


def _requires_first_party_client(view):
    """Decorator: the client is authenticated before the body is even parsed (401 before 422)."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        _first_party_client()
        return view(*args, **kwargs)

    return wrapper


def _first_party_client():
    header = request.headers.get("Authorization", "")
    scheme, _, encoded = header.partition(" ")
    client = None
    if scheme.lower() == "basic" and encoded:
        try:
            client_id, _, secret = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            client_id, secret = "", ""
        candidate = _ext("oauth_server").service.client(client_id)
        if candidate is not None and candidate.check_client_secret(secret):
            client = candidate
    if client is None or not client.first_party:
        raise Problem(401, "Unauthorized", "First-party client credentials (HTTP Basic) are required.",
                      "unauthorized", headers={"WWW-Authenticate": 'Basic realm="auth"'})
    return client


@customers.route("")
class Customers(MethodView):
    @rate_limit(_configured("register_rate_per_ip"), key=ip_key)
    @customers.doc(security=BASIC_AUTH)
    @customers.response(201, CustomerSchema)
    @customers.alt_response(401, description="No first-party client credentials")
    @customers.alt_response(409, description="The username is taken")
    @customers.alt_response(429, description="Too many registrations from this address")
    @_requires_first_party_client
    @customers.arguments(RegisterCustomerSchema)
    def post(self, payload):
        """Register a customer (the storefront calls this with its client credentials)."""
        return handlers.register_customer(database(), _ext("passwords"), _ext("auth_config"),
                                          payload["username"], payload["password"]), 201


def _bearer() -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        raise _invalid_token(credentials_given=False)
    if not token.strip():
        raise _invalid_token()
    return token.strip()


def _invalid_token(*, credentials_given: bool = True) -> Problem:
    # RFC 6750 3.1, as in shared/auth.py: no credentials get the bare challenge, no error code.
    challenge = f'Bearer realm="{_ext("settings").jwt_audience}"'
    if credentials_given:
        challenge += ', error="invalid_token"'
    return Problem(401, "Unauthorized", "A valid bearer token is required.", "unauthorized",
                   headers={"WWW-Authenticate": challenge})


def verify_own_token(token: str) -> dict:
    """Claims of an unrevoked access token this service signed (keys and deny-list straight
    from the database)."""
    settings = _ext("settings")
    try:
        claims = decode_own_access_token(_ext("signing_keys"), token, settings.jwt_issuer,
                                         settings.jwt_audience)
    except pyjwt.PyJWTError:
        raise _invalid_token() from None
    if handlers.access_token_denied(database(), str(claims["jti"])):
        raise _invalid_token()
    return claims
