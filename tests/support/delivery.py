"""The delivery API as a real HTTP server for tests that cancel paid orders.

The order service asks the delivery service to stop a paid order's shipment
before it cancels the order (``PUT /v1/shipment-cancellations/{order_id}``),
so those tests need a delivery API listening. :class:`DeliveryServer` serves
``services.delivery.app``'s ``create_app()`` with werkzeug's threaded server
on a free loopback port, in this process.
"""

from __future__ import annotations

from tests.support.servers import ServiceServer


class DeliveryServer(ServiceServer):
    """``create_app(config)`` of the delivery service, listening until :meth:`stop`."""

    def __init__(self, config: dict[str, str]):
        super().__init__("delivery", config)
