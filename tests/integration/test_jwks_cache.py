"""JwksCache against a real HTTP JWKS endpoint: caching, refresh on unknown kid, outages."""

from __future__ import annotations

import pytest

from devstack.tokens import DevSigner, mint_dev_token
from shared.auth import InvalidToken, TokenSettings, verify_bearer_token
from shared.jwks import JwksCache, KeysUnavailable
from shared.resilience import BreakerRegistry
from tests.support.tokens import AUDIENCE, ISSUER, JwksServer


@pytest.fixture
def signers():
    return [DevSigner(ISSUER, AUDIENCE, kid="k-old")]


@pytest.fixture
def server(signers):
    srv = JwksServer(lambda: {"keys": [k for s in signers for k in s.jwks()["keys"]]}).start()
    yield srv
    srv.stop()


def _cache(server, **kwargs):
    kwargs.setdefault("min_refresh_interval_s", 0.0)
    registry = BreakerRegistry({"BREAKER_AUTH_JWKS_FAIL_MAX": "3", "BREAKER_AUTH_JWKS_RESET_TIMEOUT_S": "30"})
    return JwksCache(server.url, registry, **kwargs), registry


def test_keys_are_fetched_once_and_cached(server, signers):
    cache, _ = _cache(server)
    settings = TokenSettings(ISSUER, AUDIENCE, cache)
    token = mint_dev_token(signers[0], "c-1", ["orders:read"])
    for _ in range(5):
        assert verify_bearer_token(token, settings).subject == "c-1"
    assert server.hits == 1


def test_an_unknown_kid_refreshes_the_keys_a_rotation_needs_no_restart(server, signers):
    cache, _ = _cache(server)
    settings = TokenSettings(ISSUER, AUDIENCE, cache)
    verify_bearer_token(mint_dev_token(signers[0], "c-1", ["orders:read"]), settings)
    signers.append(DevSigner(ISSUER, AUDIENCE, kid="k-new"))  # the auth service rotated
    assert verify_bearer_token(mint_dev_token(signers[1], "c-1", ["orders:read"]), settings).subject == "c-1"
    assert server.hits == 2


def test_refreshes_on_unknown_kids_are_rate_limited(server, signers):
    cache, _ = _cache(server, min_refresh_interval_s=60)
    settings = TokenSettings(ISSUER, AUDIENCE, cache)
    verify_bearer_token(mint_dev_token(signers[0], "c-1", ["orders:read"]), settings)
    stranger = DevSigner(ISSUER, AUDIENCE, kid="k-forged")
    for _ in range(10):  # garbage kids must not make us hammer the auth service
        with pytest.raises(InvalidToken):
            verify_bearer_token(mint_dev_token(stranger, "c-1", ["orders:read"]), settings)
    assert server.hits == 1


def test_an_outage_keeps_the_cached_keys_working(server, signers):
    cache, _ = _cache(server, ttl_s=0.0)  # every call wants a refresh
    settings = TokenSettings(ISSUER, AUDIENCE, cache)
    token = mint_dev_token(signers[0], "c-1", ["orders:read"])
    verify_bearer_token(token, settings)
    server.failing = True
    assert verify_bearer_token(token, settings).subject == "c-1"


def test_no_keys_at_all_is_unavailable_not_invalid_and_the_breaker_opens(server, signers):
    server.failing = True
    cache, registry = _cache(server)
    settings = TokenSettings(ISSUER, AUDIENCE, cache)
    token = mint_dev_token(signers[0], "c-1", ["orders:read"])
    for _ in range(4):
        with pytest.raises(KeysUnavailable):
            verify_bearer_token(token, settings)
    assert registry.snapshot()["auth-jwks"]["state"] == "open"
    hits = server.hits
    with pytest.raises(KeysUnavailable) as info:
        verify_bearer_token(token, settings)
    assert server.hits == hits  # open breaker: no call at all
    assert info.value.retry_after_s > 0


def test_a_service_token_is_fetched_once_and_refused_credentials_say_so(server):
    from shared.service_token import ServiceToken, ServiceTokenError
    from tests.support.tokens import SERVICE_CLIENTS, static_settings

    good = ServiceToken(server.base_url, "order-service", SERVICE_CLIENTS["order-service"],
                        "inventory:reserve", BreakerRegistry())
    hits = server.hits
    header = good.header()
    assert good.header() == header and server.hits == hits + 1  # cached
    principal = verify_bearer_token(header.split()[1], static_settings())
    assert (principal.subject, principal.scopes) == ("order-service", frozenset({"inventory:reserve"}))
    good.invalidate()
    good.header()
    assert server.hits == hits + 2
    bad = ServiceToken(server.base_url, "order-service", "wrong", "inventory:reserve", BreakerRegistry())
    with pytest.raises(ServiceTokenError):
        bad.get()
