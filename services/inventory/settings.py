"""The inventory service's own settings (``INVENTORY_*``), and the one place its processes read settings.

:func:`load` validates the common :class:`shared.config.Settings` and
:class:`InventorySettings` together; the app factory and the worker call it once.
"""

from __future__ import annotations

from collections.abc import Mapping

from shared.config import Settings, load_settings
from shared.settings import EnvSettings, Float, var

SERVICE = "inventory"
DEFAULT_RESERVATION_TTL_S = 600.0
MIN_RESERVATION_TTL_S = 1.0
DEFAULT_SWEEP_INTERVAL_S = 5.0
MIN_SWEEP_INTERVAL_S = 0.05


class InventorySettings(EnvSettings):
    """Reservations: how long they are held, how often expired ones are released."""

    reservation_ttl_s: Float = var("INVENTORY_RESERVATION_TTL_S", DEFAULT_RESERVATION_TTL_S,
                                   "how long a reservation is HELD before the sweeper releases it",
                                   ge=MIN_RESERVATION_TTL_S)
    sweep_interval_s: Float = var("INVENTORY_SWEEP_INTERVAL_S", DEFAULT_SWEEP_INTERVAL_S,
                                  "how often the worker looks for expired reservations",
                                  ge=MIN_SWEEP_INTERVAL_S)


def load(env: Mapping[str, str] | None = None) -> tuple[Settings, InventorySettings]:
    """The common settings and the inventory service's own, from ``env`` (default: the process's)."""
    settings = load_settings(SERVICE, env)
    return settings, InventorySettings.from_env(settings.env, app_env=settings.app_env)
