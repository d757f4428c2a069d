"""The notification service's own settings (``NOTIFICATION_*``), validated at start.

Read with :func:`notification_settings` from the common :class:`shared.config.Settings`;
a missing or invalid variable raises :class:`shared.config.ConfigError` naming it.
"""

from __future__ import annotations

import base64
import ipaddress
from dataclasses import dataclass

from shared.config import ConfigError, Settings, env_bool, env_float, env_int, env_str

EMAIL_PROVIDERS = ("console", "smtp", "ses")
# Development only: a Fernet key that says what it is. Production must set
# NOTIFICATION_SECRET_KEYS (README, "Notification").
DEV_SECRET_KEY = base64.urlsafe_b64encode(b"dev-only-insecure-webhook-secret").decode()
# SQS DelaySeconds is at most 15 minutes; a longer wait is re-enqueued in steps.
MAX_DELAY_SECONDS = 900


@dataclass(frozen=True)
class WebhookSettings:
    """How webhooks are delivered and retried."""

    timeout_s: float = 5.0
    max_attempts: int = 10
    retry_base_s: float = 30.0
    retry_cap_s: float = 4 * 3600.0
    # Consecutive deliveries (each with its whole retry schedule) that failed before
    # the subscription is disabled.
    disable_after: int = 10
    # Hosts, IP addresses or CIDR networks allowed even though they are loopback/private.
    allowed_hosts: tuple[str, ...] = ()
    max_subscriptions_per_owner: int = 100
    # Fernet keys for the signing secrets at rest: the first encrypts, all decrypt.
    secret_keys: tuple[str, ...] = (DEV_SECRET_KEY,)


@dataclass(frozen=True)
class EmailSettings:
    """Which provider sends mail, and how failed sends are retried."""

    enabled: bool = True
    provider: str = "console"
    sender: str = "Order Platform <no-reply@order-platform.local>"
    max_attempts: int = 8
    retry_base_s: float = 10.0
    retry_cap_s: float = 1800.0
    poll_interval_s: float = 1.0
    concurrency: int = 2
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = False
    smtp_timeout_s: float = 10.0
    ses_region: str = "us-east-1"
    ses_endpoint_url: str | None = None
    ses_configuration_set: str | None = None


@dataclass(frozen=True)
class StreamSettings:
    """Server-sent events."""

    heartbeat_s: float = 15.0
    # Events buffered for one slow client before its stream is reset (it resumes
    # from its Last-Event-ID, so nothing is lost).
    client_buffer: int = 1000
    # How often the hub re-reads the table even without a NOTIFY (belt and braces).
    poll_interval_s: float = 5.0


@dataclass(frozen=True)
class RetentionSettings:
    """How long finished history is kept (longer than any queue keeps a message)."""

    days: int = 30
    every_s: float = 3600.0


@dataclass(frozen=True)
class NotificationSettings:
    webhooks: WebhookSettings
    email: EmailSettings
    stream: StreamSettings
    retention: RetentionSettings = RetentionSettings()


def _allowed_hosts(raw: str) -> tuple[str, ...]:
    entries = tuple(part.strip().lower() for part in raw.split(",") if part.strip())
    for entry in entries:
        if "/" in entry:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ConfigError("NOTIFICATION_WEBHOOK_ALLOWED_HOSTS",
                                  f"{entry!r} is not a valid network") from None
    return entries


def _secret_keys(env, production: bool) -> tuple[str, ...]:
    name = "NOTIFICATION_SECRET_KEYS"
    raw = env_str(env, name, None if production else DEV_SECRET_KEY)
    keys = tuple(k.strip() for k in raw.split(",") if k.strip())
    for key in keys:
        try:
            decoded = base64.urlsafe_b64decode(key.encode())
        except ValueError:
            decoded = b""
        if len(decoded) != 32:
            raise ConfigError(name, "each key must be a Fernet key (32 url-safe base64 bytes), e.g. "
                                    "from: python -c 'from cryptography.fernet import Fernet; "
                                    "print(Fernet.generate_key().decode())'")
    if production and DEV_SECRET_KEY in keys:
        raise ConfigError(name, "the development default may not be used in production")
    return keys


