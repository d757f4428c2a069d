"""Authlib adapters: the OAuth2 authorization server on the auth service's tables.

Authlib does the protocol (client authentication, grant dispatch, error
responses, RFC 7009); this module plugs the service into it:

* :class:`Client`, :class:`User` and :class:`RefreshToken`, Authlib's client,
  user and token models over rows of ``clients``, ``users`` and ``refresh_tokens``
  (:mod:`services.auth.oauth_models`);
* the grants: ``client_credentials`` for any client allowed it; ``password``
  only for first-party clients (also a CHECK constraint on the table);
  ``refresh_token`` with rotation on every use. Lock-out, rotation and reuse
  detection are the service's (:mod:`services.auth.service`);
* :class:`AccessTokenGenerator`: RS256 JWTs (RFC 9068 ``at+jwt``) carrying
  iss, aud, sub, client_id, scope, exp, iat, jti, ``sid`` (the
  refresh-token family) for user sessions, and ``carrier`` for a client bound to a
  carrier (the delivery API limits its holder to that carrier's shipments). Scope = requested (default:
  everything allowed) and, for a user, also within the user's scopes;
  anything else is ``invalid_scope``;
* :class:`Revocation` (RFC 7009) for refresh tokens and access tokens, and
  :func:`build_server`. Every access token issued is recorded (jti, expiry,
  client, user, family) by the token saver, so that revoking a refresh token,
  logging out or deleting a client also puts the access tokens already issued
  on the deny-list (services/auth/revocations.py).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

import jwt as pyjwt
from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6749.authenticate_client import authenticate_client_secret_basic
from authlib.oauth2.rfc6749.errors import InvalidGrantError, InvalidScopeError
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc9068 import JWTBearerTokenGenerator
from flask import g
from joserfc import jwt

from services.auth import crypto
from services.auth.oauth_models import (
    CLIENT_AUTH_METHODS,
    IssuedAccessToken,
    RefreshToken,
)
from services.auth.settings import AuthSettings
from shared.auth import CLOCK_SKEW_S, SCOPES
from shared.logging import get_logger

if TYPE_CHECKING:
    from services.auth.service import AuthService

log = get_logger(__name__)

class AccessTokenGenerator(JWTBearerTokenGenerator):
    """RS256 access tokens signed with the active key, ``kid`` in the header."""

    def __init__(self, issuer: str, audience: str, keys, config: AuthSettings):
        super().__init__(issuer=issuer, alg="RS256",
                         refresh_token_generator=lambda **_: crypto.new_secret(),
                         expires_generator=lambda client, grant_type: config.access_token_ttl_s)
        self.audience = audience
        self.keys = keys

    def get_jwks(self):
        return self.keys.active()

    def get_audiences(self, client, user, scope):
        return self.audience

    def get_jti(self, client, grant_type, user, scope):
        return str(uuid.uuid4())

    def generate(self, grant_type, client, user=None, scope=None, expires_in=None,
                 include_refresh_token=True):
        """Keep a user's token within the user's own scopes as well as the client's."""
        if user is not None:
            allowed = set(client.allowed_scopes) & set(user.scopes)
            if grant_type == "refresh_token":
                # The user's or the client's scopes may have shrunk since login: narrow silently.
                scope = " ".join(s for s in (scope or "").split() if s in allowed)
            elif scope:
                if not set(scope.split()) <= allowed:
                    raise InvalidScopeError()
            else:
                scope = " ".join(s for s in client.allowed_scopes if s in allowed)
            if not scope:  # an empty scope would mean "everything the client may" further down
                raise InvalidScopeError()
        return super().generate(grant_type, client, user, scope, expires_in, include_refresh_token)

    def access_token_generator(self, client, grant_type, user, scope):
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": str(user.get_user_id()) if user else client.get_client_id(),
            "client_id": client.get_client_id(),
            "scope": scope or "",
            "iat": now,
            "exp": now + self._get_expires_in(client, grant_type),
            "jti": str(uuid.uuid4()),
        }
        family = g.get("refresh_family")
        if user is not None and family is not None:
            claims["sid"] = str(family)
        if client.carrier is not None:
            claims["carrier"] = client.carrier
        key = self.keys.active()
        # The token saver records it (jti and lifetime only), so a revocation can deny it.
        g.issued_access_token = IssuedAccessToken(claims["jti"], claims["exp"])
        return jwt.encode({"alg": "RS256", "typ": "at+jwt", "kid": key.kid}, claims, key)


