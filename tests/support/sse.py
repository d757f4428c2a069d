"""An SSE test client that behaves like a browser's EventSource.

It parses the stream with sseclient-py (an independent implementation of the
format), records every event, and when the stream ends or the connection
drops it reconnects with ``Last-Event-ID`` set to the last id it saw.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import requests
import sseclient

RECONNECT_PAUSE_S = 0.2
READ_TIMEOUT_S = 30


@dataclass(frozen=True)
class Event:
    id: str | None
    event: str
    data: str


@dataclass
class StreamClient:
    """Reads ``url`` in a thread until :meth:`close`; ``reconnect`` mimics EventSource."""

    url: str
    token: str
    reconnect: bool = True
    last_event_id: str | None = None
    events: list[Event] = field(default_factory=list)
    connections: int = 0
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _response: requests.Response | None = None
    _thread: threading.Thread | None = None
    connected: threading.Event = field(default_factory=threading.Event)

    def start(self) -> StreamClient:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            headers = {"Authorization": f"Bearer {self.token}", "Accept": "text/event-stream"}
            if self.last_event_id:
                headers["Last-Event-ID"] = self.last_event_id
            try:
                with requests.get(self.url, headers=headers, stream=True,
                                  timeout=(2, READ_TIMEOUT_S)) as response:
                    self._response = response
                    if response.status_code != 200:
                        self.errors.append(f"HTTP {response.status_code}")
                    else:
                        self.connections += 1
                        self.connected.set()
                        for message in sseclient.SSEClient(response).events():
                            self._record(message)
            except Exception as exc:  # the server went away: reconnect like EventSource
                self.errors.append(type(exc).__name__)
            if not self.reconnect:
                return
            self._stop.wait(RECONNECT_PAUSE_S)

    def _record(self, message) -> None:
        if not message.data:
            return  # a block with only a comment or retry: no event (as in EventSource)
        event = Event(message.id, message.event, message.data)
        with self._lock:
            self.events.append(event)
            if message.id:
                self.last_event_id = message.id

    def data_events(self) -> list[Event]:
        """Events other than stream control (stream.closed)."""
        with self._lock:
            return [e for e in self.events if not e.event.startswith("stream.")]

    def ids(self) -> list[int]:
        return [int(e.id) for e in self.data_events()]

    def close(self) -> None:
        self._stop.set()
        response = self._response
        if response is not None:
            try:
                response.raw._fp.fp.raw._sock.shutdown(2)  # unblock a read in progress
            except Exception:
                pass
            response.close()
        if self._thread is not None:
            self._thread.join(5)


def wait_connected(*clients: StreamClient, timeout: float = 15.0) -> None:
    """Until every client has an open stream (its subscription is registered)."""
    deadline = time.monotonic() + timeout
    for client in clients:
        if not client.connected.wait(max(0.0, deadline - time.monotonic())):
            raise AssertionError(f"stream {client.url} did not connect: {client.errors}")
