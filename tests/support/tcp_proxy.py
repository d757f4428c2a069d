"""A small threaded TCP proxy on 127.0.0.1 that can simulate an unreachable upstream.

Put it between a service and its broker (point ``SQS_ENDPOINT_URL`` at
:attr:`TcpProxy.url`) and switch it:

* :meth:`TcpProxy.go_down` with ``REFUSE``: the listening socket is closed, so
  new connections get ECONNREFUSED, and every open connection is cut (a
  client's keep-alive pool must not outlive the outage);
* :meth:`TcpProxy.go_down` with ``RESET``: connections are accepted and closed
  at once (a load balancer with no healthy target);
* :meth:`TcpProxy.go_up`: forward again, on the same port.

The upstream is a TCP address, or a Unix socket (:meth:`TcpProxy.to_unix_socket`:
the embedded PostgreSQL listens on one only).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass, field

LOOPBACK = "127.0.0.1"
CHUNK_BYTES = 64 * 1024
ACCEPT_POLL_S = 0.2          # how often the accept loop notices a mode change
UPSTREAM_CONNECT_TIMEOUT_S = 3.0
LISTEN_BACKLOG = 64
SWITCH_TIMEOUT_S = 5.0

UP = "up"
REFUSE = "refuse"
RESET = "reset"


@dataclass(eq=False)  # identity hashing: pipes live in a set
class _Pipe:
    """One client connection and its upstream twin."""

    client: socket.socket
    upstream: socket.socket
    closed: threading.Event = field(default_factory=threading.Event)

    def close(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()


class TcpProxy:
    """Forwards ``127.0.0.1:<port>`` to ``upstream_host:upstream_port`` until told otherwise."""

    def __init__(self, upstream_host: str, upstream_port: int | None, port: int = 0):
        # upstream_port None: upstream_host is the path of a Unix socket.
        self.upstream: tuple[str, int] | str = (
            upstream_host if upstream_port is None else (upstream_host, upstream_port))
        self.mode = UP
        self.connections_accepted = 0
        self._lock = threading.Lock()
        self._pipes: set[_Pipe] = set()
        self._stopped = threading.Event()
        # Only the accept thread touches the listening socket; switches wait for it to catch up.
        self._applied = threading.Condition()
        self._applied_mode = UP
        self._listener: socket.socket | None = self._listen(port)
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept_loop, name="tcp-proxy", daemon=True)
        self._thread.start()

    @classmethod
    def to_url(cls, url: str) -> TcpProxy:
        """A proxy in front of an ``http://host:port`` URL."""
        host_port = url.split("://", 1)[-1].split("/", 1)[0]
        host, _, port = host_port.rpartition(":")
        return cls(host or LOOPBACK, int(port))

    @classmethod
    def to_unix_socket(cls, path: str) -> TcpProxy:
        """A TCP proxy in front of the Unix socket at ``path``."""
        return cls(path, None)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``: give this to the client instead of the upstream URL."""
        return f"http://{LOOPBACK}:{self.port}"

    # -- switching ----------------------------------------------------------
    def go_down(self, mode: str = REFUSE) -> None:
        """Make the upstream unreachable: refuse (or reset) new and cut open connections."""
        if mode not in (REFUSE, RESET):
            raise ValueError(f"unknown mode {mode!r}")
        self._switch(mode)
        with self._lock:
            pipes = list(self._pipes)
        for pipe in pipes:
            pipe.close()

    def go_up(self) -> None:
        """Forward again, on the same port."""
        self._switch(UP)

    def close(self) -> None:
        """Stop the proxy and cut every connection."""
        if self._stopped.is_set():
            return
        self.go_down(REFUSE)
        self._stopped.set()
        self._thread.join(5)

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- internals ----------------------------------------------------------
    def _switch(self, mode: str) -> None:
        with self._applied:
            self.mode = mode
            if not self._applied.wait_for(lambda: self._applied_mode == mode, SWITCH_TIMEOUT_S):
                raise RuntimeError(f"tcp proxy did not switch to {mode} in {SWITCH_TIMEOUT_S}s")

    def _listen(self, port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Rebinding the same port after a REFUSE outage while old connections sit in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((LOOPBACK, port))
        sock.listen(LISTEN_BACKLOG)
        sock.settimeout(ACCEPT_POLL_S)
        return sock

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            mode = self.mode
            if mode == REFUSE and self._listener is not None:
                self._listener.close()
                self._listener = None
            elif mode != REFUSE and self._listener is None:
                self._listener = self._listen(self.port)
            with self._applied:
                self._applied_mode = mode
                self._applied.notify_all()
            if self._listener is None:
                self._stopped.wait(ACCEPT_POLL_S)
                continue
            try:
                client, _ = self._listener.accept()
            except OSError:  # includes the accept timeout: go round and look at the mode
                continue
            self.connections_accepted += 1
            if self.mode != UP:
                client.close()
                continue
            self._forward(client)
        if self._listener is not None:
            self._listener.close()

    def _forward(self, client: socket.socket) -> None:
        try:
            upstream = self._connect_upstream()
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        client.settimeout(None)
        pipe = _Pipe(client, upstream)
        with self._lock:
            self._pipes.add(pipe)
        for source, target in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(pipe, source, target), daemon=True,
                             name="tcp-proxy-pump").start()

    def _connect_upstream(self) -> socket.socket:
        if isinstance(self.upstream, tuple):
            return socket.create_connection(self.upstream, UPSTREAM_CONNECT_TIMEOUT_S)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(UPSTREAM_CONNECT_TIMEOUT_S)
        try:
            sock.connect(self.upstream)
        except OSError:
            sock.close()
            raise
        return sock

    def _pump(self, pipe: _Pipe, source: socket.socket, target: socket.socket) -> None:
        try:
            while not pipe.closed.is_set():
                data = source.recv(CHUNK_BYTES)
                if not data:
                    break
                target.sendall(data)
        except OSError:
            pass
        finally:
            pipe.close()
            with self._lock:
                self._pipes.discard(pipe)
