"""Keeping a mail's lease while it is sent (see :mod:`services.notification.mailer`).

:class:`LeaseKeeper` renews one mail's lease every third of the lease on a
thread of its own while the provider has the mail, so a slow mail server never
lets the lease run out under a living sender; it stops at the first renewal
that finds the lease taken over. :func:`lease_lost` logs an outcome that could
not be recorded because the lease had been taken over.
"""

from __future__ import annotations

import threading
import uuid

from services.notification import email_repository as repo
from shared.logging import get_logger

log = get_logger(__name__)


def lease_lost(row: dict, outcome: str) -> None:
    """Log an outcome that was not recorded: the mail's lease is another sender's now."""
    # Only when renewals failed for a whole lease (the database was out of reach): the
    # new holder records its own outcome, and may send the mail once more.
    log.warning("email_lease_lost", email_id=row["id"], outcome=outcome)


class LeaseKeeper:
    """Renews one mail's lease every ``lease_s / 3`` on a thread of its own while the provider
    has the mail (a slow server may take longer than a lease)."""

    def __init__(self, db, email_id: int, token: uuid.UUID, lease_s: float):
        self.db, self.email_id, self.token, self.lease_s = db, email_id, token, lease_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"email-lease-{email_id}")

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            try:
                with self.db.transaction() as cur:
                    held = repo.renew_email_lease(cur, self.email_id, self.token, self.lease_s)
            except Exception as exc:  # the database may be back before the lease runs out
                log.warning("email_lease_renew_failed", email_id=self.email_id, error=str(exc))
                continue
            if not held:
                log.warning("email_lease_lost", email_id=self.email_id, outcome="sending")
                return
