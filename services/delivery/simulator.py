"""A carrier simulator for local runs and demos: walks new shipments to DELIVERED.

It goes through :func:`services.delivery.handlers.record_status`, the same
path as a real carrier's callback, so the demo exercises the real flow.
Enabled with ``DELIVERY_SIMULATOR_ENABLED=true``; refused in production.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from services.delivery.handlers import advance_simulated
from services.delivery.settings import DeliverySettings
from shared.logging import get_logger

log = get_logger(__name__)

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

    async def run(stop: asyncio.Event) -> None:
        log.info("carrier_simulator_started", step_s=config.step_s)
        while not stop.is_set():
            try:
                moved = await asyncio.to_thread(advance_simulated, db, config.step_s, BATCH)
            except Exception as exc:  # keep simulating through DB hiccups
                log.warning("carrier_simulator_error", error=str(exc))
                moved = 0
            if moved < BATCH:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), config.tick_s)

    return run
