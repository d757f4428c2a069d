"""Test tokens: one RS256 key pair for the whole run, served as a JWKS over HTTP.

Every service under test verifies tokens exactly as in production (RS256 via
``AUTH_JWKS_URL``); the suite points that URL at :class:`JwksServer`, which
serves :data:`TEST_SIGNER`'s public key. Tests that need the real auth
service's keys point the URL at an auth API instead. The signing and the
server are :mod:`devstack.tokens` (the benchmarks use them too); this module
adds the suite's key and its defaults.
"""

from __future__ import annotations

from collections.abc import Callable

from devstack import tokens as _tokens
from devstack.tokens import SERVICE_CLIENTS, SERVICE_TOKEN_TTL_S, DevSigner, StaticKeys, mint_dev_token
from shared.auth import TokenSettings

__all__ = ["AUDIENCE", "ISSUER", "SERVICE_CLIENTS", "SERVICE_TOKEN_TTL_S", "TEST_SIGNER", "DevSigner",
           "JwksServer", "StaticKeys", "mint_dev_token", "static_settings"]

ISSUER = "order-platform-dev"
AUDIENCE = "order-platform"
TEST_SIGNER = DevSigner(ISSUER, AUDIENCE, kid="test-key-1")


def static_settings(signer: DevSigner = TEST_SIGNER) -> TokenSettings:
    """TokenSettings that trust exactly ``signer`` (unit tests)."""
    return _tokens.static_settings(signer)


class JwksServer(_tokens.JwksServer):
    """:class:`devstack.tokens.JwksServer` whose token endpoint signs with :data:`TEST_SIGNER` by default."""

    def __init__(self, documents: Callable[[], dict], signer: DevSigner | None = None):
        super().__init__(documents, signer or TEST_SIGNER)
