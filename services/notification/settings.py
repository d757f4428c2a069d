"""The notification service's own settings (``NOTIFICATION_*``), and the one place they are read.

:func:`load` validates the common :class:`shared.config.Settings` and
:class:`NotificationSettings` together (app factory and worker call it once);
:func:`notification_settings` reads the service's part for given common
settings. A missing or invalid variable raises :class:`shared.config.ConfigError`
naming it.
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BeforeValidator, SecretStr

from shared.config import ConfigError, Settings, load_settings
from shared.settings import Bool, EnvSettings, Float, Int, SecretKeys, fernet_keys, split_commas, var

SERVICE = "notification"
EMAIL_PROVIDERS = ("console", "smtp", "ses")
# Development only: a Fernet key that says what it is. Production must set
# NOTIFICATION_SECRET_KEYS (README, "Notification").
DEV_SECRET_KEY = base64.urlsafe_b64encode(b"dev-only-insecure-webhook-secret").decode()
DEFAULT_SENDER = "Order Platform <no-reply@order-platform.local>"
# SQS DelaySeconds is at most 15 minutes; a longer wait is re-enqueued in steps.
MAX_DELAY_SECONDS = 900


def _allowed_hosts(raw) -> tuple[str, ...]:
    entries = tuple(entry.lower() for entry in split_commas(raw))
    for entry in entries:
        if "/" in entry:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not a valid network") from None
    return entries



AllowedHosts = Annotated[tuple[str, ...], BeforeValidator(_allowed_hosts)]
FernetKeys = fernet_keys("e.g. from: python -c 'from cryptography.fernet import Fernet; "
                          "print(Fernet.generate_key().decode())'")


class WebhookSettings(EnvSettings):
    """How webhooks are delivered and retried."""

    timeout_s: Float = var("NOTIFICATION_WEBHOOK_TIMEOUT_S", 5.0, "per-attempt timeout", ge=0.1)
    max_attempts: Int = var("NOTIFICATION_WEBHOOK_MAX_ATTEMPTS", 10, "attempts per delivery", ge=1, le=50)
    retry_base_s: Float = var("NOTIFICATION_WEBHOOK_RETRY_BASE_S", 30.0,
                              "first retry delay (doubling, ±20 % jitter)", ge=1.0)
    retry_cap_s: Float = var("NOTIFICATION_WEBHOOK_RETRY_CAP_S", 4 * 3600.0, "longest retry delay", ge=1.0)
    disable_after: Int = var("NOTIFICATION_WEBHOOK_DISABLE_AFTER", 10, "consecutive deliveries that "
                             "failed their whole retry schedule before a subscription is disabled", ge=1)
    allowed_hosts: AllowedHosts = var(
        "NOTIFICATION_WEBHOOK_ALLOWED_HOSTS", (), "comma-separated hosts, addresses or CIDRs exempt from "
        "the SSRF block on loopback/private targets",
        shown_default="empty (`make run`: `localhost,127.0.0.1,::1`)")
    max_subscriptions_per_owner: Int = var("NOTIFICATION_WEBHOOK_MAX_PER_OWNER", 100,
                                           "subscriptions per owner", ge=1)
    secret_keys: FernetKeys = var(
        "NOTIFICATION_SECRET_KEYS", SecretKeys((DEV_SECRET_KEY,)),
        "Fernet keys encrypting webhook secrets at rest; the first encrypts, all decrypt (rotate by "
        "prepending)", secret=True, shown_default="a marked development key", production="required")

    def check(self, app_env: str) -> None:
        if app_env == "production":
            if not self.was_set("secret_keys"):
                raise ConfigError("NOTIFICATION_SECRET_KEYS", "is required but not set")
            if DEV_SECRET_KEY in self.secret_keys:
                raise ConfigError("NOTIFICATION_SECRET_KEYS",
                                  "the development default may not be used in production")


class WebhookBreakerSettings(EnvSettings):
    """One breaker per webhook endpoint (scheme://host:port), all with these thresholds."""

    fail_max: Int = var("BREAKER_WEBHOOK_FAIL_MAX", 5, "failures before an endpoint's breaker opens", ge=1)
    reset_timeout_s: Float = var("BREAKER_WEBHOOK_RESET_TIMEOUT_S", 60.0,
                                 "a dead endpoint is left alone this long before one trial", ge=0.1)


class EmailSettings(EnvSettings):
    """Which provider sends mail, and how failed sends are retried."""

    enabled: Bool = var("NOTIFICATION_EMAIL_ENABLED", True, "run the mail sender threads in the worker")
    provider: Literal["console", "smtp", "ses"] = var(
        "NOTIFICATION_EMAIL_PROVIDER", "console", "who sends mail", production="required")
    sender: str = var("NOTIFICATION_EMAIL_FROM", DEFAULT_SENDER, "sender of every mail",
                      shown_default="a local no-reply address", production="required")
    max_attempts: Int = var("NOTIFICATION_EMAIL_MAX_ATTEMPTS", 8, "attempts per mail", ge=1, le=50)
    retry_base_s: Float = var("NOTIFICATION_EMAIL_RETRY_BASE_S", 10.0, "first retry delay", ge=0.1)
    retry_cap_s: Float = var("NOTIFICATION_EMAIL_RETRY_CAP_S", 1800.0, "longest retry delay", ge=0.1)
    poll_interval_s: Float = var("NOTIFICATION_EMAIL_POLL_S", 1.0, "how often due mails are looked for",
                                 ge=0.05)
    concurrency: Int = var("NOTIFICATION_EMAIL_CONCURRENCY", 2, "mail sender threads", ge=1, le=32)
    lease_s: Float = var("NOTIFICATION_EMAIL_LEASE_S", 120.0, "how long a claimed mail is its "
                         "sender's (renewed every third of it while sending); the mails of a sender "
                         "that died wait this long before another takes them", ge=1.0)
    smtp_host: str = var("NOTIFICATION_SMTP_HOST", "127.0.0.1", "SMTP server")
    smtp_port: Int = var("NOTIFICATION_SMTP_PORT", 25, "SMTP port", ge=1, le=65535)
    smtp_username: str | None = var("NOTIFICATION_SMTP_USERNAME", None, "SMTP login (needs the password, "
                                    "and STARTTLS in production)", strip=False)
    smtp_password: SecretStr | None = var("NOTIFICATION_SMTP_PASSWORD", None, "SMTP password",
                                          secret=True, strip=False)
    smtp_starttls: Bool = var("NOTIFICATION_SMTP_STARTTLS", False, "upgrade the SMTP connection with "
                              "STARTTLS")
    smtp_timeout_s: Float = var("NOTIFICATION_SMTP_TIMEOUT_S", 10.0, "SMTP socket timeout", ge=0.1)
    ses_region: str | None = var("NOTIFICATION_SES_REGION", None, "SES region",
                                 shown_default="`AWS_REGION`")
    ses_endpoint_url: str | None = var("NOTIFICATION_SES_ENDPOINT_URL", None, "SES endpoint (an emulator)",
                                       shown_default="AWS")
    ses_configuration_set: str | None = var("NOTIFICATION_SES_CONFIGURATION_SET", None,
                                            "SES configuration set of every mail")

    def check(self, app_env: str) -> None:
        production = app_env == "production"
        for field_name in ("provider", "sender"):
            if production and not self.was_set(field_name):
                raise ConfigError(self.variable_of(field_name), "is required but not set")
        if self.smtp_username and not self.smtp_password:
            raise ConfigError("NOTIFICATION_SMTP_PASSWORD",
                              "is required when NOTIFICATION_SMTP_USERNAME is set")
        if production and self.provider == "smtp" and self.smtp_username and not self.smtp_starttls:
            raise ConfigError("NOTIFICATION_SMTP_STARTTLS", "must be true to send credentials in production")


class StreamSettings(EnvSettings):
    """Server-sent events."""

    heartbeat_s: Float = var("NOTIFICATION_SSE_HEARTBEAT_S", 15.0, "stream heartbeat", ge=0.1)
    # A slow client's stream is reset when its buffer fills; it resumes from its
    # Last-Event-ID, so nothing is lost.
    client_buffer: Int = var("NOTIFICATION_SSE_CLIENT_BUFFER", 1000,
                             "events buffered for one slow client before its stream is reset", ge=10)
    poll_interval_s: Float = var("NOTIFICATION_SSE_POLL_S", 5.0,
                                 "the hub re-reads the table this often even without a NOTIFY", ge=0.1)
    # Long enough to open the stream right after asking; short enough that a leaked one is stale.
    ticket_ttl_s: Int = var("NOTIFICATION_STREAM_TICKET_TTL_S", 30,
                            "lifetime of a single-use stream ticket (EventSource clients)", ge=5, le=300)


class RetentionSettings(EnvSettings):
    """How long finished history is kept (longer than any queue keeps a message)."""

    # SQS keeps a message at most 14 days: the inbox must outlive that.
    days: Int = var("NOTIFICATION_RETENTION_DAYS", 30, "finished notifications, deliveries, mails, inbox "
                    "and published outbox rows older than this are deleted (a Last-Event-ID older than "
                    "that resumes from what is left)", ge=15)
    every_s: Float = var("NOTIFICATION_RETENTION_EVERY_S", 3600.0, "how often the worker deletes them",
                         ge=1.0)


@dataclass(frozen=True)
class NotificationSettings:
    webhooks: WebhookSettings
    email: EmailSettings
    stream: StreamSettings
    retention: RetentionSettings = RetentionSettings()


# The classes whose variables make up the service's documentation table, in order.
SETTINGS_CLASSES = (WebhookSettings, WebhookBreakerSettings, EmailSettings, StreamSettings, RetentionSettings)


def notification_settings(settings: Settings) -> NotificationSettings:
    """Read and validate every ``NOTIFICATION_*`` variable (``settings``: the common ones)."""
    env, app_env = settings.env, settings.app_env
    webhooks = WebhookSettings.from_env(env, app_env=app_env)
    email = EmailSettings.from_env(env, app_env=app_env)
    if email.ses_region is None:
        email = email.model_copy(update={"ses_region": settings.aws_region})
    stream = StreamSettings.from_env(env, app_env=app_env)
    retention = RetentionSettings.from_env(env, app_env=app_env)
    return NotificationSettings(webhooks, email, stream, retention)


def load(env: Mapping[str, str] | None = None) -> tuple[Settings, NotificationSettings]:
    """The common settings and the notification service's own, from ``env`` (default: the process's)."""
    settings = load_settings(SERVICE, env)
    return settings, notification_settings(settings)
