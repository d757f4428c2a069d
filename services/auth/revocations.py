"""The auth service's side of the access-token deny-list: the feed verifiers follow.

Every resource-server process keeps the deny-list in memory
(:mod:`shared.revocations`) and follows ``GET /v1/revocations?after=<cursor>``.
This module answers it:

* :class:`RevocationHub` — one thread per auth process that learns the newest
  deny-list ``seq`` from a NOTIFY on ``auth_revocations`` (sent in the
  revoking transaction, delivered at its commit) or, if a NOTIFY is lost, from
  a poll every ``POLL_S``. Long-polling requests wait on it, not on the
  database, so a hundred waiting verifiers cost no queries. The same thread
  purges issued and denied tokens past their expiry (plus the verifiers'
  clock skew) every ``PURGE_INTERVAL_S``.
* A request waits for an entry past its cursor up to ``wait`` seconds; at most
  ``max_waiters`` requests per process wait at once (each holds a gunicorn
  thread), the others are answered at once and their verifier polls again
  after its own interval.
"""

from __future__ import annotations

import hmac
import os
import threading
import time

from services.auth import token_repository as token_repo
from shared.auth import CLOCK_SKEW_S
from shared.logging import get_logger
from shared.notify import run_on_notify

log = get_logger(__name__)

CHANNEL = "auth_revocations"
POLL_S = 1.0
PURGE_INTERVAL_S = 60.0
PAGE_SIZE = 1000
MAX_WAIT_S = 20.0


class RevocationHub:
    """The newest deny-list seq, as known to this process; waits for it to pass a cursor."""

    def __init__(self, db, max_waiters: int):
        self.db = db
        self._latest = -1  # unknown until the thread's first read
        self._changed = threading.Condition()
        self._waiters = threading.BoundedSemaphore(max(1, max_waiters))
        self._stop = threading.Event()
        self._closing = False
        self._pid: int | None = None
        self._start_lock = threading.Lock()
        self._purged_at = float("-inf")

    def _ensure_started(self) -> None:
        # Per process: gunicorn forks after the app is built, and a thread does not survive a fork.
        if self._pid == os.getpid():
            return
        with self._start_lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            threading.Thread(target=self._run, name="revocation-hub", daemon=True).start()

    def _run(self) -> None:
        run_on_notify(self.db, CHANNEL, self._step, self._stop, poll_interval_s=POLL_S,
                      on_error=lambda exc: log.warning("revocation_hub_failed", error=str(exc)))

    def _step(self) -> None:
        with self.db.transaction() as cur:
            latest = token_repo.latest_revocation_seq(cur)
        with self._changed:
            if latest != self._latest:
                self._latest = latest
                self._changed.notify_all()
        if time.monotonic() - self._purged_at >= PURGE_INTERVAL_S:
            self._purged_at = time.monotonic()
            with self.db.transaction() as cur:
                purged = token_repo.purge_expired_access_tokens(cur, CLOCK_SKEW_S)
            if purged:
                log.info("expired_access_tokens_purged", rows=purged)
        return None

    def wait_past(self, cursor: int, wait_s: float) -> None:
        """Return once an entry past ``cursor`` may exist, or after ``wait_s`` (at once when
        ``max_waiters`` requests of this process are already waiting)."""
        self._ensure_started()
        if wait_s <= 0 or self._closing or not self._waiters.acquire(blocking=False):
            return
        try:
            with self._changed:
                self._changed.wait_for(lambda: self._latest > cursor or self._closing,
                                       timeout=wait_s)
        finally:
            self._waiters.release()

    def close(self) -> None:
        """Stop following the deny-list and answer every waiting request now (SIGTERM, teardown)."""
        self._closing = True
        self._stop.set()
        with self._changed:
            self._changed.notify_all()


def read_feed(db, hub: RevocationHub, cursor: int, wait_s: float) -> dict:
    """The feed's answer: the entries past ``cursor`` (waiting for one up to ``wait_s``).

    A cursor beyond the newest seq (the table was restored from a backup, say) gets every
    live entry and ``reset: true``: the verifier replaces its set instead of adding to it.
    """
    entries, reset, latest = _page(db, cursor)
    if not entries and not reset:
        hub.wait_past(cursor, min(wait_s, MAX_WAIT_S))
        entries, reset, latest = _page(db, cursor)
    next_cursor = entries[-1]["seq"] if entries else (latest if reset else cursor)
    return {"revocations": [{"jti": e["jti"], "exp": e["exp"]} for e in entries],
            "cursor": next_cursor, "reset": reset, "more": len(entries) >= PAGE_SIZE}


def _page(db, cursor: int):
    with db.transaction() as cur:
        latest = token_repo.latest_revocation_seq(cur)
        reset = cursor > latest
        entries = token_repo.revocations_after(cur, 0 if reset else cursor, PAGE_SIZE, CLOCK_SKEW_S)
    return entries, reset, latest


def feed_key_matches(presented: str, expected: str) -> bool:
    """Constant-time comparison of the feed's shared key."""
    return hmac.compare_digest(presented.encode(), expected.encode())
