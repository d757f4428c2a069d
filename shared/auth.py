"""Bearer-token verification and scope checks.

:func:`verify_bearer_token` is the ONE place a token becomes a
:class:`Principal`. It accepts RS256 access tokens issued by the auth
service: the key is looked up by ``kid`` in the auth service's JWKS
(:class:`shared.jwks.JwksCache`: cached, refreshed on an unknown ``kid``,
fetched through the ``auth-jwks`` breaker); issuer, audience, expiry,
not-before and the required claims are checked, and the optional ``carrier``
claim (the carrier a carrier client is bound to; its holder reaches only
that carrier's shipments) must be a short non-empty string when present.
Only RS256 is accepted:
``alg: none``, HMAC (including HS256 "signed" with the public key) and any
other algorithm are refused before a key is even looked up.

After the signature and the claims, the token's ``jti`` is checked against
the access-token deny-list (:class:`shared.revocations.RevocationList`: a
logout or revocation refuses the token at once, everywhere). A verified token
is kept in :class:`shared.token_cache.VerifiedTokens` until it expires, so a
caller presenting the same token again costs a digest and two lookups, not an
RS256 verification; the deny-list and the signing key's presence in the JWKS
are checked on those hits too.

Signing is not done here: the auth service signs the tokens it issues, and
the test suite and the benchmarks sign theirs with ``devstack.tokens`` (a key
pair of their own, served as a JWKS on 127.0.0.1). The services have no
development path: they verify every token against the JWKS they are pointed at.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlsplit

import jwt
from flask import current_app, g, request

from shared.errors import Problem
from shared.jwks import (
    JwksCache,
    KeysUnavailable,
    jwks_url_from,
)
from shared.openapi import scope_requirement
from shared.revocations import FeedSettings, RevocationList
from shared.token_cache import VerifiedTokens

# inventory:reserve, payments:create and shipments:cancel: service-to-service, held by the order
# service's own token (services/order/inventory.py, payments.py, delivery.py); customers and
# carriers never get them, so they cannot hold stock, open payments or stop shipments directly.
SCOPES = ("orders:read", "orders:write", "shipments:read", "shipments:write", "webhooks:manage",
          "inventory:reserve", "payments:create", "shipments:cancel", "admin")
ALGORITHMS = ["RS256"]
CLOCK_SKEW_S = 30
MAX_SUBJECT_CHARS = 128
MAX_CARRIER_CHARS = 64
MAX_JTI_CHARS = 128
# RFC 9068 plus our scope claim: a token without any of these is not ours.
REQUIRED_CLAIMS = ["exp", "iat", "sub", "iss", "aud", "client_id", "jti"]


@dataclass(frozen=True)
class Principal:
    """Who is calling, and what they may do."""

    subject: str
    scopes: frozenset[str]
    token_id: str | None = None
    expires_at: int | None = None
    client_id: str | None = None
    # The carrier the calling client is bound to (the token's ``carrier`` claim), if any.
    carrier: str | None = None

    @property
    def is_admin(self) -> bool:
        """Admins see every customer's resources."""
        return "admin" in self.scopes


class KeySource(Protocol):
    def key_for(self, kid: str | None) -> jwt.PyJWK | None: ...


@dataclass(frozen=True)
class TokenSettings:
    """What a token must carry to be accepted, and where the keys come from."""

    issuer: str
    audience: str
    keys: KeySource = field(repr=False)
    # The deny-list followed from the auth service (None: nothing is ever revoked, unit tests).
    revocations: RevocationList | None = field(default=None, repr=False)
    # Verified tokens until they expire (None: every request verifies the signature).
    cache: VerifiedTokens[Principal] | None = field(default=None, repr=False)


class InvalidToken(Exception):
    """The token is missing, malformed, expired, or signed by someone else."""


