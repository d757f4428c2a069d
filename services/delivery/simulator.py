"""A carrier simulator for local runs and demos: walks new shipments to DELIVERED.

It goes through :func:`services.delivery.handlers.record_status`, the same
path as a real carrier's callback, so the demo exercises the real flow.
Enabled with ``DELIVERY_SIMULATOR_ENABLED=true``; refused in production.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.delivery.handlers import advance_simulated
from shared.config import ConfigError, Settings, env_bool, env_float
from shared.periodic import periodic

BATCH = 200


@dataclass(frozen=True)
class SimulatorConfig:
    enabled: bool
    step_s: float      # time a shipment stays in each status
    tick_s: float      # how often due shipments are looked for


def simulator_config(settings: Settings) -> SimulatorConfig:
    """Read DELIVERY_SIMULATOR_* settings; enabling it in production is an error."""
    enabled = env_bool(settings.env, "DELIVERY_SIMULATOR_ENABLED", False)
    if enabled and settings.app_env == "production":
        raise ConfigError("DELIVERY_SIMULATOR_ENABLED", "the carrier simulator is off in production")
    step = env_float(settings.env, "DELIVERY_SIMULATOR_STEP_S", 2.0)
    return SimulatorConfig(enabled, step, env_float(settings.env, "DELIVERY_SIMULATOR_TICK_S",
                                                    max(0.05, min(step / 4, 0.5))))


def simulator_task(db, config: SimulatorConfig):
    """A worker task (coroutine factory) running the simulator until stop."""
    return periodic(lambda: advance_simulated(db, config.step_s, BATCH), config.tick_s,
                    full_batch=BATCH, error_event="carrier_simulator_error",
                    started_event="carrier_simulator_started", step_s=config.step_s)
