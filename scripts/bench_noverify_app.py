"""BENCHMARK ONLY: the order API with token verification replaced by an unverified read.

``bench_auth.py`` runs it beside the real order API to measure what RS256
verification against the cached JWKS costs a request. The claims are still
parsed (base64 + JSON), so the difference is the signature check, the claim
checks and the key lookup. Never deploy this: it trusts any token.
"""

from __future__ import annotations

import jwt

import shared.auth as auth


def _unverified(token: str, _settings) -> auth.Principal:
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise auth.InvalidToken(str(exc)) from None
    return auth.Principal(subject=claims["sub"], scopes=frozenset(claims.get("scope", "").split()),
                          token_id=claims.get("jti"), expires_at=claims.get("exp"),
                          client_id=claims.get("client_id"))


def create_app():
    """The order app whose single verification function trusts every token."""
    from services.order.app import create_app as create_order_app

    auth.verify_bearer_token = _unverified  # authenticate() looks it up at call time
    return create_order_app()
