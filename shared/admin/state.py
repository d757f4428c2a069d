"""What the consumer runtime tells the admin view, kept cheap on the hot path.

:class:`ConsumerState` is a consumer middleware (:mod:`shared.messaging.middleware`);
the consumer itself is not changed. Per message it costs:

* success of a group that never failed: a set lookup (no statement);
* a failure (retry): ONE upsert into ``blocked_groups``, and the group joins
  the in-memory set of blocked groups;
* success or dead letter of a group in that set: ONE delete (lazily: only
  groups known to have failed pay it). The set is read from the table when a
  consumer starts, so a group that failed before a restart is still cleared.
  A dead letter clears its group when it is decided (``after_handle``), in the
  handler thread: if the DLQ then cannot be reached the message stays and its
  group is blocked again without a row until its next failure records one.

Counters (handled / failed / dead-lettered), the last message time, the
messages in progress and the worker's circuit breakers live in memory; :meth:`ConsumerState.heartbeat_task`
upserts them every ``interval_s`` into ``consumer_heartbeats``, one row per
consumer and worker process, so the service's API can serve them (workers
have no API of their own). A message in progress longer than ``slow_after_s``
is reported as a slow head: its group is blocked behind a long in-flight message.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from shared.admin import repository as repo
from shared.logging import get_logger
from shared.messaging.middleware import Middleware
from shared.messaging.outcomes import DeadLetter, Duplicate, Handled

log = get_logger(__name__)

DEFAULT_HEARTBEAT_S = 10.0
DEFAULT_SLOW_AFTER_S = 60.0
# A heartbeat row not renewed for this many intervals is reported as not alive.
STALE_AFTER_BEATS = 3
# Rows of worker processes gone this long are deleted by the next beat of any worker.
FORGET_AFTER_S = 7 * 24 * 3600


def worker_id() -> str:
    """This process, as operators can find it: host and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class _Counts:
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    alive: bool = False
    last_message_at: datetime | None = None
    handled: int = 0
    failed: int = 0
    dead_lettered: int = 0
    # message id -> (group, event type, monotonic start) of messages being handled now
    in_progress: dict[str, tuple[str | None, float]] = field(default_factory=dict)
    blocked: set[str] = field(default_factory=set)


def _group(message: dict) -> str | None:
    # Only FIFO groups block: a standard queue's failed message holds up nothing behind it.
    return (message.get("Attributes") or {}).get("MessageGroupId")


class ConsumerState(Middleware):
    """Blocked groups and per-consumer counts, for :mod:`shared.admin.api`."""

    def __init__(self, slow_after_s: float = DEFAULT_SLOW_AFTER_S, breakers: Iterable = ()):
        self.slow_after_s = slow_after_s
        # The worker's BreakerRegistry objects: their states travel with the heartbeat.
        self.breakers = tuple(breakers)
        self._lock = threading.Lock()
        self._consumers: dict[str, _Counts] = {}

    def _counts(self, consumer) -> _Counts:
        counts = self._consumers.get(consumer.name)
        if counts is None:
            with self._lock:
                counts = self._consumers.setdefault(consumer.name, _Counts())
        return counts

    # -- consumer hooks (handler threads, except on_consumer_alive) --------------------
    def on_consumer_alive(self, consumer, alive: bool) -> None:
        counts = self._counts(consumer)
        if alive and not counts.alive:
            with consumer.db.transaction() as cur:
                counts.blocked |= repo.blocked_group_ids(cur, consumer.name)
        counts.alive = alive

    def before_handle(self, consumer, message: dict) -> None:
        counts = self._counts(consumer)
        counts.last_message_at = datetime.now(UTC)
        counts.in_progress[message.get("MessageId", "")] = (_group(message), time.monotonic())

    def after_handle(self, consumer, message: dict, outcome) -> None:
        counts = self._counts(consumer)
        counts.in_progress.pop(message.get("MessageId", ""), None)
        group = _group(message)
        if isinstance(outcome, Handled | Duplicate):
            with self._lock:
                counts.handled += 1
            self._clear(consumer, counts, group)
        elif isinstance(outcome, DeadLetter):
            with self._lock:
                counts.dead_lettered += 1
            self._clear(consumer, counts, group)  # the head left: the group moves on
        else:  # Retry
            with self._lock:
                counts.failed += 1
            if group is None:
                return
            event = outcome.event
            with consumer.db.transaction() as cur:
                repo.record_group_failure(cur, consumer.name, group, message.get("MessageId"),
                                          event.event_id, event.event_type,
                                          outcome.receive_count, outcome.delay_s, outcome.error)
            with self._lock:
                counts.blocked.add(group)

    def _clear(self, consumer, counts: _Counts, group: str | None) -> None:
        if group is None or group not in counts.blocked:
            return  # the common case: nothing to do, no statement
        with consumer.db.transaction() as cur:
            repo.clear_group(cur, consumer.name, group)
        with self._lock:
            counts.blocked.discard(group)

    # -- heartbeat -------------------------------------------------------------------------
    def snapshot(self) -> list[dict]:
        """One heartbeat row per consumer this process runs."""
        now = time.monotonic()
        worker = worker_id()
        breakers = {name: state for registry in self.breakers
                    for name, state in registry.snapshot().items()}
        rows = []
        with self._lock:
            for name, counts in self._consumers.items():
                slow = [{"message_id": message_id, "group_id": group,
                         "in_flight_s": round(now - started, 1)}
                        for message_id, (group, started) in list(counts.in_progress.items())
                        if now - started >= self.slow_after_s]
                rows.append({"consumer": name, "worker": worker, "alive": counts.alive,
                             "started_at": counts.started_at,
                             "last_message_at": counts.last_message_at,
                             "handled": counts.handled, "failed": counts.failed,
                             "dead_lettered": counts.dead_lettered, "slow_heads": slow,
                             "breakers": breakers})
        return rows

    def beat(self, db) -> None:
        """Write this process's heartbeat rows (and drop long-dead workers' rows)."""
        rows = self.snapshot()
        if not rows:
            return
        with db.transaction() as cur:
            repo.beat(cur, rows)
            repo.forget_heartbeats(cur, FORGET_AFTER_S)

    def heartbeat_task(self, db, interval_s: float = DEFAULT_HEARTBEAT_S):
        """A worker plan task: :meth:`beat` every ``interval_s`` until stopped, and once at stop."""

        async def run(stop: asyncio.Event) -> None:
            while not stop.is_set():
                await self._beat_safely(db)
                try:
                    await asyncio.wait_for(stop.wait(), interval_s)
                except TimeoutError:
                    pass
            await asyncio.sleep(0)
            await self._beat_safely(db)  # the consumers have said they stopped by now, or soon

        return run

    async def _beat_safely(self, db) -> None:
        try:
            await asyncio.to_thread(self.beat, db)
        except Exception as exc:  # a missed beat only makes the consumer look stale
            log.warning("heartbeat_failed", error=f"{type(exc).__name__}: {exc}")