def notification_settings(settings: Settings) -> NotificationSettings:
    """Read and validate every ``NOTIFICATION_*`` variable."""
    env = settings.env
    production = settings.app_env == "production"
    webhooks = WebhookSettings(
        timeout_s=env_float(env, "NOTIFICATION_WEBHOOK_TIMEOUT_S", 5.0, minimum=0.1),
        max_attempts=env_int(env, "NOTIFICATION_WEBHOOK_MAX_ATTEMPTS", 10, minimum=1, maximum=50),
        retry_base_s=env_float(env, "NOTIFICATION_WEBHOOK_RETRY_BASE_S", 30.0, minimum=1.0),
        retry_cap_s=env_float(env, "NOTIFICATION_WEBHOOK_RETRY_CAP_S", 4 * 3600.0, minimum=1.0),
        disable_after=env_int(env, "NOTIFICATION_WEBHOOK_DISABLE_AFTER", 10, minimum=1),
        allowed_hosts=_allowed_hosts(env.get("NOTIFICATION_WEBHOOK_ALLOWED_HOSTS", "")),
        max_subscriptions_per_owner=env_int(env, "NOTIFICATION_WEBHOOK_MAX_PER_OWNER", 100,
                                            minimum=1),
        secret_keys=_secret_keys(env, production),
    )
    provider_default = None if production else "console"
    provider = env_str(env, "NOTIFICATION_EMAIL_PROVIDER", provider_default)
    if provider not in EMAIL_PROVIDERS:
        raise ConfigError("NOTIFICATION_EMAIL_PROVIDER",
                          f"must be one of {', '.join(EMAIL_PROVIDERS)}, got {provider!r}")
    email = EmailSettings(
        enabled=env_bool(env, "NOTIFICATION_EMAIL_ENABLED", True),
        provider=provider,
        sender=env_str(env, "NOTIFICATION_EMAIL_FROM",
                       None if production else EmailSettings.sender),
        max_attempts=env_int(env, "NOTIFICATION_EMAIL_MAX_ATTEMPTS", 8, minimum=1, maximum=50),
        retry_base_s=env_float(env, "NOTIFICATION_EMAIL_RETRY_BASE_S", 10.0, minimum=0.1),
        retry_cap_s=env_float(env, "NOTIFICATION_EMAIL_RETRY_CAP_S", 1800.0, minimum=0.1),
        poll_interval_s=env_float(env, "NOTIFICATION_EMAIL_POLL_S", 1.0, minimum=0.05),
        concurrency=env_int(env, "NOTIFICATION_EMAIL_CONCURRENCY", 2, minimum=1, maximum=32),
        smtp_host=env_str(env, "NOTIFICATION_SMTP_HOST", "127.0.0.1"),
        smtp_port=env_int(env, "NOTIFICATION_SMTP_PORT", 25, minimum=1, maximum=65535),
        smtp_username=env.get("NOTIFICATION_SMTP_USERNAME") or None,
        smtp_password=env.get("NOTIFICATION_SMTP_PASSWORD") or None,
        smtp_starttls=env_bool(env, "NOTIFICATION_SMTP_STARTTLS", False),
        smtp_timeout_s=env_float(env, "NOTIFICATION_SMTP_TIMEOUT_S", 10.0, minimum=0.1),
        ses_region=env_str(env, "NOTIFICATION_SES_REGION", settings.aws_region),
        ses_endpoint_url=env.get("NOTIFICATION_SES_ENDPOINT_URL") or None,
        ses_configuration_set=env.get("NOTIFICATION_SES_CONFIGURATION_SET") or None,
    )
    if email.smtp_username and not email.smtp_password:
        raise ConfigError("NOTIFICATION_SMTP_PASSWORD", "is required when NOTIFICATION_SMTP_USERNAME is set")
    if production and provider == "smtp" and email.smtp_username and not email.smtp_starttls:
        raise ConfigError("NOTIFICATION_SMTP_STARTTLS", "must be true to send credentials in production")
    stream = StreamSettings(
        heartbeat_s=env_float(env, "NOTIFICATION_SSE_HEARTBEAT_S", 15.0, minimum=0.1),
        client_buffer=env_int(env, "NOTIFICATION_SSE_CLIENT_BUFFER", 1000, minimum=10),
        poll_interval_s=env_float(env, "NOTIFICATION_SSE_POLL_S", 5.0, minimum=0.1),
    )
    retention = RetentionSettings(
        # SQS keeps a message at most 14 days: the inbox must outlive that.
        days=env_int(env, "NOTIFICATION_RETENTION_DAYS", 30, minimum=15),
        every_s=env_float(env, "NOTIFICATION_RETENTION_EVERY_S", 3600.0, minimum=1.0),
    )
    return NotificationSettings(webhooks, email, stream, retention)
