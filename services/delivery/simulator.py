"""A carrier simulator for local runs and demos: walks new shipments to DELIVERED.

It goes through :func:`services.delivery.handlers.record_status`, the same
path as a real carrier's callback, so the demo exercises the real flow.
Enabled with ``DELIVERY_SIMULATOR_ENABLED=true``; refused in production.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.delivery.handlers import advance_simulated
from services.delivery.settings import DeliverySettings
from shared.periodic import periodic

BATCH = 200


@dataclass(frozen=True)
class SimulatorConfig:
    enabled: bool
    step_s: float      # time a shipment stays in each status
    tick_s: float      # how often due shipments are looked for


def simulator_config(own: DeliverySettings) -> SimulatorConfig:
    """The simulator's part of the DELIVERY_* settings (refused in production by those)."""
    return SimulatorConfig(own.simulator_enabled, own.simulator_step_s, own.simulator_tick)


def simulator_task(db, config: SimulatorConfig):
    """A worker task (coroutine factory) running the simulator until stop."""
    return periodic(lambda: advance_simulated(db, config.step_s, BATCH), config.tick_s,
                    full_batch=BATCH, error_event="carrier_simulator_error",
                    started_event="carrier_simulator_started", step_s=config.step_s)
