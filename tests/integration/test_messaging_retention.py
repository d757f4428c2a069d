"""The messaging runtime's retention job: old published outbox rows and old inbox rows go.

Every service's worker runs it (``shared.worker``); what stays: unpublished
outbox rows of any age (the relay still owes them), and anything younger than
the retention period (an inbox row must outlive every redelivery of its event).
"""

from __future__ import annotations

import os
import signal
import threading

import pytest

from shared.config import load_settings
from shared.db import Database
from shared.messaging import retention
from shared.worker import WorkerPlan, run_worker
from tests.support.wait import wait_until

SERVICE_DBS = ("order_db", "delivery_db", "inventory_db", "notification_db")


def _seed(db) -> None:
    with db.transaction() as cur:
        for label, created, published in (
                ("old", "41 days", "40 days"), ("old", "41 days", "40 days"),
                ("old", "41 days", "35 days"), ("published recently", "41 days", "1 day"),
                ("old, unpublished", "40 days", None), ("new, unpublished", "0 days", None)):
            cur.execute(
                "INSERT INTO outbox (event_id, queue, aggregate_id, event_type, body, created_at,"
                " published_at) VALUES (gen_random_uuid(), 'q', %s, 'x', '{}',"
                " now() - %s::interval, now() - %s::interval)", (label, created, published))
        for received in ("40 days", "40 days", "31 days", "29 days", "0 days"):
            cur.execute("INSERT INTO inbox (consumer, event_id, event_type, received_at)"
                        " VALUES ('c', gen_random_uuid(), %s, now() - %s::interval)",
                        (f"received {received} ago", received))


def _left(db) -> tuple[list[str], list[str]]:
    with db.transaction() as cur:
        cur.execute("SELECT aggregate_id FROM outbox ORDER BY id")
        outbox = [row["aggregate_id"] for row in cur.fetchall()]
        cur.execute("SELECT event_type FROM inbox ORDER BY received_at")
        inbox = [row["event_type"] for row in cur.fetchall()]
    return outbox, inbox


KEPT = (["published recently", "old, unpublished", "new, unpublished"],
        ["received 29 days ago", "received 0 days ago"])


@pytest.mark.parametrize("db_name", SERVICE_DBS)
def test_purge_deletes_old_published_outbox_and_old_inbox_rows_in_batches(request, db_name):
    db = request.getfixturevalue(db_name)
    _seed(db)
    # Batches of two: three old rows per table take two transactions.
    assert retention.purge_once(db, days=30, batch=2) == {"outbox": 3, "inbox": 3}
    assert _left(db) == KEPT
    assert retention.purge_once(db, days=30, batch=2) == {"outbox": 0, "inbox": 0}


def test_every_worker_runs_the_retention_job(order_db, clean_db):
    _seed(order_db)
    settings = load_settings("order", {"DATABASE_URL": clean_db, "APP_ENV": "test",
                                       "OUTBOX_RELAY_ENABLED": "false",
                                       "MESSAGING_RETENTION_DAYS": "30"})
    worker_db = Database(clean_db, settings.schema, 1, 4)
    outcome: dict[str, object] = {}
    worker_ended = threading.Event()

    def purged_or_ended():
        return worker_ended.is_set() or _left(order_db) == KEPT

    def stop_once_purged() -> None:
        try:
            wait_until(purged_or_ended, 20, message="the worker's retention job")
            outcome["left"] = _left(order_db)
        except AssertionError as exc:
            outcome["error"] = exc
        finally:
            # The worker's own shutdown path; never signal a test run whose worker already ended.
            if not worker_ended.is_set():
                os.kill(os.getpid(), signal.SIGTERM)

    watcher = threading.Thread(target=stop_once_purged)
    watcher.start()
    try:
        exit_code = run_worker(settings, worker_db, WorkerPlan())  # no consumers, no relay
    finally:
        worker_ended.set()
        watcher.join()
    assert exit_code == 0
    assert "error" not in outcome, outcome.get("error")
    assert outcome["left"] == KEPT
