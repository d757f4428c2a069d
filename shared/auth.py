"""Bearer-token verification and scope checks.

:func:`verify_bearer_token` is the ONE place a token becomes a
:class:`Principal`. Today it checks HS256 development tokens (issuer,
audience, expiry); the identity service will switch it to RS256 via JWKS
without any caller changing.
"""

from __future__ import annotations

import functools
import time
import uuid
from dataclasses import dataclass

import jwt
from flask import current_app, g, request

from shared.errors import Problem

# inventory:reserve: service-to-service, held by the order service's own token (see
# services/order/inventory.py); customers never get it, so they cannot hold stock directly.
SCOPES = ("orders:read", "orders:write", "shipments:read", "shipments:write", "webhooks:manage",
          "inventory:reserve", "admin")
ALGORITHM = "HS256"
CLOCK_SKEW_S = 30
DEFAULT_TTL_S = 3600


@dataclass(frozen=True)
class Principal:
    """Who is calling, and what they may do."""

    subject: str
    scopes: frozenset[str]
    token_id: str | None = None
    expires_at: int | None = None

    @property
    def is_admin(self) -> bool:
        """Admins see every customer's resources."""
        return "admin" in self.scopes


@dataclass(frozen=True)
class TokenSettings:
    """What a token must carry to be accepted."""

    secret: str
    issuer: str
    audience: str


class InvalidToken(Exception):
    """The token is missing, malformed, expired, or signed by someone else."""


def verify_bearer_token(token: str, settings: TokenSettings) -> Principal:
    """Verify ``token`` and return its principal; raise :class:`InvalidToken`."""
    try:
        claims = jwt.decode(
            token, settings.secret, algorithms=[ALGORITHM], audience=settings.audience,
            issuer=settings.issuer, leeway=CLOCK_SKEW_S,
            options={"require": ["exp", "iat", "sub", "iss", "aud"]},
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken(str(exc)) from None
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject or len(subject) > 128:
        raise InvalidToken("sub must be a non-empty string")
    scope = claims.get("scope", "")
    if not isinstance(scope, str):
        raise InvalidToken("scope must be a space-separated string")
    return Principal(subject=subject, scopes=frozenset(scope.split()),
                     token_id=claims.get("jti"), expires_at=claims.get("exp"))


def mint_dev_token(settings: TokenSettings, subject: str, scopes: list[str] | tuple[str, ...],
                   ttl_s: int = DEFAULT_TTL_S) -> str:
    """Sign a development token (``scripts/token``, tests, the demo)."""
    now = int(time.time())
    return jwt.encode(
        {"sub": subject, "scope": " ".join(scopes), "iss": settings.issuer,
         "aud": settings.audience, "iat": now, "nbf": now, "exp": now + ttl_s,
         "jti": str(uuid.uuid4())},
        settings.secret, algorithm=ALGORITHM,
    )


def token_settings_from(settings) -> TokenSettings:
    """The token settings of a :class:`shared.config.Settings`."""
    return TokenSettings(settings.jwt_secret, settings.jwt_issuer, settings.jwt_audience)


def _unauthorized(detail: str) -> Problem:
    return Problem(401, "Unauthorized", detail, "unauthorized",
                   headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


def authenticate() -> Principal:
    """The principal of the current request, from its ``Authorization: Bearer`` header."""
    if "principal" in g:
        return g.principal
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("A bearer token is required.")
    try:
        principal = verify_bearer_token(token.strip(), current_app.extensions["token_settings"])
    except InvalidToken:
        # The reason stays in our logs' debug level only; callers learn nothing useful.
        raise _unauthorized("The bearer token is invalid or expired.") from None
    g.principal = principal
    return principal


def require_scopes(*required: str):
    """Decorator: the caller must hold every scope in ``required``."""
    for scope in required:
        if scope not in SCOPES:
            raise ValueError(f"unknown scope {scope}")

    def decorator(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            principal = authenticate()
            missing = [s for s in required if s not in principal.scopes]
            if missing:
                raise Problem(403, "Forbidden", f"Missing scope: {' '.join(missing)}.",
                              "insufficient-scope",
                              headers={"WWW-Authenticate":
                                       f'Bearer error="insufficient_scope", scope="{" ".join(required)}"'})
            return view(*args, **kwargs)

        return wrapper

    return decorator


def require_any_scope(*accepted: str):
    """Decorator: the caller must hold at least one scope in ``accepted``."""
    for scope in accepted:
        if scope not in SCOPES:
            raise ValueError(f"unknown scope {scope}")

    def decorator(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            principal = authenticate()
            if not principal.scopes.intersection(accepted):
                # RFC 6750 3.1: a 403 for scope names the error and the scopes, as require_scopes does.
                raise Problem(403, "Forbidden", f"Requires one of: {' '.join(accepted)}.",
                              "insufficient-scope",
                              headers={"WWW-Authenticate":
                                       f'Bearer error="insufficient_scope", scope="{" ".join(accepted)}"'})
            return view(*args, **kwargs)

        return wrapper

    return decorator
