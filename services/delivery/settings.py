"""The delivery service's own settings (``DELIVERY_*``), and the one place its processes read settings.

:func:`load` validates the common :class:`shared.config.Settings` and
:class:`DeliverySettings` together; the app factory and the worker call it once.
"""

from __future__ import annotations

from collections.abc import Mapping

from shared.config import ConfigError, Settings, load_settings
from shared.settings import Bool, EnvSettings, Float, var

SERVICE = "delivery"


class DeliverySettings(EnvSettings):
    """The carrier simulator (local runs and demos only)."""

    simulator_enabled: Bool = var("DELIVERY_SIMULATOR_ENABLED", False,
                                  "walk new shipments to DELIVERED in the worker (a demo carrier)",
                                  shown_default="`false` (`true` in `make run`)", production="refused")
    simulator_step_s: Float = var("DELIVERY_SIMULATOR_STEP_S", 2.0,
                                  "seconds a simulated shipment stays in each status", ge=0.0)
    simulator_tick_s: Float | None = var("DELIVERY_SIMULATOR_TICK_S", None,
                                         "how often the simulator looks for due shipments", ge=0.0,
                                         shown_default="a quarter step, within 0.05-0.5")

    def check(self, app_env: str) -> None:
        if self.simulator_enabled and app_env == "production":
            raise ConfigError("DELIVERY_SIMULATOR_ENABLED", "the carrier simulator is off in production")

    @property
    def simulator_tick(self) -> float:
        """DELIVERY_SIMULATOR_TICK_S, else a quarter step kept within 0.05-0.5 s."""
        if self.simulator_tick_s is not None:
            return self.simulator_tick_s
        return max(0.05, min(self.simulator_step_s / 4, 0.5))


def load(env: Mapping[str, str] | None = None) -> tuple[Settings, DeliverySettings]:
    """The common settings and the delivery service's own, from ``env`` (default: the process's)."""
    settings = load_settings(SERVICE, env)
    return settings, DeliverySettings.from_env(settings.env, app_env=settings.app_env)
