"""Order worker: consumes delivery-status.fifo and relays the order outbox.

Run with ``python -m services.order.worker``.
"""

from __future__ import annotations

import sys

from services.order.handlers import on_delivery_event
from services.order.settings import load
from shared.db import database_for
from shared.logging import configure_logging
from shared.messaging.topology import queue
from shared.worker import WorkerPlan, run_worker

SERVICE = "order"


def build_plan() -> WorkerPlan:
    """Handlers per queue for this service."""
    delivery_status = queue("delivery-status.fifo")
    return WorkerPlan(consumers={
        delivery_status: {event_type: on_delivery_event
                          for event_type in delivery_status.event_types},
    })


def main() -> int:
    settings, _own = load()  # validates ORDER_* too: a bad deployment fails here as in the API
    configure_logging(SERVICE, settings.log_level, settings.log_format)
    return run_worker(settings, database_for(settings), build_plan())


if __name__ == "__main__":
    sys.exit(main())
