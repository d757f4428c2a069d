"""Stock moves lock products in sku order, as reservations do: no deadlock between them.

A reservation locks its products ``ORDER BY sku`` before moving stock; the
worker's confirm and release moved stock with one ``UPDATE ... FROM unnest``,
whose rows are locked in whatever order the plan visits them (for a small
table, the physical order). A reservation and a confirmation of two orders
sharing products could then lock them in opposite orders and deadlock
(found by the chaos run: ``DeadlockDetected`` 500s from ``PUT /v1/reservations``).
"""

from __future__ import annotations

import threading
import uuid
from decimal import Decimal

import psycopg2
import pytest

from services.inventory import repository as repo
from tests.support.wait import wait_until


def _product(sku: str) -> dict:
    return {"sku": sku, "name": sku, "price": Decimal("1.00"), "currency": "EUR", "on_hand": 100,
            "allow_backorder": False}


def test_move_stock_takes_its_locks_in_sku_order(inventory_db, clean_db):
    # Physical order B before A: an UPDATE visiting rows as stored would lock B first.
    with inventory_db.transaction() as cur:
        for sku in ("LOCK-B", "LOCK-A"):
            repo.insert_product_if_absent(cur, uuid.uuid4(), _product(sku))
    holder = psycopg2.connect(clean_db)
    holder.autocommit = False
    mover_done = threading.Event()
    errors: list[BaseException] = []
    try:
        with holder.cursor() as cur:
            cur.execute("SET search_path TO inventory_svc")
            cur.execute("SELECT 1 FROM products WHERE sku = 'LOCK-A' FOR UPDATE")

        def move() -> None:
            try:
                with inventory_db.transaction() as cur:
                    repo.move_stock(cur, [("LOCK-A", 0, 1), ("LOCK-B", 0, 1)])
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
            finally:
                mover_done.set()

        mover = threading.Thread(target=move, daemon=True)
        mover.start()

        def waiting_on_a() -> bool:
            with inventory_db.transaction() as cur:
                cur.execute("SELECT count(*) AS n FROM pg_locks WHERE NOT granted"
                            " AND locktype = 'transactionid'")
                return cur.fetchone()["n"] >= 1

        wait_until(waiting_on_a, timeout=10)
        # The mover waits for A; it must not hold B meanwhile (that is the deadlock).
        probe = psycopg2.connect(inventory_db.dsn)
        try:
            with probe.cursor() as cur:
                cur.execute("SET search_path TO inventory_svc")
                try:
                    cur.execute("SELECT 1 FROM products WHERE sku = 'LOCK-B' FOR UPDATE NOWAIT")
                except psycopg2.errors.LockNotAvailable:
                    pytest.fail("move_stock locked LOCK-B while waiting for LOCK-A")
            probe.rollback()
        finally:
            probe.close()
    finally:
        holder.rollback()
        holder.close()
    assert mover_done.wait(10) and errors == []
    with inventory_db.transaction() as cur:
        cur.execute("SELECT sku, reserved FROM products WHERE sku LIKE 'LOCK-%' ORDER BY sku")
        assert [(r["sku"], r["reserved"]) for r in cur.fetchall()] == [("LOCK-A", 1), ("LOCK-B", 1)]
