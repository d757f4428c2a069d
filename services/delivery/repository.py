"""All SQL of the delivery service (schema ``delivery_svc``), parameterized."""

from __future__ import annotations

import json
from datetime import datetime
from uuid import UUID

from services.delivery.domain import Reach


def lock_order_key(cur, order_id: UUID) -> None:
    """Serialize every handler touching one order's shipment until the transaction ends.

    order.paid and order.cancelled arrive on different queues and may be
    handled at the same moment; without this lock a create could miss a
    concurrent cancel's tombstone and ship a cancelled order.
    """
    cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 42))", (f"order:{order_id}",))


def insert_shipment(cur, shipment_id: UUID, order_id: UUID, customer_id: str, carrier: str,
                    tracking_number: str, shipping_address: dict) -> bool:
    """Create the order's shipment; False when it already has one."""
    cur.execute(
        "INSERT INTO shipments (id, order_id, customer_id, carrier, tracking_number, status,"
        " shipping_address) VALUES (%s, %s, %s, %s, %s, 'CREATED', %s)"
        " ON CONFLICT (order_id) DO NOTHING",
        (shipment_id, order_id, customer_id, carrier, tracking_number,
         json.dumps(shipping_address)),
    )
    return cur.rowcount == 1


def add_event(cur, shipment_id: UUID, status: str, previous_status: str | None, source: str,
              occurred_at: datetime | None = None, location: str | None = None,
              note: str | None = None) -> None:
    cur.execute(
        "INSERT INTO shipment_events (shipment_id, status, previous_status, source, location,"
        " note, occurred_at) VALUES (%s, %s, %s, %s, %s, %s, COALESCE(%s, now()))",
        (shipment_id, status, previous_status, source, location, note, occurred_at),
    )


def lock_shipment(cur, shipment_id: UUID) -> dict | None:
    cur.execute("SELECT * FROM shipments WHERE id = %s FOR UPDATE", (shipment_id,))
    return cur.fetchone()


def lock_shipment_by_order(cur, order_id: UUID) -> dict | None:
    cur.execute("SELECT * FROM shipments WHERE order_id = %s FOR UPDATE", (order_id,))
    return cur.fetchone()


def set_status(cur, shipment_id: UUID, status: str) -> None:
    cur.execute("UPDATE shipments SET status = %s, updated_at = clock_timestamp() WHERE id = %s",
                (status, shipment_id))


def get_shipment(cur, shipment_id: UUID) -> dict | None:
    cur.execute("SELECT * FROM shipments WHERE id = %s", (shipment_id,))
    shipment = cur.fetchone()
    if shipment is not None:
        cur.execute("SELECT status, previous_status, source, location, note, occurred_at"
                    " FROM shipment_events WHERE shipment_id = %s ORDER BY id", (shipment_id,))
        shipment["events"] = cur.fetchall()
    return shipment


def list_shipments(cur, reach: Reach, order_id: UUID | None, status: str | None,
                   after: tuple[datetime, UUID] | None, limit: int) -> list[dict]:
    """Shipments within ``reach`` (none when it names no one), newest first."""
    cur.execute(
        """
        SELECT * FROM shipments
         WHERE (%(everything)s
                OR customer_id = %(customer)s::text
                OR carrier = %(carrier)s::text)
           AND (%(order)s::uuid IS NULL OR order_id = %(order)s)
           AND (%(status)s::text IS NULL OR status = %(status)s)
           AND (%(after_t)s::timestamptz IS NULL OR (created_at, id) < (%(after_t)s, %(after_i)s))
         ORDER BY created_at DESC, id DESC
         LIMIT %(limit)s
        """,
        {"everything": reach.everything, "customer": reach.customer, "carrier": reach.carrier,
         "order": order_id, "status": status,
         "after_t": after[0] if after else None, "after_i": after[1] if after else None,
         "limit": limit},
    )
    return cur.fetchall()


def record_cancel_tombstone(cur, order_id: UUID, reason: str | None) -> None:
    cur.execute("INSERT INTO cancelled_orders (order_id, reason) VALUES (%s, %s)"
                " ON CONFLICT (order_id) DO NOTHING", (order_id, reason))


def is_cancelled(cur, order_id: UUID) -> bool:
    cur.execute("SELECT 1 FROM cancelled_orders WHERE order_id = %s", (order_id,))
    return cur.fetchone() is not None


def claim_due_for_simulation(cur, step_s: float, limit: int) -> list[dict]:
    """Active shipments whose last change is older than ``step_s``, locked, skipping busy ones."""
    cur.execute(
        """
        SELECT * FROM shipments
         WHERE status IN ('CREATED', 'SHIPPED', 'IN_TRANSIT', 'OUT_FOR_DELIVERY')
           AND updated_at <= clock_timestamp() - make_interval(secs => %s)
         ORDER BY updated_at
         LIMIT %s
         FOR UPDATE SKIP LOCKED
        """,
        (step_s, limit),
    )
    return cur.fetchall()
