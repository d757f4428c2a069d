"""The live notification stream: one LISTEN/NOTIFY hub per process, many SSE clients.

:class:`NotificationHub` keeps ONE Postgres connection per API process that
LISTENs on ``notification_svc_stream``. Workers NOTIFY it when they commit a
notification (from any machine: the database carries the signal, so two or
more API instances all see every event). On a wake-up the hub reads every
notification after the last id it saw (one query per burst, not per client)
and hands each to the clients whose filter matches (customer, order).

:func:`event_stream` is one client's response: subscribe to the hub first,
then replay from the database everything after ``Last-Event-ID``, then the
live events, skipping ids already sent. Notification ids become visible in
increasing order (see ``repository.insert_notification``), so "after id N" has
no gap, and skipping ids <= the last one sent means no duplicate.

Under gunicorn's gevent worker (the notification API's server model) the hub
thread and every client are greenlets and psycopg2 is made cooperative by
psycogreen, so an idle client costs a socket, a queue and a few KiB.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import Gauge

from services.notification import repository as repo
from services.notification.domain import Notification, sse_comment, sse_event
from services.notification.settings import StreamSettings
from shared.logging import get_logger
from shared.notify import run_on_notify

log = get_logger(__name__)

# livesum: under gunicorn every process holds its own streams; /metrics adds them up.
SSE_CLIENTS = Gauge("sse_clients", "Connected server-sent-event clients", multiprocess_mode="livesum")
REPLAY_PAGE = 500
FETCH_PAGE = 1000
HUB_READY_TIMEOUT_S = 10.0
RECONNECT_PAUSE_S = 1.0
# What an EventSource waits before reconnecting after the stream ends.
CLIENT_RETRY_MS = 1000

_CLOSE = object()


class HubUnavailable(RuntimeError):
    """The hub could not start listening (database down)."""


@dataclass(eq=False)
class ClientStream:
    """One connected client: its filter and its buffer of live notifications."""

    customer_id: str | None
    order_id: str | None
    buffer: int
    queue: queue.Queue = field(init=False)
    overflowed: bool = False

    def __post_init__(self) -> None:
        self.queue = queue.Queue(maxsize=self.buffer)

    def wants(self, note: Notification) -> bool:
        return ((self.customer_id is None or note.customer_id == self.customer_id)
                and (self.order_id is None or note.order_id == self.order_id))

    def offer(self, item) -> None:
        try:
            self.queue.put_nowait(item)
        except queue.Full:
            self.overflowed = True  # the stream ends; the client resumes from its last id


class NotificationHub:
    """Fans notifications out to this process' SSE clients."""

    def __init__(self, db, settings: StreamSettings):
        self.db = db
        self.settings = settings
        self.last_id = 0
        self.closing = False
        self._clients: set[ClientStream] = set()
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # -- clients ------------------------------------------------------------------------------
    def subscribe(self, customer_id: str | None, order_id: str | None) -> ClientStream:
        """Register a client (starting the hub on first use); raise HubUnavailable."""
        if self.closing:  # shutting down: the client should go to another instance
            raise HubUnavailable("notification hub is shutting down")
        self._ensure_started()
        if not self._ready.wait(HUB_READY_TIMEOUT_S):
            raise HubUnavailable("notification hub is not listening")
        client = ClientStream(customer_id, order_id, self.settings.client_buffer)
        with self._lock:
            self._clients.add(client)
            SSE_CLIENTS.set(len(self._clients))
        return client

    def unsubscribe(self, client: ClientStream) -> None:
        with self._lock:
            self._clients.discard(client)
            SSE_CLIENTS.set(len(self._clients))

    @property
    def client_count(self) -> int:
        return len(self._clients)

    def shutdown(self) -> None:
        """End every stream now (clients reconnect, elsewhere or after the restart)."""
        self.closing = True
        self._stop.set()
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            client.offer(_CLOSE)

    # -- listening -------------------------------------------------------------------------------
    def _ensure_started(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="notification-hub",
                                                daemon=True)
                self._thread.start()

    def _run(self) -> None:
        # Every (re)connect is followed by a fetch: after a reconnect, whatever we missed.
        run_on_notify(self.db, repo.STREAM_CHANNEL, self._fetch_and_dispatch, self._stop,
                      poll_interval_s=self.settings.poll_interval_s, on_error=self._on_error,
                      error_pause_s=RECONNECT_PAUSE_S, on_connect=self._on_connect)

    def _on_connect(self) -> None:
        # Called after the LISTEN: reading where we are now lets nothing fall in between.
        if not self._ready.is_set():
            with self.db.transaction() as cur:
                self.last_id = repo.last_notification_id(cur)
            self._ready.set()
            log.info("notification_hub_listening", last_id=self.last_id)

    @staticmethod
    def _on_error(exc: Exception) -> None:
        # The hub must outlive database restarts: log, reconnect after a pause.
        log.warning("notification_hub_error", error=str(exc))

    def _fetch_and_dispatch(self) -> None:
        while True:
            with self.db.transaction() as cur:
                rows = repo.notifications_after(cur, self.last_id, None, None, FETCH_PAGE)
            if not rows:
                return
            with self._lock:
                clients = list(self._clients)
            for row in rows:
                note = to_notification(row)
                for client in clients:
                    if client.wants(note):
                        client.offer(note)
                self.last_id = note.id
            if len(rows) < FETCH_PAGE:
                return


def to_notification(row: dict) -> Notification:
    """A notifications row as the stream sends it."""
    return Notification(id=row["id"], order_id=row["order_id"], customer_id=row["customer_id"],
                        type=row["type"], payload=row["payload"],
                        created_at=row["created_at"].isoformat())


def event_stream(db, hub: NotificationHub, client: ClientStream, last_event_id: int | None,
                 expires_at: float | None, heartbeat_s: float) -> Iterator[str]:
    """One client's SSE body: replay after ``last_event_id``, then live, until expiry."""
    sent = last_event_id or 0
    try:
        yield f"retry: {CLIENT_RETRY_MS}\n" + sse_comment("connected")
        if last_event_id is not None:
            while True:
                with db.transaction() as cur:
                    rows = repo.notifications_after(cur, sent, client.customer_id,
                                                    client.order_id, REPLAY_PAGE)
                for row in rows:
                    yield to_notification(row).sse()
                    sent = row["id"]
                if len(rows) < REPLAY_PAGE:
                    break
        next_heartbeat = time.monotonic() + heartbeat_s
        while True:
            if client.overflowed:
                yield _closing("slow_consumer")
                return
            now = time.monotonic()
            if expires_at is not None and time.time() >= expires_at:
                yield _closing("token_expired")
                return
            wait = next_heartbeat - now
            if expires_at is not None:
                wait = min(wait, expires_at - time.time())
            try:
                item = client.queue.get(timeout=max(0.0, wait))
            except queue.Empty:
                if time.monotonic() >= next_heartbeat:
                    yield sse_comment("heartbeat")
                    next_heartbeat = time.monotonic() + heartbeat_s
                continue
            if item is _CLOSE:
                yield _closing("shutdown")
                return
            if item.id <= sent:
                continue  # already replayed
            yield item.sse()
            sent = item.id
    finally:
        hub.unsubscribe(client)


def _closing(reason: str) -> str:
    return sse_event(json.dumps({"reason": reason}), event="stream.closed")
