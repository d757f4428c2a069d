"""Auth-service settings (``AUTH_*`` variables), validated at start like the common ones.

Defaults suit production except where marked: the key-encryption key has a
clearly-marked development default that ``APP_ENV=production`` refuses.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass

from limits import parse_many

from shared.auth import SCOPES
from shared.config import ConfigError, env_int, env_str

# Development only: a Fernet key that says what it is. Production must set
# AUTH_KEY_ENCRYPTION_KEYS (see README "Auth service").
DEV_KEY_ENCRYPTION_KEY = base64.urlsafe_b64encode(b"dev-only-insecure-key-encryption").decode()

DEFAULT_ACCESS_TOKEN_TTL_S = 15 * 60
DEFAULT_REFRESH_TOKEN_TTL_S = 30 * 24 * 3600
DEFAULT_REFRESH_FAMILY_MAX_S = 90 * 24 * 3600
# Customers get these scopes (those that exist in shared.auth.SCOPES) unless
# AUTH_CUSTOMER_SCOPES says otherwise.
CUSTOMER_SCOPE_CANDIDATES = ("orders:read", "orders:write", "notifications:read")
# Signing keys: RSA size, and how long each auth process keeps the active key
# before asking the database again (a rotation reaches every process within it).
DEFAULT_RSA_BITS = 2048
DEFAULT_SIGNING_KEY_CACHE_S = 10
# A rotated-in key is published this long before it signs, so verifiers that
# cached the JWKS a moment earlier need no refresh-on-unknown-kid at all.
DEFAULT_KEY_ACTIVATION_DELAY_S = 30
# Verifiers accept tokens up to this much past exp (shared.auth.CLOCK_SKEW_S).
VERIFIER_CLOCK_SKEW_S = 30


@dataclass(frozen=True)
class AuthConfig:
    """What the auth service reads from the environment."""

    access_token_ttl_s: int
    refresh_token_ttl_s: int
    refresh_family_max_s: int
    key_encryption_keys: tuple[str, ...]
    rsa_bits: int
    signing_key_cache_s: int
    key_activation_delay_s: int
    token_rate_per_client: str
    token_rate_per_ip: str
    register_rate_per_ip: str
    login_lock_threshold: int
    login_lock_base_s: int
    login_lock_max_s: int
    argon2_time_cost: int
    argon2_memory_kib: int
    argon2_parallelism: int
    password_min_length: int
    password_max_length: int
    customer_scopes: tuple[str, ...]
    trusted_proxy_hops: int

    @property
    def key_publish_grace_s(self) -> int:
        """How long a replaced key stays in the JWKS after its successor starts signing."""
        return self.signing_key_cache_s + self.access_token_ttl_s + VERIFIER_CLOCK_SKEW_S


def _rate(env: Mapping[str, str], name: str, default: str) -> str:
    value = env_str(env, name, default)
    try:
        parse_many(value)
    except ValueError:
        raise ConfigError(name, f"must be a rate limit such as '100/minute', got {value!r}") from None
    return value


def _scopes(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    scopes = tuple(raw.split())
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        raise ConfigError(name, f"unknown scope(s): {', '.join(unknown)}")
    return scopes


def _fernet_keys(env: Mapping[str, str], app_env: str) -> tuple[str, ...]:
    name = "AUTH_KEY_ENCRYPTION_KEYS"
    raw = env_str(env, name, DEV_KEY_ENCRYPTION_KEY if app_env != "production" else None)
    keys = tuple(k.strip() for k in raw.split(",") if k.strip())
    for key in keys:
        try:
            decoded = base64.urlsafe_b64decode(key.encode())
        except ValueError:
            decoded = b""
        if len(decoded) != 32:
            raise ConfigError(name, "each key must be a Fernet key (32 url-safe base64 bytes); "
                                    "generate one with `python -m services.auth.cli new-encryption-key`")
    if app_env == "production" and DEV_KEY_ENCRYPTION_KEY in keys:
        raise ConfigError(name, "the development default may not be used in production")
    return keys


def load_auth_config(env: Mapping[str, str], app_env: str = "development") -> AuthConfig:
    """Read and validate the ``AUTH_*`` variables."""
    default_customer = tuple(s for s in CUSTOMER_SCOPE_CANDIDATES if s in SCOPES)
    min_len = env_int(env, "AUTH_PASSWORD_MIN_LENGTH", 10, minimum=8, maximum=128)
    return AuthConfig(
        access_token_ttl_s=env_int(env, "AUTH_ACCESS_TOKEN_TTL_S", DEFAULT_ACCESS_TOKEN_TTL_S,
                                   minimum=30, maximum=24 * 3600),
        refresh_token_ttl_s=env_int(env, "AUTH_REFRESH_TOKEN_TTL_S", DEFAULT_REFRESH_TOKEN_TTL_S,
                                    minimum=60),
        refresh_family_max_s=env_int(env, "AUTH_REFRESH_FAMILY_MAX_S", DEFAULT_REFRESH_FAMILY_MAX_S,
                                     minimum=60),
        key_encryption_keys=_fernet_keys(env, app_env),
        rsa_bits=env_int(env, "AUTH_RSA_BITS", DEFAULT_RSA_BITS, minimum=2048, maximum=4096),
        signing_key_cache_s=env_int(env, "AUTH_SIGNING_KEY_CACHE_S", DEFAULT_SIGNING_KEY_CACHE_S,
                                    minimum=0, maximum=300),
        key_activation_delay_s=env_int(env, "AUTH_KEY_ACTIVATION_DELAY_S",
                                       DEFAULT_KEY_ACTIVATION_DELAY_S, minimum=0, maximum=3600),
        token_rate_per_client=_rate(env, "AUTH_TOKEN_RATE_LIMIT_PER_CLIENT", "1200/minute"),
        token_rate_per_ip=_rate(env, "AUTH_TOKEN_RATE_LIMIT_PER_IP", "600/minute"),
        register_rate_per_ip=_rate(env, "AUTH_REGISTER_RATE_LIMIT_PER_IP", "30/hour"),
        login_lock_threshold=env_int(env, "AUTH_LOGIN_LOCK_THRESHOLD", 5, minimum=1),
        login_lock_base_s=env_int(env, "AUTH_LOGIN_LOCK_BASE_S", 30, minimum=1),
        login_lock_max_s=env_int(env, "AUTH_LOGIN_LOCK_MAX_S", 3600, minimum=1),
        argon2_time_cost=env_int(env, "AUTH_ARGON2_TIME_COST", 3, minimum=1),
        argon2_memory_kib=env_int(env, "AUTH_ARGON2_MEMORY_KIB", 64 * 1024, minimum=8),
        argon2_parallelism=env_int(env, "AUTH_ARGON2_PARALLELISM", 4, minimum=1),
        password_min_length=min_len,
        password_max_length=env_int(env, "AUTH_PASSWORD_MAX_LENGTH", 256, minimum=min_len,
                                    maximum=1024),
        customer_scopes=_scopes(env, "AUTH_CUSTOMER_SCOPES", default_customer),
        trusted_proxy_hops=env_int(env, "AUTH_TRUSTED_PROXY_HOPS", 0, minimum=0, maximum=5),
    )