def verify_bearer_token(token: str, settings: TokenSettings) -> Principal:
    """Verify ``token`` and return its principal.

    Raises :class:`InvalidToken`, or :class:`shared.jwks.KeysUnavailable` when
    no keys can be had at all (the caller answers 503, not 401).
    """
    cache_key = None
    if settings.cache is not None:
        cache_key = settings.cache.key(token)
        hit = settings.cache.get(cache_key)
        # A key withdrawn from the JWKS (a compromise) ends its cached tokens too.
        if hit is not None and settings.keys.key_for(hit[1]) is not None:
            return _not_revoked(hit[0], settings)
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise InvalidToken(str(exc)) from None
    if header.get("alg") not in ALGORITHMS:
        raise InvalidToken(f"algorithm {header.get('alg')!r} is not accepted")
    kid = header.get("kid") if isinstance(header.get("kid"), str) else None
    key = settings.keys.key_for(kid)
    if key is None:
        raise InvalidToken("unknown signing key")
    try:
        claims = jwt.decode(
            token, key.key, algorithms=ALGORITHMS, audience=settings.audience,
            issuer=settings.issuer, leeway=CLOCK_SKEW_S,
            options={"require": REQUIRED_CLAIMS, "verify_nbf": True, "verify_iat": True},
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken(str(exc)) from None
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject or len(subject) > MAX_SUBJECT_CHARS:
        raise InvalidToken("sub must be a non-empty string")
    scope = claims.get("scope", "")
    if not isinstance(scope, str):
        raise InvalidToken("scope must be a space-separated string")
    client_id = claims.get("client_id")
    if not isinstance(client_id, str) or not client_id:
        raise InvalidToken("client_id must be a non-empty string")
    carrier = claims.get("carrier")
    if carrier is not None and (not isinstance(carrier, str) or not carrier
                                or len(carrier) > MAX_CARRIER_CHARS):
        # A malformed binding must not widen or blur what the holder reaches: refuse the token.
        raise InvalidToken("carrier must be a non-empty string")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti or len(jti) > MAX_JTI_CHARS:
        raise InvalidToken("jti must be a non-empty string")  # the deny-list is keyed by it
    principal = Principal(subject=subject, scopes=frozenset(scope.split()), token_id=jti,
                          expires_at=int(claims["exp"]), client_id=client_id, carrier=carrier)
    _not_revoked(principal, settings)
    if cache_key is not None:
        settings.cache.put(cache_key, principal, kid, principal.expires_at)
    return principal


def _not_revoked(principal: Principal, settings: TokenSettings) -> Principal:
    """``principal``, unless its token is on the deny-list (checked after the signature)."""
    if settings.revocations is not None and settings.revocations.is_revoked(principal.token_id):
        raise InvalidToken("the token has been revoked")
    return principal


def token_settings_from(settings, breakers=None) -> TokenSettings:
    """The token settings of a :class:`shared.config.Settings`: JWKS from the auth service."""
    from shared.config import DEV_REVOCATION_FEED_KEY, ConfigError
    from shared.services import port_of

    auth_url = settings.peers.get("auth")
    if settings.service == "auth" and not auth_url:  # its own keys; it verifies none over HTTP
        auth_url = f"http://127.0.0.1:{port_of('auth')}"
    url = jwks_url_from(settings.auth_jwks_url, settings.app_env, auth_url)
    # AUTH_JWKS_MIN_REFRESH_S must stay below the auth service's AUTH_KEY_ACTIVATION_DELAY_S
    # (30 s): a key that starts signing is then always fetched on first sight.
    keys = JwksCache(url, breakers, ttl_s=settings.jwks_cache_ttl_s,
                     min_refresh_interval_s=settings.jwks_min_refresh_s)
    # The feed lives on the auth service beside its JWKS (AUTH_URL; else the JWKS URL's origin).
    parts = urlsplit(auth_url or url)
    feed_key = settings.revocation_feed_key.get_secret_value()
    if settings.app_env == "production" and (not settings.was_set("revocation_feed_key")
                                             or feed_key == DEV_REVOCATION_FEED_KEY):
        raise ConfigError("AUTH_REVOCATION_FEED_KEY", "is required in production (and may not be "
                                                      "the development default)")
    feed = FeedSettings(f"{parts.scheme}://{parts.netloc}", feed_key,
                        wait_s=settings.revocation_wait_s, poll_s=settings.revocation_poll_s,
                        max_staleness_s=settings.revocation_max_staleness_s)
    cache = VerifiedTokens(settings.token_cache_size, CLOCK_SKEW_S) if settings.token_cache_size else None
    return TokenSettings(settings.jwt_issuer, settings.jwt_audience, keys, RevocationList(feed), cache)


def _unauthorized(detail: str, *, credentials_given: bool) -> Problem:
    # RFC 6750 3.1: a request without credentials (no Authorization header, or
    # another scheme) gets the bare challenge; only a bearer token that fails
    # verification is named invalid_token. The realm is the audience tokens are
    # issued for, the one protection space every service shares.
    challenge = f'Bearer realm="{current_app.extensions["token_settings"].audience}"'
    if credentials_given:
        challenge += ', error="invalid_token"'
    return Problem(401, "Unauthorized", detail, "unauthorized",
                   headers={"WWW-Authenticate": challenge})


def authenticate() -> Principal:
    """The principal of the current request, from its ``Authorization: Bearer`` header."""
    if "principal" in g:
        return g.principal
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        raise _unauthorized("A bearer token is required.", credentials_given=False)
    if not token.strip():
        # "Bearer" with nothing after it is a malformed credential, not an absent one.
        raise _unauthorized("A bearer token is required.", credentials_given=True)
    try:
        principal = verify_bearer_token(token.strip(), current_app.extensions["token_settings"])
    except InvalidToken:
        # The reason stays in our logs' debug level only; callers learn nothing useful.
        raise _unauthorized("The bearer token is invalid or expired.",
                            credentials_given=True) from None
    except KeysUnavailable as exc:
        # Not the caller's fault: the auth service's keys cannot be had right now.
        raise Problem(503, "Service Unavailable", "Tokens cannot be verified right now; retry later.",
                      "service-unavailable",
                      headers={"Retry-After": str(max(1, int(exc.retry_after_s + 0.999)))}) from None
    g.principal = principal
    return principal


def _scope_guard(scopes: tuple[str, ...], satisfied, detail: str, mode: str):
    """Decorator factory: authenticate, then 403 unless ``satisfied(principal.scopes)``.

    The view is marked with its scopes (``mode`` "all" or "any"): its OpenAPI
    operation requires them, and documents its 401, 403 and 503 (shared/openapi.py).
    """
    for scope in scopes:
        if scope not in SCOPES:
            raise ValueError(f"unknown scope {scope}")
    # RFC 6750 3.1: a 403 for scope names the error and the scopes.
    challenge = f'Bearer error="insufficient_scope", scope="{" ".join(scopes)}"'

    def decorator(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            principal = authenticate()
            if not satisfied(principal.scopes):
                raise Problem(403, "Forbidden", detail(principal.scopes), "insufficient-scope",
                              headers={"WWW-Authenticate": challenge})
            return view(*args, **kwargs)

        return scope_requirement(wrapper, mode, scopes)

    return decorator


def require_scopes(*required: str):
    """Decorator: the caller must hold every scope in ``required``."""
    return _scope_guard(
        required, lambda held: all(s in held for s in required),
        lambda held: f"Missing scope: {' '.join(s for s in required if s not in held)}.", "all")


def require_any_scope(*accepted: str):
    """Decorator: the caller must hold at least one scope in ``accepted``."""
    return _scope_guard(accepted, lambda held: bool(held.intersection(accepted)),
                        lambda _held: f"Requires one of: {' '.join(accepted)}.", "any")
