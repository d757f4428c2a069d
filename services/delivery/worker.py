"""Delivery worker: consumes order-created / order-cancelled, relays the outbox,
and (in development) runs the carrier simulator.

Run with ``python -m services.delivery.worker``.
"""

from __future__ import annotations

import sys

from services.delivery.handlers import on_order_cancelled, on_order_created
from services.delivery.settings import DeliverySettings, load
from services.delivery.simulator import simulator_config, simulator_task
from shared.db import database_for
from shared.logging import configure_logging
from shared.messaging.topology import queue
from shared.worker import WorkerPlan, run_worker

SERVICE = "delivery"


def build_plan(db, own: DeliverySettings) -> WorkerPlan:
    """Handlers per queue, plus the simulator when enabled."""
    plan = WorkerPlan(consumers={
        queue("order-created.fifo"): {"order.created": on_order_created},
        queue("order-cancelled.fifo"): {"order.cancelled": on_order_cancelled},
    })
    simulator = simulator_config(own)
    if simulator.enabled:
        plan.tasks.append(simulator_task(db, simulator))
    return plan


def main() -> int:
    settings, own = load()
    configure_logging(SERVICE, settings.log_level, settings.log_format)
    db = database_for(settings)
    return run_worker(settings, db, build_plan(db, own))


if __name__ == "__main__":
    sys.exit(main())
