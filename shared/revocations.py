"""The access-token deny-list as a resource server sees it: an in-process set fed by the auth service.

Logout and revocation put the revoked access tokens' ``jti`` on a deny-list the
auth service owns (table ``revoked_access_tokens``, each entry kept until its
token's ``exp``). Every API process follows it through the auth service's
internal feed ``GET /v1/revocations?after=<cursor>&wait=<s>`` (authenticated
with ``AUTH_REVOCATION_FEED_KEY``) and keeps the live entries in a dict, so
checking a token is one dict lookup on the request path.

* :class:`RevocationList` — started lazily by the first check, one background
  thread per process (after a fork, the child starts its own; under gunicorn's
  gevent workers the thread is a greenlet and the HTTP call cooperative).
  It long-polls: the auth service answers at once when an entry is added
  (NOTIFY), otherwise after ``AUTH_REVOCATION_WAIT_S``. A revocation is
  therefore refused everywhere within one feed round trip in the normal case,
  and within ``AUTH_REVOCATION_POLL_S`` plus a round trip when the auth process
  answering had no long-poll slot free.
* Staleness (seconds since the last answer) is the gauge
  ``auth_revocations_staleness_seconds``. When the feed cannot be reached the
  process keeps the last set it had, retries every ``AUTH_REVOCATION_POLL_S``,
  counts ``auth_revocation_feed_failures_total``, and past
  ``AUTH_REVOCATION_MAX_STALENESS_S`` logs ``revocation_feed_stale`` and sets
  ``auth_revocations_stale`` to 1. It does not refuse tokens meanwhile (an
  auth outage must not log everybody out), so the window during an outage is:
  a token revoked while this process cannot reach the feed stays accepted
  here until the feed is back (the cursor catches up at once) or the token
  expires, whichever is first — at most the access-token lifetime plus the
  30 s clock skew.
* Entries are dropped once their token has expired (plus the skew): the set
  holds only tokens that could still be presented.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

import requests
from prometheus_client import Counter, Gauge

from shared.logging import get_logger

log = get_logger(__name__)

FEED_PATH = "/v1/revocations"
# Seconds added to the long-poll wait for the HTTP timeout (the answer's own travel).
TIMEOUT_MARGIN_S = 5.0
CLOCK_SKEW_S = 30  # shared.auth.CLOCK_SKEW_S: a token is accepted this long past exp

STALENESS = Gauge("auth_revocations_staleness_seconds",
                  "Seconds since this process last heard from the revocation feed")
STALE = Gauge("auth_revocations_stale", "1 while the revocation feed has been silent too long")
FEED_FAILURES = Counter("auth_revocation_feed_failures_total", "Revocation feed requests that failed")
DENIED_ENTRIES = Gauge("auth_revocations_entries", "Revoked, unexpired access tokens known here")


@dataclass(frozen=True)
class FeedSettings:
    """Where the feed is and how it is followed (from shared.config.Settings)."""

    base_url: str
    key: str
    wait_s: float = 15.0
    poll_s: float = 1.0
    max_staleness_s: float = 60.0


class RevocationList:
    """The jtis of revoked, unexpired access tokens, followed from the auth service's feed."""

    def __init__(self, settings: FeedSettings, session: requests.Session | None = None):
        self.settings = settings
        self._denied: dict[str, int] = {}   # jti -> exp (epoch seconds)
        self._cursor = 0
        self._heard_at: float | None = None  # monotonic time of the last answer
        self._started_at = time.monotonic()
        self._stale_logged = False
        self._failing = False
        self._session = session or requests.Session()
        self._pid: int | None = None
        self._start_lock = threading.Lock()
        self._stop = threading.Event()
        self._synced = threading.Event()

    # ---------------------------------------------------------------- request path

    def is_revoked(self, jti: str | None) -> bool:
        """Whether ``jti`` is on the deny-list as known to this process (starts the feed)."""
        if self._pid != os.getpid():
            self.start()
        return jti is not None and jti in self._denied

    def staleness_s(self) -> float:
        """Seconds since the feed last answered (or since this list started, if it never has)."""
        return time.monotonic() - (self._started_at if self._heard_at is None else self._heard_at)

    def wait_synced(self, timeout_s: float) -> bool:
        """Wait for the first complete answer of the feed (tests, readiness)."""
        self.start()
        return self._synced.wait(timeout_s)

    # ---------------------------------------------------------------- the feed

    def start(self) -> None:
        """Start this process's feed thread (again after a fork); idempotent."""
        with self._start_lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._started_at = time.monotonic()
            self._synced = threading.Event()
            threading.Thread(target=self._follow, name="revocation-feed", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _follow(self) -> None:
        pid = os.getpid()
        while not self._stop.is_set() and self._pid == pid:
            started = time.monotonic()
            try:
                answer = self._fetch(0.0 if not self._synced.is_set() else self.settings.wait_s)
            except (requests.RequestException, ValueError, KeyError, TypeError) as exc:
                FEED_FAILURES.inc()
                self._note_silence(type(exc).__name__)
                self._stop.wait(self.settings.poll_s)
                continue
            more = self._apply(answer)
            if more:
                continue  # a full page: the rest at once
            self._synced.set()
            if not answer["revocations"] and time.monotonic() - started < self.settings.poll_s:
                # Answered at once with nothing (no long-poll slot free there): poll, don't spin.
                self._stop.wait(self.settings.poll_s - (time.monotonic() - started))

    def _fetch(self, wait_s: float) -> dict:
        response = self._session.get(
            self.settings.base_url.rstrip("/") + FEED_PATH,
            params={"after": self._cursor, "wait": wait_s},
            headers={"Authorization": f"Bearer {self.settings.key}"},
            timeout=wait_s + TIMEOUT_MARGIN_S)
        if response.status_code != 200:
            raise ValueError(f"revocation feed answered HTTP {response.status_code}")
        answer = response.json()
        if not isinstance(answer.get("revocations"), list) or not isinstance(answer.get("cursor"), int):
            raise ValueError("revocation feed answer is malformed")
        return answer

    def _apply(self, answer: dict) -> bool:
        now = time.time()
        fresh = {str(e["jti"]): int(e["exp"]) for e in answer["revocations"]}
        # A new dict swapped in whole: readers on other threads never see one half-updated.
        base = {} if answer.get("reset") else self._denied
        denied = {jti: exp for jti, exp in {**base, **fresh}.items() if exp + CLOCK_SKEW_S > now}
        self._denied = denied
        self._cursor = answer["cursor"]
        self._heard_at = time.monotonic()
        STALENESS.set(0)
        DENIED_ENTRIES.set(len(denied))
        self._failing = False
        if self._stale_logged:
            log.info("revocation_feed_recovered")
            self._stale_logged = False
            STALE.set(0)
        return bool(answer.get("more"))

    def _note_silence(self, error: str) -> None:
        staleness = self.staleness_s()
        STALENESS.set(staleness)
        if not self._failing:  # once per outage, not once per retry
            log.warning("revocation_feed_failed", error=error, staleness_s=round(staleness, 3),
                        denied=len(self._denied))
            self._failing = True
        if staleness > self.settings.max_staleness_s and not self._stale_logged:
            # Tokens revoked from now on are not refused here until the feed is back.
            log.error("revocation_feed_stale", staleness_s=round(staleness, 3),
                      max_staleness_s=self.settings.max_staleness_s)
            self._stale_logged = True
            STALE.set(1)
