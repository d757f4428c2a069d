"""The settings every process shares, from environment variables only (12-factor).

Declared once each (:mod:`shared.settings`), validated at start:

* :class:`Settings` - what every service reads (APP_ENV, DATABASE_URL, SQS,
  logging, token verification, CORS, rate-limit storage); build it with
  :func:`load_settings`, which also collects the peers' base URLs;
* :class:`WorkerSettings` - the worker process (CONSUMER_*, WORKER_*, OUTBOX_*);
* :class:`BreakerThresholds` - circuit breakers (BREAKER_*), globally and per
  named breaker (``BREAKER_<NAME>_*``).

Service-specific settings live in each service's ``settings.py``. A missing or
invalid variable raises :class:`ConfigError` naming the variable.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Literal

from pydantic import Field, SecretStr, field_validator

from shared.messaging.retention import DEFAULT_INTERVAL_S, DEFAULT_RETENTION_DAYS, MIN_RETENTION_DAYS
from shared.settings import Bool, CommaList, ConfigError, EnvSettings, Float, Int, var

__all__ = ["ConfigError", "Settings", "WorkerSettings", "BreakerThresholds", "BreakerOverride",
           "load_settings"]

from shared.services import SERVICE_NAMES, service

SQS_EMULATOR_PORT = 9324
# Development only: the revocation feed's shared key says what it is; production must set it.
DEV_REVOCATION_FEED_KEY = "dev-only-insecure-revocation-feed-key"


class Settings(EnvSettings):
    """The settings every service reads. Build with :func:`load_settings`."""

    app_env: Literal["development", "test", "production"] = var(
        "APP_ENV", "development", "deployment kind; production refuses development defaults")
    database_url: str = var(
        "DATABASE_URL", description="PostgreSQL URL (may hold a password); each service uses its own "
                                    "schema `<service>_svc`",
        shown_default="required (`make run`/`make test`: an embedded server)", secret=True)
    sqs_endpoint_url: str | None = var(
        "SQS_ENDPOINT_URL", None, "ElasticMQ, moto or fauxqs endpoint; unset means real AWS",
        shown_default="AWS (`make run`: moto on 127.0.0.1:9324)")
    aws_region: str = var("AWS_REGION", "us-east-1", "region for SQS (and SES)")
    queue_prefix: str = var("QUEUE_PREFIX", "", "prefix on every queue name (environments sharing "
                                                "an account)")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = var("LOG_LEVEL", "INFO", "log threshold")
    log_format: Literal["json", "console"] = var(
        "LOG_FORMAT", "json", "`json` for machines, `console` for people (`make run` uses console)")
    jwt_issuer: str = var("JWT_ISSUER", "order-platform-dev",
                          "issued (auth service) and checked (every service) on every token")
    jwt_audience: str = var("JWT_AUDIENCE", "order-platform", "audience issued and checked on every token")
    db_pool_min: Int = var("DB_POOL_MIN", 1, "database connections kept open per process", ge=0)
    db_pool_max: Int = var("DB_POOL_MAX", 10, "database connections per process at most "
                                              "(at least DB_POOL_MIN)", ge=1)
    auth_jwks_url: str | None = var(
        "AUTH_JWKS_URL", None, "where token-signing keys are fetched (it or AUTH_URL is required "
                               "in production)", shown_default="`AUTH_URL` + `/.well-known/jwks.json`")
    jwks_cache_ttl_s: Float = var("AUTH_JWKS_CACHE_TTL_S", 300.0, "JWKS cache lifetime", ge=1.0)
    jwks_min_refresh_s: Float = var(
        "AUTH_JWKS_MIN_REFRESH_S", 10.0, "least time between JWKS refreshes on an unknown `kid` "
                                         "(keep below AUTH_KEY_ACTIVATION_DELAY_S)", ge=0.0)
    # The access-token deny-list (shared/revocations.py) and the verified-token cache.
    revocation_feed_key: SecretStr = var(
        "AUTH_REVOCATION_FEED_KEY", SecretStr(DEV_REVOCATION_FEED_KEY),
        "shared key of the auth service's internal revocation feed (every service, the same)",
        secret=True, shown_default="a marked development key", production="required")
    revocation_wait_s: Float = var("AUTH_REVOCATION_WAIT_S", 15.0, "how long a revocation-feed "
                                   "request waits for a new entry (long poll)", ge=0.0, le=20.0)
    revocation_poll_s: Float = var("AUTH_REVOCATION_POLL_S", 1.0, "least time between two feed "
                                   "requests that brought nothing (and the pause after a failure)",
                                   ge=0.05, le=60.0)
    revocation_max_staleness_s: Float = var(
        "AUTH_REVOCATION_MAX_STALENESS_S", 60.0, "feed silent this long: logged and "
        "`auth_revocations_stale` set (tokens are still accepted against the last set)", ge=1.0)
    token_cache_size: Int = var("AUTH_TOKEN_CACHE_SIZE", 10_000, "verified tokens kept per process "
                                "until they expire (0: verify every request)", ge=0, le=1_000_000)
    cors_allowed_origins: CommaList = var(
        "CORS_ALLOWED_ORIGINS", (), "comma-separated browser origins, e.g. `https://shop.example` "
                                    "(`*` refused in production)", shown_default="empty (no CORS)")
    docs_token_url: str | None = var(
        "DOCS_TOKEN_URL", None, "the token endpoint the OpenAPI document's OAuth2 scheme names, as "
                                "a browser on the docs page reaches it",
        shown_default="`AUTH_URL` + `/oauth/token`")
    rate_limit_storage_uri: str | None = var(
        "RATE_LIMIT_STORAGE_URI", None, "shared rate-limit storage, e.g. `redis://redis:6379/0`",
        shown_default="`memory://` (per process)")
    # Not environment variables: who this process is, and the peers load_settings found.
    service: str = ""
    peers: dict[str, str] = Field(default_factory=dict)
    env: Mapping[str, str] = Field(default_factory=dict, repr=False)

    @field_validator("database_url")
    @classmethod
    def _postgres(cls, value: str) -> str:
        if not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql:// URL")
        return value

    @field_validator("docs_token_url")
    @classmethod
    def _token_url(cls, value: str | None) -> str | None:
        # It ends up in the docs page's Content-Security-Policy: a URL and nothing else.
        if value is not None and not re.fullmatch(r"https?://[A-Za-z0-9.\-\[\]:]+(/[A-Za-z0-9._~/\-]*)?",
                                                  value):
            raise ValueError(f"not an http(s) URL: {value!r}")
        return value

    @field_validator("cors_allowed_origins")
    @classmethod
    def _origins(cls, origins: tuple[str, ...]) -> tuple[str, ...]:
        origins = tuple(o.rstrip("/") for o in origins)
        for origin in origins:
            if origin == "*":
                continue  # refused in production by check()
            scheme, _, rest = origin.partition("://")
            if scheme not in ("http", "https") or not rest or "/" in rest:
                raise ValueError(f"not an origin (scheme://host[:port]): {origin!r}")
        return origins

    def check(self, app_env: str) -> None:
        if self.db_pool_max < max(1, self.db_pool_min):
            raise ConfigError("DB_POOL_MAX", f"must be >= {max(1, self.db_pool_min)}, got {self.db_pool_max}")
        if self.app_env == "production" and "*" in self.cors_allowed_origins:
            raise ConfigError("CORS_ALLOWED_ORIGINS", "'*' is not allowed in production; list origins")

    @property
    def schema(self) -> str:
        """The PostgreSQL schema this service owns."""
        return f"{self.service}_svc"

    @property
    def producer(self) -> str:
        """The envelope ``producer`` name, e.g. ``order-service``."""
        return f"{self.service}-service"

    def service_env(self, suffix: str) -> str:
        """The name of a service-specific variable, e.g. ``ORDER_`` + suffix."""
        return f"{self.service.upper()}_{suffix}"


class WorkerSettings(EnvSettings):
    """What a worker process reads: its consumers, its outbox relay, its shutdown."""

    consumer_wait_time_s: Int = var("CONSUMER_WAIT_TIME_S", 20, "SQS long-poll wait (`make run` uses 5 "
                                                               "so Ctrl-C is quick)", ge=0, le=20)
    consumer_max_messages: Int = var("CONSUMER_MAX_MESSAGES", 10, "messages per receive", ge=1, le=10)
    consumer_pollers: Int = var("CONSUMER_POLLERS", 2, "concurrent receive loops per queue per worker",
                                ge=1, le=50)
    consumer_retry_base_s: Float = var("CONSUMER_RETRY_BASE_S", 2.0,
                                       "first visibility backoff after a transient failure", ge=0.0)
    consumer_retry_cap_s: Float = var("CONSUMER_RETRY_CAP_S", 900.0, "longest visibility backoff",
                                      ge=0.0)
    consumer_restart_cap_s: Float = var("CONSUMER_RESTART_CAP_S", 30.0,
                                        "longest wait before a crashed receive loop is restarted", ge=0.0)
    consumer_restart_limit: Int = var("CONSUMER_RESTART_LIMIT", 10, "crashes in a row after which a "
                                      "consumer gives up and the worker exits 1", ge=0, le=1000)
    consumer_batch_transaction: Bool = var(
        "CONSUMER_BATCH_TRANSACTION", False, "one database transaction per received batch, a "
        "savepoint per message (fewer commits; locks held for the whole batch)")
    relay_enabled: Bool = var("OUTBOX_RELAY_ENABLED", True, "run the outbox relay in this worker")
    relay_poll_interval_s: Float = var("OUTBOX_POLL_INTERVAL_S", 1.0,
                                       "relay polling fallback when no NOTIFY arrives", ge=0.0)
    relay_retry_max_s: Float = var("OUTBOX_RETRY_MAX_S", 10.0, "cap of the relay's send backoff", ge=0.0)
    shutdown_timeout_s: Float = var("WORKER_SHUTDOWN_TIMEOUT_S", 25.0, "drain deadline after SIGTERM",
                                    ge=0.0)
    metrics_port: Int = var("WORKER_METRICS_PORT", 0, "serve the worker's Prometheus metrics on "
                                                      "`WORKER_METRICS_HOST`:port (0: off)", ge=0, le=65535)
    metrics_host: str = var("WORKER_METRICS_HOST", "127.0.0.1", "address the worker's metrics "
                            "endpoint binds (`0.0.0.0` in a container, so Prometheus can scrape it)")
    queue_metrics_interval_s: Float = var("WORKER_QUEUE_METRICS_INTERVAL_S", 30.0,
                                          "how often the worker exports its queues' depth and its "
                                          "outbox's pending rows (0: off)", ge=0.0)
    # shared.messaging.retention explains the floor: two SQS retention periods and a day.
    retention_days: Int = var("MESSAGING_RETENTION_DAYS", DEFAULT_RETENTION_DAYS,
                              "days published outbox rows and inbox rows are kept "
                              "(at least two SQS retention periods)", ge=MIN_RETENTION_DAYS)
    retention_interval_s: Float = var("MESSAGING_RETENTION_INTERVAL_S", DEFAULT_INTERVAL_S,
                                      "how often the messaging retention job runs", ge=1.0)


DEFAULT_FAIL_MAX = 5
DEFAULT_RESET_TIMEOUT_S = 10.0


class BreakerThresholds(EnvSettings):
    """Every named circuit breaker's thresholds (BREAKER_FAIL_MAX, BREAKER_RESET_TIMEOUT_S)."""

    fail_max: Int = var("BREAKER_FAIL_MAX", DEFAULT_FAIL_MAX,
                        "consecutive transient failures before a breaker opens", ge=1)
    reset_timeout_s: Float = var("BREAKER_RESET_TIMEOUT_S", DEFAULT_RESET_TIMEOUT_S,
                                 "seconds an open breaker waits before one trial call", ge=0.1)


