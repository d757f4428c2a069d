"""The in-memory rate-limit store, with one sweeper thread instead of a new thread per hit.

``limits``' :class:`~limits.storage.MemoryStorage` drops expired windows with a
``threading.Timer`` of 10 ms that it starts again from the next hit once the
previous one has run. Under steady traffic (requests more than 10 ms apart in
a process) that is a new OS thread per rate-limited request: py-spy put
``Thread.start`` and the timer's set-up at about 5 % of the order API's CPU at
peak, more than the limit check itself.

:class:`SweptMemoryStorage` keeps every behaviour of the parent (the counts,
windows and checks are the parent's code) and replaces only that scheduling:
one daemon thread per store, started on the first hit in the process (so
after gunicorn's fork), sweeps expired entries every :data:`SWEEP_S`. Expired
entries do not count against a limit in the meantime: the parent's checks
compare timestamps themselves, the sweep only frees memory. The hook it
overrides is the parent's private ``__schedule_expiry`` (name-mangled), so
the ``limits`` pin matters; ``tests/unit/test_ratelimit_storage.py`` fails if
an upgrade stops calling it.

Registered as the ``memory-swept://`` scheme; :func:`shared.ratelimit.create_limiter`
uses it for ``memory://``.
"""

from __future__ import annotations

import threading

from limits.storage import MemoryStorage

SCHEME = "memory-swept"
SWEEP_S = 1.0


class SweptMemoryStorage(MemoryStorage):
    """``MemoryStorage`` whose expired entries one long-lived thread removes."""

    STORAGE_SCHEME = [SCHEME]

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, **options: str):
        self._sweeper: threading.Thread | None = None
        self._sweeper_lock = threading.Lock()
        self._closed = threading.Event()
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)

    # The parent calls this on every hit (incr, decr, acquire_entry...).
    def _MemoryStorage__schedule_expiry(self) -> None:
        sweeper = self._sweeper
        if sweeper is not None and sweeper.is_alive():
            return
        with self._sweeper_lock:
            if self._sweeper is None or not self._sweeper.is_alive():
                self._sweeper = threading.Thread(target=self._sweep, name="ratelimit-sweeper",
                                                 daemon=True)
                self._sweeper.start()

    def _sweep(self) -> None:
        while not self._closed.wait(SWEEP_S):
            self._MemoryStorage__expire_events()

    def close(self) -> None:
        """Stop the sweeper (tests; a process's store lives as long as the process)."""
        self._closed.set()

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        for unpicklable in ("_sweeper", "_sweeper_lock", "_closed"):
            state.pop(unpicklable, None)
        return state

    def __setstate__(self, state: dict) -> None:
        self._sweeper, self._sweeper_lock, self._closed = None, threading.Lock(), threading.Event()
        super().__setstate__(state)
