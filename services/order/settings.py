"""The order service's own settings (``ORDER_*``), and the one place its processes read settings.

:func:`load` validates the common :class:`shared.config.Settings` and
:class:`OrderSettings` together; the app factory and the worker call it once
and pass the typed objects down.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

from limits import parse_many
from pydantic import AfterValidator, SecretStr

from shared.config import Settings, load_settings
from shared.settings import Bool, EnvSettings, Float, Int, var

SERVICE = "order"
DEFAULT_IDEMPOTENCY_PURGE_INTERVAL_S = 600.0
MIN_IDEMPOTENCY_PURGE_INTERVAL_S = 0.05


def _rate(value: str) -> str:
    try:
        parse_many(value)
    except ValueError:
        raise ValueError(f"must be a rate limit such as '60/minute', got {value!r}") from None
    return value


Rate = Annotated[str, AfterValidator(_rate)]


class OrderSettings(EnvSettings):
    """What only the order service reads."""

    rate_limit_per_customer: Rate = var(
        "ORDER_RATE_LIMIT_PER_CUSTOMER", "60/minute",
        "order creation per customer (429 + `Retry-After`); idempotent replays count too")
    inventory_timeout_s: Float = var("ORDER_INVENTORY_TIMEOUT_S", 1.0,
                                     "per-attempt timeout of the stock reservation call", ge=0.05)
    inventory_attempts: Int = var("ORDER_INVENTORY_ATTEMPTS", 3, "attempts of the reservation call "
                                  "(transient failures only)", ge=1, le=5)
    client_id: str | None = var("ORDER_CLIENT_ID", None, "the order service's own OAuth2 client "
                                "(its calls to inventory, payment and delivery); required by the API",
                                shown_default="from `make run`")
    client_secret: SecretStr | None = var("ORDER_CLIENT_SECRET", None, "that client's secret; "
                                          "required by the API", secret=True, shown_default="from `make run`")
    payment_timeout_s: Float = var("ORDER_PAYMENT_TIMEOUT_S", 8.0,
                                   "per-attempt timeout of opening an order's payment (the payment "
                                   "service calls Stripe within it)", ge=0.05)
    payment_attempts: Int = var("ORDER_PAYMENT_ATTEMPTS", 2, "attempts of opening a payment "
                                "(transient failures only)", ge=1, le=5)
    delivery_timeout_s: Float = var("ORDER_DELIVERY_TIMEOUT_S", 1.0,
                                    "per-attempt timeout of asking delivery to stop a paid order's "
                                    "shipment before it is cancelled", ge=0.05)
    delivery_attempts: Int = var("ORDER_DELIVERY_ATTEMPTS", 3, "attempts of that call (transient "
                                 "failures only)", ge=1, le=5)
    payment_ttl_s: Float = var("ORDER_PAYMENT_TTL_S", 1800.0,
                               "PAYMENT_TTL: an order still unpaid this long after it was placed is "
                               "cancelled (stock released, customer told)", ge=0.05)
    expiry_interval_s: Float = var("ORDER_EXPIRY_INTERVAL_S", 30.0,
                                   "how often the worker cancels unpaid orders past ORDER_PAYMENT_TTL_S",
                                   ge=0.05)
    stuck_after_s: Float = var("ORDER_STUCK_AFTER_S", 86400.0,
                               "an order in a non-terminal status for longer is listed as stuck "
                               "(`GET /v1/orders/stuck`)", ge=1.0)
    stuck_auto_reject: Bool = var(
        "ORDER_STUCK_AUTO_REJECT", False,
        "policy: cancel orders left in PENDING_SHIPMENT longer than ORDER_STUCK_AFTER_S (authorization "
        "voided, stock released, customer told); off: they are only listed")
    idempotency_purge_interval_s: Float = var(
        "ORDER_IDEMPOTENCY_PURGE_INTERVAL_S", DEFAULT_IDEMPOTENCY_PURGE_INTERVAL_S,
        "how often the worker deletes expired idempotency keys (expired keys are already ignored, "
        "so this only bounds how long they take space)", ge=MIN_IDEMPOTENCY_PURGE_INTERVAL_S)


def load(env: Mapping[str, str] | None = None) -> tuple[Settings, OrderSettings]:
    """The common settings and the order service's own, from ``env`` (default: the process's)."""
    settings = load_settings(SERVICE, env)
    return settings, OrderSettings.from_env(settings.env, app_env=settings.app_env)