class BreakerOverride(EnvSettings):
    """One named breaker's own thresholds; unset ones fall back to :class:`BreakerThresholds`."""

    fail_max: Int | None = var("BREAKER_<NAME>_FAIL_MAX", None, "the breaker `<name>`'s own failure "
                               "threshold (e.g. `BREAKER_INVENTORY_FAIL_MAX`)", ge=1,
                               shown_default="`BREAKER_FAIL_MAX`")
    reset_timeout_s: Float | None = var("BREAKER_<NAME>_RESET_TIMEOUT_S", None,
                                        "the breaker `<name>`'s own reset timeout", ge=0.1,
                                        shown_default="`BREAKER_RESET_TIMEOUT_S`")


def load_settings(service: str, env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the common settings for ``service`` from ``env``."""
    env = dict(os.environ if env is None else env)
    base = Settings.from_env(env)
    peers = {
        name: env[f"{name.upper()}_URL"]
        for name in SERVICE_NAMES
        if env.get(f"{name.upper()}_URL")
    }
    return base.model_copy(update={"service": service, "peers": peers, "env": env})


def peer_url(settings: Settings, name: str) -> str:
    """Base URL of peer ``name``: its ``<NAME>_URL``, required in production, else its local port."""
    url = settings.peers.get(name)
    if url is not None:
        return url
    peer = service(name)
    if settings.app_env == "production":
        raise ConfigError(peer.url_variable, "is required in production")
    return peer.local_url()
