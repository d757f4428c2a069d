"""The payment service's own settings, and the one place its processes read settings.

The provider's variables keep Stripe's own names (``STRIPE_API_BASE``,
``STRIPE_SECRET_KEY``, ``STRIPE_WEBHOOK_SECRET``) so an operator recognises
them; the service's tunables are ``PAYMENT_*``. The development defaults of
the two secrets are clearly fake values that only the local emulator accepts,
and production refuses them.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import SecretStr

from shared.config import ConfigError, Settings, load_settings
from shared.settings import EnvSettings, Float, Int, secret_value, var

SERVICE = "payment"
STRIPE_API = "https://api.stripe.com"
# Local development only (the emulator accepts any sk_ key); refused in production.
DEV_SECRET_KEY = "sk_test_local_development_only"
DEV_WEBHOOK_SECRET = "whsec_local_development_only"


class PaymentSettings(EnvSettings):
    """The provider (Stripe or its emulator) and the payment jobs."""

    stripe_api_base: str = var(
        "STRIPE_API_BASE", STRIPE_API, "the Stripe API's base URL (`make run`/`make test`: a local "
        "localstripe emulator)")
    stripe_secret_key: SecretStr = var(
        "STRIPE_SECRET_KEY", DEV_SECRET_KEY, "Stripe secret API key (`sk_test_...` for test mode)",
        secret=True, shown_default="a development-only value", production="required")
    stripe_webhook_secret: SecretStr = var(
        "STRIPE_WEBHOOK_SECRET", DEV_WEBHOOK_SECRET, "signing secret of the webhook endpoint "
        "(`whsec_...`)", secret=True, shown_default="a development-only value", production="required")
    stripe_timeout_s: Float = var("PAYMENT_STRIPE_TIMEOUT_S", 5.0,
                                  "per-attempt timeout of every Stripe call", ge=0.05)
    stripe_attempts: Int = var("PAYMENT_STRIPE_ATTEMPTS", 3,
                               "attempts of a Stripe call (transient failures only)", ge=1, le=5)
    webhook_tolerance_s: Int = var("PAYMENT_WEBHOOK_TOLERANCE_S", 300,
                                   "how old a signed webhook may be (replays are refused)", ge=1)
    reconcile_interval_s: Float = var("PAYMENT_RECONCILE_INTERVAL_S", 60.0,
                                      "how often the worker asks Stripe about unsettled payments",
                                      ge=0.05)
    reconcile_after_s: Float = var("PAYMENT_RECONCILE_AFTER_S", 120.0,
                                   "a payment with no news for this long is looked up at Stripe "
                                   "(its webhook may never come)", ge=0.0)

    def check(self, app_env: str) -> None:
        if app_env != "production":
            return
        if secret_value(self.stripe_secret_key) == DEV_SECRET_KEY:
            raise ConfigError("STRIPE_SECRET_KEY", "is required in production")
        if secret_value(self.stripe_webhook_secret) == DEV_WEBHOOK_SECRET:
            raise ConfigError("STRIPE_WEBHOOK_SECRET", "is required in production")


def load(env: Mapping[str, str] | None = None) -> tuple[Settings, PaymentSettings]:
    """The common settings and the payment service's own, from ``env`` (default: the process's)."""
    settings = load_settings(SERVICE, env)
    return settings, PaymentSettings.from_env(settings.env, app_env=settings.app_env)
