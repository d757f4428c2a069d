"""The delivery API as a real HTTP server for tests that cancel paid orders.

The order service asks the delivery service to stop a paid order's shipment
before it cancels the order (``PUT /v1/shipment-cancellations/{order_id}``),
so those tests need a delivery API listening. :class:`DeliveryServer` serves
``services.delivery.app``'s ``create_app()`` with werkzeug's threaded server
on a free loopback port, in this process.
"""

from __future__ import annotations

import threading

from werkzeug.serving import make_server

LOOPBACK = "127.0.0.1"


class DeliveryServer:
    """``create_app(config)`` of the delivery service, listening until :meth:`stop`."""

    def __init__(self, config: dict[str, str]):
        from services.delivery.app import create_app

        self.app = create_app(config)
        self._server = make_server(LOOPBACK, 0, self.app, threaded=True)
        self.url = f"http://{LOOPBACK}:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="delivery-api",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
        self.app.extensions["db"].close()
