"""The ops service's own settings (``OPS_*``), and the one place its processes read settings.

:func:`load` validates the common :class:`shared.config.Settings` and
:class:`OpsSettings` together.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

from limits import parse_many
from pydantic import AfterValidator

from shared.config import Settings, load_settings
from shared.settings import EnvSettings, Float, Int, var

SERVICE = "ops"


def _rate(value: str) -> str:
    try:
        parse_many(value)
    except ValueError:
        raise ValueError(f"must be a rate limit such as '60/minute', got {value!r}") from None
    return value


Rate = Annotated[str, AfterValidator(_rate)]


class OpsSettings(EnvSettings):
    """What only the ops service reads."""

    peer_timeout_s: Float = var("OPS_PEER_TIMEOUT_S", 3.0,
                                "per-attempt timeout of each call to a service's admin API",
                                ge=0.1, le=60)
    peer_attempts: Int = var("OPS_PEER_ATTEMPTS", 2, "attempts of each admin API call "
                             "(transient failures only)", ge=1, le=5)
    rate_limit: Rate = var("OPS_RATE_LIMIT", "120/minute",
                          "ops API requests per operator (429 + `Retry-After`)")
    action_rate_limit: Rate = var("OPS_ACTION_RATE_LIMIT", "20/minute",
                                 "replays, purges and retries per operator")


def load(env: Mapping[str, str] | None = None) -> tuple[Settings, OpsSettings]:
    """The common settings and the ops service's own, from ``env`` (default: the process's)."""
    settings = load_settings(SERVICE, env)
    return settings, OpsSettings.from_env(settings.env, app_env=settings.app_env)
