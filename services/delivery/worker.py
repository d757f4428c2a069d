"""Delivery worker: consumes order-paid / order-cancelled, relays the outbox,
and (in development) runs the carrier simulator.

Run with ``python -m services.delivery.worker``.
"""

from __future__ import annotations

import sys

from services.delivery.handlers import on_order_cancelled, on_order_paid
from services.delivery.settings import DeliverySettings, load
from services.delivery.simulator import simulator_config, simulator_task
from shared.config import Settings
from shared.queues import queue
from shared.worker import WorkerPlan, serve_worker

SERVICE = "delivery"


def build_plan(db, settings: Settings, own: DeliverySettings) -> WorkerPlan:
    """Handlers per queue, plus the simulator when enabled."""
    plan = WorkerPlan(consumers={
        queue("order-paid.fifo"): {"order.paid": on_order_paid},
        queue("order-cancelled.fifo"): {"order.cancelled": on_order_cancelled},
    })
    simulator = simulator_config(own)
    if simulator.enabled:
        plan.tasks.append(simulator_task(db, simulator))
    return plan


def main() -> int:
    return serve_worker(load, build_plan)


if __name__ == "__main__":
    sys.exit(main())
