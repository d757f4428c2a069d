"""Auth-service settings (``AUTH_*`` variables), and the one place its processes read settings.

Defaults suit production except where marked: the key-encryption key has a
clearly-marked development default that ``APP_ENV=production`` refuses.
:func:`load` validates the common settings and :class:`AuthSettings` together
(the app factory, the CLI and the demo bootstrap call it).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Annotated

from limits import parse_many
from pydantic import AfterValidator, BeforeValidator

from shared.auth import SCOPES
from shared.config import ConfigError, Settings, load_settings
from shared.settings import EnvSettings, Int, SecretKeys, fernet_keys, var

SERVICE = "auth"
# Development only: a Fernet key that says what it is. Production must set
# AUTH_KEY_ENCRYPTION_KEYS (see README "Auth service").
DEV_KEY_ENCRYPTION_KEY = base64.urlsafe_b64encode(b"dev-only-insecure-key-encryption").decode()

DEFAULT_ACCESS_TOKEN_TTL_S = 15 * 60
DEFAULT_REFRESH_TOKEN_TTL_S = 30 * 24 * 3600
DEFAULT_REFRESH_FAMILY_MAX_S = 90 * 24 * 3600
# Customers get these scopes (those that exist in shared.auth.SCOPES) unless
# AUTH_CUSTOMER_SCOPES says otherwise. webhooks:manage is safe to hand out: a
# subscription is its owner's, and a customer's receives only their own orders' events.
CUSTOMER_SCOPE_CANDIDATES = ("orders:read", "orders:write", "notifications:read", "webhooks:manage")
DEFAULT_CUSTOMER_SCOPES = tuple(s for s in CUSTOMER_SCOPE_CANDIDATES if s in SCOPES)
# Signing keys: RSA size, and how long each auth process keeps the active key
# before asking the database again (a rotation reaches every process within it).
DEFAULT_RSA_BITS = 2048
DEFAULT_SIGNING_KEY_CACHE_S = 10
# A rotated-in key is published this long before it signs, so verifiers that
# cached the JWKS a moment earlier need no refresh-on-unknown-kid at all.
DEFAULT_KEY_ACTIVATION_DELAY_S = 30
# Verifiers accept tokens up to this much past exp (shared.auth.CLOCK_SKEW_S).
VERIFIER_CLOCK_SKEW_S = 30
MAX_PASSWORD_LENGTH = 1024


def _rate(value: str) -> str:
    try:
        parse_many(value)
    except ValueError:
        raise ValueError(f"must be a rate limit such as '100/minute', got {value!r}") from None
    return value


def _scopes(raw) -> tuple[str, ...]:
    scopes = tuple(raw.split()) if isinstance(raw, str) else tuple(raw)
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        raise ValueError(f"unknown scope(s): {', '.join(unknown)}")
    return scopes



Rate = Annotated[str, AfterValidator(_rate)]
Scopes = Annotated[tuple[str, ...], BeforeValidator(_scopes)]
FernetKeys = fernet_keys("generate one with `python -m services.auth.cli new-encryption-key`")


class AuthSettings(EnvSettings):
    """What the auth service reads from the environment."""

    access_token_ttl_s: Int = var("AUTH_ACCESS_TOKEN_TTL_S", DEFAULT_ACCESS_TOKEN_TTL_S,
                                  "access token lifetime", ge=30, le=24 * 3600)
    refresh_token_ttl_s: Int = var("AUTH_REFRESH_TOKEN_TTL_S", DEFAULT_REFRESH_TOKEN_TTL_S,
                                   "refresh token lifetime (each use rotates it)", ge=60)
    refresh_family_max_s: Int = var("AUTH_REFRESH_FAMILY_MAX_S", DEFAULT_REFRESH_FAMILY_MAX_S,
                                    "longest a chain of rotated refresh tokens lives", ge=60)
    key_encryption_keys: FernetKeys = var(
        "AUTH_KEY_ENCRYPTION_KEYS", SecretKeys((DEV_KEY_ENCRYPTION_KEY,)),
        "Fernet keys encrypting the signing keys at rest; the first encrypts, all decrypt",
        secret=True, shown_default="a marked development key", production="required")
    rsa_bits: Int = var("AUTH_RSA_BITS", DEFAULT_RSA_BITS, "size of new RSA signing keys", ge=2048, le=4096)
    signing_key_cache_s: Int = var("AUTH_SIGNING_KEY_CACHE_S", DEFAULT_SIGNING_KEY_CACHE_S,
                                   "how long a process keeps the active signing key", ge=0, le=300)
    key_activation_delay_s: Int = var("AUTH_KEY_ACTIVATION_DELAY_S", DEFAULT_KEY_ACTIVATION_DELAY_S,
                                      "a rotated-in key is published this long before it signs",
                                      ge=0, le=3600)
    token_rate_per_client: Rate = var("AUTH_TOKEN_RATE_LIMIT_PER_CLIENT", "1200/minute",
                                      "token requests per authenticated client")
    token_rate_per_ip: Rate = var("AUTH_TOKEN_RATE_LIMIT_PER_IP", "600/minute",
                                  "token and revocation requests per IP address")
    register_rate_per_ip: Rate = var("AUTH_REGISTER_RATE_LIMIT_PER_IP", "30/hour",
                                     "customer registrations per IP address")
    login_lock_threshold: Int = var("AUTH_LOGIN_LOCK_THRESHOLD", 5,
                                    "failed logins before an account is locked", ge=1)
    login_lock_base_s: Int = var("AUTH_LOGIN_LOCK_BASE_S", 30, "first lock duration (doubles each time)",
                                 ge=1)
    login_lock_max_s: Int = var("AUTH_LOGIN_LOCK_MAX_S", 3600, "longest lock", ge=1)
    argon2_time_cost: Int = var("AUTH_ARGON2_TIME_COST", 3, "Argon2id passes", ge=1)
    argon2_memory_kib: Int = var("AUTH_ARGON2_MEMORY_KIB", 64 * 1024, "Argon2id memory per hash", ge=8)
    argon2_parallelism: Int = var("AUTH_ARGON2_PARALLELISM", 4, "Argon2id lanes", ge=1)
    password_min_length: Int = var("AUTH_PASSWORD_MIN_LENGTH", 10, "shortest password accepted",
                                   ge=8, le=128)
    password_max_length: Int = var("AUTH_PASSWORD_MAX_LENGTH", 256, "longest password accepted "
                                   "(at least AUTH_PASSWORD_MIN_LENGTH)", ge=8, le=MAX_PASSWORD_LENGTH)
    customer_scopes: Scopes = var(
        "AUTH_CUSTOMER_SCOPES", DEFAULT_CUSTOMER_SCOPES, "space-separated scopes every customer account gets",
        shown_default="`" + " ".join(DEFAULT_CUSTOMER_SCOPES) + "`")
    revocation_feed_max_waiters: Int = var(
        "AUTH_REVOCATION_FEED_MAX_WAITERS", 4, "revocation-feed requests per API process that may "
        "long-poll at once (each holds a thread); the others are answered at once", ge=1, le=64)
    trusted_proxy_hops: Int = var("AUTH_TRUSTED_PROXY_HOPS", 0, "reverse proxies setting "
                                  "X-Forwarded-For in front of the API (per-IP limits)", ge=0, le=5)

    def check(self, app_env: str) -> None:
        if self.password_max_length < self.password_min_length:
            raise ConfigError("AUTH_PASSWORD_MAX_LENGTH",
                              f"must be between {self.password_min_length} and {MAX_PASSWORD_LENGTH}, "
                              f"got {self.password_max_length}")
        if app_env == "production":
            if not self.was_set("key_encryption_keys"):
                raise ConfigError("AUTH_KEY_ENCRYPTION_KEYS", "is required but not set")
            if DEV_KEY_ENCRYPTION_KEY in self.key_encryption_keys:
                raise ConfigError("AUTH_KEY_ENCRYPTION_KEYS",
                                  "the development default may not be used in production")

    @property
    def key_publish_grace_s(self) -> int:
        """How long a replaced key stays in the JWKS after its successor starts signing."""
        return self.signing_key_cache_s + self.access_token_ttl_s + VERIFIER_CLOCK_SKEW_S


def load(env: Mapping[str, str] | None = None) -> tuple[Settings, AuthSettings]:
    """The common settings and the auth service's own, from ``env`` (default: the process's)."""
    settings = load_settings(SERVICE, env)
    return settings, AuthSettings.from_env(settings.env, app_env=settings.app_env)
