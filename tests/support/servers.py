"""Serve a Flask app (or a bare request handler) over real HTTP in this process, for tests of HTTP peers."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        pass  # a client that timed out is gone when the answer comes: a broken pipe is expected


@contextlib.contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """``handler`` on a free loopback port (a thread per request); yields its base URL."""
    server = _QuietServer((LOOPBACK, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{LOOPBACK}:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
