"""Run a callback when a gunicorn worker is told to stop, before its graceful wait.

A request that waits on purpose (a revocation long poll, an SSE stream) would
otherwise hold the worker for the whole ``GUNICORN_GRACEFUL_TIMEOUT`` after
SIGTERM and then be killed: a rolling deploy, ``make run``'s Ctrl-C and a
scale-in all pay that. The callback ends those waits (their clients come
back to another instance); gunicorn's own handler still runs after it.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable


def in_gunicorn_worker() -> bool:
    # gunicorn's arbiter sets SERVER_SOFTWARE for the processes it forks.
    return os.environ.get("SERVER_SOFTWARE", "").startswith("gunicorn")


def on_worker_sigterm(callback: Callable[[], None]) -> bool:
    """Chain ``callback`` before the current SIGTERM handler; False when not in a gunicorn worker.

    The callback runs in a thread of its own: a signal handler must not block
    (the callback may take a lock the interrupted code holds).
    """
    if not in_gunicorn_worker() or threading.current_thread() is not threading.main_thread():
        return False
    previous = signal.getsignal(signal.SIGTERM)

    def handler(signum, frame):
        threading.Thread(target=callback, name="sigterm-callback", daemon=True).start()
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, handler)
    return True