class ClientCredentialsGrant(grants.ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = CLIENT_AUTH_METHODS


class PasswordGrant(grants.ResourceOwnerPasswordCredentialsGrant):
    """Customer/operator login through a first-party client, with lock-out."""

    TOKEN_ENDPOINT_AUTH_METHODS = CLIENT_AUTH_METHODS

    def authenticate_user(self, username, password):
        service: AuthService = self.server.service
        user = service.login(username, password)
        if user is None:
            raise InvalidGrantError("Invalid username or password.")
        g.refresh_family = uuid.uuid4()
        return user


class RefreshTokenGrant(grants.RefreshTokenGrant):
    """Rotation on every use; a rotated token presented again revokes its family."""

    TOKEN_ENDPOINT_AUTH_METHODS = CLIENT_AUTH_METHODS
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token):
        service: AuthService = self.server.service
        token = service.use_refresh_token(refresh_token, self.request.client, self.request.payload.scope)
        if token is not None:
            g.refresh_family = token.family_id
        return token

    def authenticate_user(self, refresh_token):
        return self.server.service.user(refresh_token.user_id)

    def revoke_old_credential(self, refresh_token):
        """Already claimed (marked rotated) with the successor's save; nothing left to do."""


@dataclass(frozen=True)
class AccessTokenRef:
    """An access token this service signed, as far as revocation needs it."""

    jti: str
    expires_at: int
    client_id: str

    def check_client(self, client):
        return self.client_id == client.get_client_id()


def decode_own_access_token(keys, token: str, issuer: str, audience: str) -> dict:
    """The claims of an access token signed with one of our published keys; raises
    ``jwt.PyJWTError`` (pyjwt's) when it is not one, or has expired."""
    kid = pyjwt.get_unverified_header(token).get("kid")
    jwk = next((k for k in keys.jwks()["keys"] if k["kid"] == kid), None)
    if jwk is None:
        raise pyjwt.InvalidKeyError("unknown signing key")
    return pyjwt.decode(token, pyjwt.PyJWK(jwk).key, algorithms=["RS256"], audience=audience,
                        issuer=issuer, leeway=CLOCK_SKEW_S,
                        options={"require": ["exp", "iat", "sub", "iss", "aud", "client_id", "jti"]})


class Revocation(RevocationEndpoint):
    """RFC 7009: a refresh token (revoking one revokes its whole family and the access
    tokens issued from it), or one access token (put on the deny-list verifiers follow)."""

    CLIENT_AUTH_METHODS = CLIENT_AUTH_METHODS
    SUPPORTED_TOKEN_TYPES = ("refresh_token", "access_token")

    def query_token(self, token_string, token_type_hint):
        if token_string.count(".") == 2:
            try:
                claims = decode_own_access_token(self.server.signing_keys, token_string,
                                                 self.server.issuer, self.server.audience)
            except pyjwt.PyJWTError:
                return None  # RFC 7009 2.2: an invalid (or expired) token needs no revoking
            return AccessTokenRef(str(claims["jti"]), int(claims["exp"]), str(claims["client_id"]))
        return self.server.service.find_refresh_token(token_string)

    def revoke_token(self, token, request):
        if isinstance(token, AccessTokenRef):
            self.server.service.deny_access_token(token.jti, token.expires_at, "revoked")
            return
        self.server.service.revoke_family(token.family_id, "revoked")


def _client_secret_basic(query_client, request):
    """Authlib's HTTP Basic client authentication, minus its 500 on credentials that are not
    valid base64 or UTF-8 (those are simply not credentials)."""
    try:
        return authenticate_client_secret_basic(query_client, request)
    except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
        return None


def _token_saver(service: AuthService):
    """Authlib's callback after issuing tokens: the refresh token, if any, is stored (hashed);
    access tokens are not stored. A rotation claims the old token here, with the save, and
    raises InvalidGrantError (the response is then that error) when it may not rotate."""

    def save_token(token: dict, request) -> None:
        access: IssuedAccessToken | None = g.pop("issued_access_token", None)
        refresh = token.get("refresh_token")
        if not refresh or request.user is None:
            if access is not None:  # a client's own token: revoked with the client
                service.record_access_token(access, request.client.get_client_id())
            return
        previous: RefreshToken | None = getattr(request, "refresh_token", None)
        if previous is not None:
            # The successor keeps the family's granted scope even if this access token is narrower.
            service.rotate_refresh_token(previous, refresh, request.user.id, access)
            return
        family = g.get("refresh_family") or uuid.uuid4()
        service.store_refresh_token(refresh, family, request.client.get_client_id(),
                                    request.user.id, token.get("scope", ""), access)

    return save_token


def build_server(app, service: AuthService, keys, issuer: str, audience: str) -> AuthorizationServer:
    """The Authlib server for ``app`` with our grants, token generator and revocation."""
    server = AuthorizationServer()
    server.init_app(app, query_client=service.client, save_token=_token_saver(service))
    server.service = service
    server.signing_keys, server.issuer, server.audience = keys, issuer, audience
    server.scopes_supported = list(SCOPES)
    server.register_token_generator("default", AccessTokenGenerator(issuer, audience, keys,
                                                                    service.config))
    server.register_client_auth_method("client_secret_basic", _client_secret_basic)
    server.register_grant(ClientCredentialsGrant)
    server.register_grant(PasswordGrant)
    server.register_grant(RefreshTokenGrant)
    server.register_endpoint(Revocation)
    return server
