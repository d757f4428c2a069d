"""The verifier's verified-token cache and its deny-list check (no I/O: the feed is fed by hand)."""

from __future__ import annotations

import os
import time

import pytest

from devstack.tokens import DevSigner
from shared.auth import CLOCK_SKEW_S, InvalidToken, TokenSettings, verify_bearer_token
from shared.revocations import FeedSettings, RevocationList
from shared.token_cache import VerifiedTokens
from tests.support.tokens import StaticKeys

SIGNER = DevSigner("issuer-c", "audience-c", kid="cache-key")
OTHER = DevSigner("issuer-c", "audience-c", kid="cache-key")  # same kid, another key pair


def _revocations() -> RevocationList:
    revocations = RevocationList(FeedSettings("http://127.0.0.1:9", "key"))
    revocations._pid = os.getpid()  # fed by hand below: no feed thread
    return revocations


def _settings(cache_size: int = 100) -> TokenSettings:
    return TokenSettings(SIGNER.issuer, SIGNER.audience, StaticKeys(SIGNER.jwks()), _revocations(),
                         VerifiedTokens(cache_size, CLOCK_SKEW_S))


def _token(signer=SIGNER, jti: str = "jti-1", ttl_s: int = 600) -> str:
    claims = signer.claims("customer-1", ["orders:read"], ttl_s)
    claims["jti"] = jti
    return signer.sign(claims)


def _deny(settings: TokenSettings, jti: str, exp: int) -> None:
    revocations = settings.revocations
    revocations._apply({"revocations": [{"jti": jti, "exp": exp}], "cursor": revocations._cursor + 1})


def test_a_verified_token_is_cached_and_a_revoked_one_refused_even_from_the_cache():
    settings = _settings()
    token = _token()
    principal = verify_bearer_token(token, settings)
    assert len(settings.cache) == 1
    assert verify_bearer_token(token, settings) is principal  # the cached principal itself
    _deny(settings, "jti-1", principal.expires_at)
    with pytest.raises(InvalidToken, match="revoked"):
        verify_bearer_token(token, settings)
    other = _token(jti="jti-2")
    assert verify_bearer_token(other, settings).token_id == "jti-2"  # only that jti is denied


def test_another_string_with_a_cached_jti_is_verified_in_full_and_refused():
    settings = _settings()
    verify_bearer_token(_token(jti="shared"), settings)
    forged = _token(OTHER, jti="shared")  # same kid and jti, signed with another key
    with pytest.raises(InvalidToken):
        verify_bearer_token(forged, settings)
    header, payload, signature = _token(jti="shared").split(".")
    with pytest.raises(InvalidToken):
        verify_bearer_token(f"{header}.{payload}.{signature[:-4]}AAAA", settings)


def test_the_cache_is_a_bounded_lru_and_never_outlives_the_token():
    cache = VerifiedTokens(2, leeway_s=0)
    now = int(time.time())
    keys = [cache.key(f"token-{n}") for n in range(3)]
    cache.put(keys[0], "p0", "k", now + 60)
    cache.put(keys[1], "p1", "k", now + 60)
    assert cache.get(keys[0]) == ("p0", "k")  # now the most recently used
    cache.put(keys[2], "p2", "k", now + 60)
    assert cache.get(keys[1]) is None and cache.get(keys[0]) is not None and len(cache) == 2
    cache.put(keys[1], "expired", "k", now - 1)
    assert cache.get(keys[1]) is None
    assert VerifiedTokens(0, 0).put(keys[0], "p", "k", now + 60) is None
    assert len(VerifiedTokens(0, 0)) == 0


def test_a_cached_token_whose_key_was_withdrawn_is_verified_again():
    keys = StaticKeys(SIGNER.jwks())
    settings = TokenSettings(SIGNER.issuer, SIGNER.audience, keys, None, VerifiedTokens(10, CLOCK_SKEW_S))
    token = _token()
    verify_bearer_token(token, settings)
    withdrawn = TokenSettings(SIGNER.issuer, SIGNER.audience, StaticKeys({"keys": []}), None,
                              settings.cache)
    with pytest.raises(InvalidToken):
        verify_bearer_token(token, withdrawn)


def test_deny_list_entries_are_dropped_once_their_token_has_expired():
    revocations = _revocations()
    now = int(time.time())
    revocations._apply({"revocations": [{"jti": "old", "exp": now - CLOCK_SKEW_S - 1},
                                        {"jti": "live", "exp": now + 60}], "cursor": 2})
    assert revocations.is_revoked("live") and not revocations.is_revoked("old")
    revocations._apply({"revocations": [], "cursor": 2, "reset": True})
    assert not revocations.is_revoked("live")  # a reset replaces the set
