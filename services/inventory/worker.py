"""Inventory worker: consumes inventory-events.fifo and payment-refunds.fifo, sweeps reservations.

``order.created`` confirms an order's reservation, ``order.cancelled``
releases it, ``payment.refunded`` puts a refund's lines back on hand; a
periodic sweeper releases HELD reservations past their time-to-live (orders
that were never committed). The service publishes no events, so the worker
runs no outbox relay.

Run with ``python -m services.inventory.worker``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from services.inventory.reservations import SWEEP_BATCH, on_order_cancelled, on_order_created, release_expired
from services.inventory.restock import on_payment_refunded
from services.inventory.settings import InventorySettings, load
from shared.config import Settings
from shared.periodic import periodic
from shared.queues import queue
from shared.worker import WorkerPlan, serve_worker

SERVICE = "inventory"
EVENTS_QUEUE = "inventory-events.fifo"
REFUNDS_QUEUE = "payment-refunds.fifo"


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
    return periodic(lambda: release_expired(db, SWEEP_BATCH), config.interval_s,
                    full_batch=SWEEP_BATCH, error_event="reservation_sweeper_error",
                    started_event="reservation_sweeper_started", interval_s=config.interval_s)


def build_plan(db, settings: Settings, own: InventorySettings) -> WorkerPlan:
    """Handlers for inventory-events.fifo and payment-refunds.fifo, plus the sweeper."""
    return WorkerPlan(
        consumers={queue(EVENTS_QUEUE): {"order.created": on_order_created,
                                         "order.cancelled": on_order_cancelled},
                   queue(REFUNDS_QUEUE): {"payment.refunded": on_payment_refunded}},
        relay=False,
        tasks=[sweeper_task(db, sweeper_config(own))],
    )


def main() -> int:
    return serve_worker(load, build_plan)


if __name__ == "__main__":
    sys.exit(main())
