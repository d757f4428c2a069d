"""A local webhook receiver for tests: records every request, answers as scripted."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from services.notification.domain import verify


@dataclass
class Received:
    """One request the receiver got."""

    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 whose answers come from ``script`` (status per call).

    ``script(n)`` gets the 1-based number of the request and returns a status code,
    or ``("sleep", seconds, status)`` to answer late.
    """

    script: Callable[[int], object] = lambda n: 200
    requests: list[Received] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                with receiver._lock:
                    receiver.requests.append(Received(dict(self.headers.items()), body,
                                                      time.time()))
                    number = len(receiver.requests)
                answer = receiver.script(number)
                if isinstance(answer, tuple):
                    _, seconds, answer = answer
                    time.sleep(seconds)
                try:
                    self.send_response(int(answer))
                    self.send_header("Content-Type", "text/plain")
                    reply = f"answer {answer} to request {number}".encode()
                    self.send_header("Content-Length", str(len(reply)))
                    self.end_headers()
                    self.wfile.write(reply)
                except OSError:
                    pass  # the sender gave up waiting (a timeout test)

            def log_message(self, *_args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def verified(self, secret: str) -> list[Received]:
        """Requests whose signature checks out with ``secret``."""
        with self._lock:
            return [r for r in self.requests
                    if verify(secret, r.headers.get("Webhook-Timestamp"),
                              r.headers.get("Webhook-Signature"), r.body)]
