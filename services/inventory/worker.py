"""Inventory worker: consumes inventory-events.fifo and sweeps expired reservations.

``order.created`` confirms an order's reservation, ``order.cancelled``
releases it; a periodic sweeper releases HELD reservations past their
time-to-live (orders that were never committed). The service publishes no
events, so the worker runs no outbox relay.

Run with ``python -m services.inventory.worker``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from dataclasses import dataclass

from services.inventory.handlers import SWEEP_BATCH, on_order_cancelled, on_order_created, release_expired
from services.inventory.settings import InventorySettings, load
from shared.db import database_for
from shared.logging import configure_logging, get_logger
from shared.messaging.topology import queue
from shared.worker import WorkerPlan, run_worker

log = get_logger(__name__)

SERVICE = "inventory"
EVENTS_QUEUE = "inventory-events.fifo"


@dataclass(frozen=True)
class SweeperConfig:
    interval_s: float  # how often expired reservations are looked for


def sweeper_config(own: InventorySettings) -> SweeperConfig:
    """INVENTORY_SWEEP_INTERVAL_S (default 5 s)."""
    return SweeperConfig(own.sweep_interval_s)


def sweeper_task(db, config: SweeperConfig):
    """A worker task (coroutine factory) releasing expired HELD reservations until stop.

    Several workers may sweep at once: each claims reservations with
    ``FOR UPDATE SKIP LOCKED``, so none is released twice.
    """

    async def run(stop: asyncio.Event) -> None:
        log.info("reservation_sweeper_started", interval_s=config.interval_s)
        while not stop.is_set():
            try:
                released = await asyncio.to_thread(release_expired, db, SWEEP_BATCH)
            except Exception as exc:  # keep sweeping through DB hiccups
                log.warning("reservation_sweeper_error", error=str(exc))
                released = 0
            if released < SWEEP_BATCH:  # a full batch: more may be due, go on at once
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), config.interval_s)

    return run


def build_plan(db, own: InventorySettings) -> WorkerPlan:
    """Handlers for inventory-events.fifo, plus the sweeper."""
    return WorkerPlan(
        consumers={queue(EVENTS_QUEUE): {"order.created": on_order_created,
                                         "order.cancelled": on_order_cancelled}},
        relay=False,
        tasks=[sweeper_task(db, sweeper_config(own))],
    )


def main() -> int:
    settings, own = load()
    configure_logging(SERVICE, settings.log_level, settings.log_format)
    db = database_for(settings)
    return run_worker(settings, db, build_plan(db, own))


if __name__ == "__main__":
    sys.exit(main())
