"""Two mail dispatchers and a slow SMTP server: every mail is received exactly once.

A dispatcher claims a batch of mails under a lease. When the server is slow,
sending the batch takes longer than the lease, and another dispatcher takes
over the mails whose lease ran out. Each mail's lease must be held (renewed)
while it is sent and checked before it is sent, and only the lease holder may
mark it sent, so a mail taken over is sent by its new holder alone.

The server is tests/support/smtp.py's real aiosmtpd server, made slow; the
dispatchers are :class:`services.notification.mailer.EmailDispatcher` on the
test database, each on its own thread, with a lease far shorter than a batch.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter

import pytest

from services.notification import email_repository as repo
from services.notification.mailer import EmailDispatcher, SmtpProvider
from services.notification.settings import EmailSettings
from shared.resilience import BreakerRegistry
from tests.support.smtp import SmtpServer

MAILS = 6
SMTP_DELAY_S = 0.6     # per mail: a batch of MAILS takes 3.6 s ...
LEASE_S = 1.0          # ... far longer than a lease
DEADLINE_S = 60.0


@pytest.fixture
def slow_smtp(port):
    server = SmtpServer(port, delay_s=SMTP_DELAY_S).start()
    yield server
    server.stop()


def _queue_mails(db) -> dict[str, str]:
    """MAILS pending mails; their order ids by the subject each one will have."""
    subjects = {}
    with db.transaction() as cur:
        for _ in range(MAILS):
            order_id = str(uuid.uuid4())
            repo.insert_email(cur, str(uuid.uuid4()), order_id, "order_cancelled",
                              "alice@example.com", {"order_id": order_id, "customer_name": "Alice",
                                                    "reason": None})
            subjects[f"Your order {order_id[:8]} was cancelled"] = order_id
    return subjects


def _statuses(db) -> Counter:
    with db.transaction() as cur:
        cur.execute("SELECT status FROM email_deliveries")
        return Counter(row["status"] for row in cur.fetchall())


def test_a_slow_smtp_server_never_gets_a_mail_twice(notification_db, slow_smtp):
    subjects = _queue_mails(notification_db)
    settings = EmailSettings(provider="smtp", smtp_port=slow_smtp.port, smtp_timeout_s=10.0,
                             lease_s=LEASE_S, max_attempts=3, retry_base_s=0.1, retry_cap_s=0.2)
    dispatchers = [EmailDispatcher(notification_db, SmtpProvider(settings), settings,
                                   BreakerRegistry({})) for _ in range(2)]
    stop = threading.Event()
    errors: list[BaseException] = []

    def run(dispatcher, start_after_s):
        time.sleep(start_after_s)
        try:
            while not stop.is_set():
                if not dispatcher.dispatch_once():
                    time.sleep(0.05)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    # The first claims every mail; the second comes in while the first is still sending.
    threads = [threading.Thread(target=run, args=(d, n * 0.2), name=f"dispatcher-{n}")
               for n, d in enumerate(dispatchers)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + DEADLINE_S
    try:
        while _statuses(notification_db) != Counter(sent=MAILS):
            assert time.monotonic() < deadline, _statuses(notification_db)
            time.sleep(0.1)
        time.sleep(2 * SMTP_DELAY_S)  # a duplicate still in flight would land now
    finally:
        stop.set()
        for thread in threads:
            thread.join(DEADLINE_S)
    assert not errors, errors

    received = Counter(message["Subject"] for message in slow_smtp.received())
    assert set(received) == set(subjects)
    assert received == Counter({subject: 1 for subject in subjects}), received
    with notification_db.transaction() as cur:
        cur.execute("SELECT status, provider, lease_until FROM email_deliveries")
        rows = cur.fetchall()
    assert {(r["status"], r["provider"], r["lease_until"]) for r in rows} == {("sent", "smtp", None)}


def test_only_the_lease_holder_renews_or_records_an_outcome(notification_db):
    _queue_mails(notification_db)
    first, second = uuid.uuid4(), uuid.uuid4()
    with notification_db.transaction() as cur:
        claimed = repo.claim_emails(cur, MAILS, 0.05, first)
    assert len(claimed) == MAILS
    time.sleep(0.1)  # every lease runs out; the second sender takes the mails over
    with notification_db.transaction() as cur:
        assert len(repo.claim_emails(cur, MAILS, 60, second)) == MAILS
    email_id = claimed[0]["id"]
    with notification_db.transaction() as cur:
        assert repo.renew_email_lease(cur, email_id, first, 60) is False
        assert repo.mark_email_sent(cur, email_id, first, "smtp", "<late@x>") is False
        assert repo.retry_email(cur, email_id, first, 1, "late") is False
        assert repo.fail_email(cur, email_id, first, "late") is False
        cur.execute("SELECT status, lease_token, provider_message_id, attempts"
                    " FROM email_deliveries WHERE id = %s", (email_id,))
        assert cur.fetchone() == {"status": "sending", "lease_token": second,
                                  "provider_message_id": None, "attempts": 2}
        assert repo.renew_email_lease(cur, email_id, second, 60) is True
        assert repo.mark_email_sent(cur, email_id, second, "smtp", "<ok@x>") is True
        cur.execute("SELECT status, lease_token, lease_until FROM email_deliveries WHERE id = %s",
                    (email_id,))
        assert cur.fetchone() == {"status": "sent", "lease_token": None, "lease_until": None}
