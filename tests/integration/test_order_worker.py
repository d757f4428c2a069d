"""The order worker's scheduled purge of expired idempotency keys (a real worker process)."""

from __future__ import annotations

import uuid

import pytest

from tests.support.wait import wait_until

# Every test here starts service processes: deselect with -m "not slow".
pytestmark = pytest.mark.slow


def insert_key(db, expires_in: str) -> tuple[str, str]:
    """An idempotency key row expiring ``expires_in`` from now (negative: already expired)."""
    customer, key = f"cust-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    with db.transaction() as cur:
        cur.execute(
            "INSERT INTO idempotency_keys (customer_id, key, request_hash, state, expires_at)"
            " VALUES (%s, %s, 'hash', 'completed', now() + %s::interval)",
            (customer, key, expires_in))
    return customer, key


def key_exists(db, customer: str, key: str) -> bool:
    with db.transaction() as cur:
        cur.execute("SELECT 1 FROM idempotency_keys WHERE customer_id = %s AND key = %s",
                    (customer, key))
        return cur.fetchone() is not None


def test_worker_purges_expired_idempotency_keys_and_keeps_fresh_ones(processes, order_db):
    expired = insert_key(order_db, "-1 minute")
    fresh = insert_key(order_db, "1 hour")
    worker = processes.worker("order", ORDER_IDEMPOTENCY_PURGE_INTERVAL_S="0.2")
    wait_until(lambda: not key_exists(order_db, *expired), timeout=30,
               message="expired idempotency key purged by the worker")
    assert key_exists(order_db, *fresh)
    # Expired while the worker runs: gone on a later round, not only at start.
    late = insert_key(order_db, "-1 second")
    wait_until(lambda: not key_exists(order_db, *late), timeout=30,
               message="key expired later purged on a later round")
    assert key_exists(order_db, *fresh)
    assert "idempotency_keys_purged" in worker.log_text()
    assert worker.terminate() == 0
