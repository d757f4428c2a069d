"""Serve a Flask app over real HTTP in this process (a thread), for tests of HTTP peers."""

from __future__ import annotations

import threading

from werkzeug.serving import make_server

LOOPBACK = "127.0.0.1"


class AppServer:
    """``app`` listening on a free loopback port until :meth:`stop`."""

    def __init__(self, app, name: str = "app"):
        self.app = app
        self._server = make_server(LOOPBACK, 0, app, threaded=True)
        self.url = f"http://{LOOPBACK}:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"{name}-api",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop listening (the app's own resources are its owner's to close)."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


class ServiceServer(AppServer):
    """``services.<name>.app``'s ``create_app(config)`` listening until :meth:`stop`, which
    also closes the app's database pool (the server owns the app it made)."""

    def __init__(self, name: str, config: dict[str, str]):
        import importlib

        create_app = importlib.import_module(f"services.{name}.app").create_app
        super().__init__(create_app(config), name)

    def stop(self) -> None:
        super().stop()
        self.app.extensions["db"].close()
