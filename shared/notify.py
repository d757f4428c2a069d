"""Wake on NOTIFY: run a step whenever a PostgreSQL channel is notified, else every poll.

:func:`run_on_notify` is the loop shared by every listen-or-poll worker here
(the outbox relay, the email dispatcher, the live notification hub):

1. open a dedicated ``LISTEN`` connection (``db.listen_connection(channel)``)
   and call ``on_connect`` — after the LISTEN, so nothing notified from then
   on can be missed by what ``on_connect`` reads;
2. run ``step()``; it returns the longest wait before the next run:
   ``0`` — again at once (more work is waiting), a number of seconds, or
   ``None`` — the poll interval;
3. wait that long, or less: a NOTIFY on the channel (or the stop event) ends
   the wait early;
4. any exception (database restart, broker outage, a bug in the step) is
   given to ``on_error``, the LISTEN connection is dropped, and after
   ``error_pause_s`` the loop reconnects (back to 1).

The poll interval is the fallback that bounds the delay when a NOTIFY is
lost (the connection dropped) or never sent (coalesced by its writer).
Runs in a thread (``stop`` is a :class:`threading.Event`).
"""

from __future__ import annotations

import contextlib
import select
import threading
import time
from collections.abc import Callable

# Longest a wait runs before looking at the stop event again.
STOP_CHECK_S = 0.5


def run_on_notify(db, channel: str, step: Callable[[], float | None], stop: threading.Event, *,
                  poll_interval_s: float, on_error: Callable[[Exception], None],
                  error_pause_s: float | None = None,
                  on_connect: Callable[[], None] | None = None) -> None:
    """Run ``step`` until ``stop`` is set, woken by NOTIFY on ``channel`` (see the module doc)."""
    pause = poll_interval_s if error_pause_s is None else error_pause_s
    listener = None
    try:
        # A closed pool is its owner's end (an app torn down): nothing to follow any more.
        while not stop.is_set() and not db.closed:
            try:
                if listener is None:
                    listener = db.listen_connection(channel)
                    if on_connect is not None:
                        on_connect()
                wait = step()
                wait = poll_interval_s if wait is None else wait
                if wait > 0:
                    wait_for_notify(listener, stop, wait)
            except Exception as exc:  # the loop must outlive database and broker outages
                on_error(exc)
                _close(listener)
                listener = None
                stop.wait(pause)
    finally:
        _close(listener)


def wait_for_notify(listener, stop: threading.Event, timeout_s: float) -> bool:
    """Wait up to ``timeout_s`` for a NOTIFY on ``listener``; True if one came (and is consumed)."""
    deadline = time.monotonic() + timeout_s
    while not stop.is_set():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        ready, _, _ = select.select([listener], [], [], min(remaining, STOP_CHECK_S))
        if ready:
            listener.poll()
            if listener.notifies:
                listener.notifies.clear()
                return True
    return False


def _close(listener) -> None:
    if listener is not None:
        with contextlib.suppress(Exception):
            listener.close()
