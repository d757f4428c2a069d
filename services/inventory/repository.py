"""All SQL of the inventory service (schema ``inventory_svc``), parameterized.

Locking discipline (no deadlocks): product rows are always locked in sku
order (:func:`lock_products`). A transaction that changes an existing
reservation takes the order's advisory lock first (:func:`lock_order_key`),
then the reservation row, then the products. A new reservation locks only its
products and then inserts the reservation row, which nothing else can hold yet.
"""

from __future__ import annotations

import json
from datetime import datetime
from uuid import UUID

from shared.rows import grouped

# A product's derived status, in SQL (the same rule as domain.stock_status).
_STOCK_STATUS_SQL = """
    CASE WHEN on_hand - reserved > 0 THEN 'instock'
         WHEN allow_backorder THEN 'onbackorder'
         ELSE 'outofstock' END
"""
_PRODUCT_COLUMNS = (
    "sku, id, name, price, currency, on_hand, reserved, allow_backorder, version, created_at,"
    " updated_at"
)


# --- products ---------------------------------------------------------------------------
def insert_product(cur, product_id: UUID, data: dict) -> dict | None:
    """Create a product (or revive a deleted one with that sku); None if the sku is live."""
    cur.execute(
        f"""
        INSERT INTO products (sku, id, name, price, currency, on_hand, allow_backorder)
        VALUES (%(sku)s, %(id)s, %(name)s, %(price)s, %(currency)s, %(on_hand)s,
                %(allow_backorder)s)
        ON CONFLICT (sku) DO UPDATE
           SET id = EXCLUDED.id, name = EXCLUDED.name, price = EXCLUDED.price,
               currency = EXCLUDED.currency, on_hand = EXCLUDED.on_hand, reserved = 0,
               allow_backorder = EXCLUDED.allow_backorder, version = products.version + 1,
               created_at = clock_timestamp(), updated_at = clock_timestamp(), deleted_at = NULL
         WHERE products.deleted_at IS NOT NULL
        RETURNING {_PRODUCT_COLUMNS}
        """,
        {**data, "id": product_id},
    )
    return cur.fetchone()


def insert_product_if_absent(cur, product_id: UUID, data: dict) -> bool:
    """Create a product unless the sku exists (live or deleted); True if created."""
    cur.execute(
        "INSERT INTO products (sku, id, name, price, currency, on_hand, allow_backorder)"
        " VALUES (%(sku)s, %(id)s, %(name)s, %(price)s, %(currency)s, %(on_hand)s,"
        " %(allow_backorder)s) ON CONFLICT (sku) DO NOTHING",
        {**data, "id": product_id})
    return cur.rowcount == 1


def get_product(cur, sku: str, lock: bool = False) -> dict | None:
    """A live product, optionally locked for the rest of the transaction."""
    cur.execute(f"SELECT {_PRODUCT_COLUMNS} FROM products WHERE sku = %s AND deleted_at IS NULL"
                + (" FOR UPDATE" if lock else ""), (sku,))
    return cur.fetchone()


def lock_products(cur, skus: list[str]) -> dict[str, dict]:
    """Lock the live products among ``skus`` in sku order; sku -> row."""
    cur.execute(
        f"SELECT {_PRODUCT_COLUMNS} FROM products WHERE sku = ANY(%s) AND deleted_at IS NULL"
        " ORDER BY sku FOR UPDATE", (sorted(skus),))
    return {row["sku"]: row for row in cur.fetchall()}


def find_products(cur, skus: list[str]) -> dict[str, dict]:
    """The live products among ``skus`` (no lock); sku -> row."""
    cur.execute(f"SELECT {_PRODUCT_COLUMNS} FROM products WHERE sku = ANY(%s)"
                " AND deleted_at IS NULL", (skus,))
    return {row["sku"]: row for row in cur.fetchall()}


def update_product(cur, sku: str, data: dict) -> dict:
    cur.execute(
        f"""
        UPDATE products SET name = %(name)s, price = %(price)s, currency = %(currency)s,
               allow_backorder = %(allow_backorder)s, version = version + 1,
               updated_at = clock_timestamp()
         WHERE sku = %(sku)s AND deleted_at IS NULL
        RETURNING {_PRODUCT_COLUMNS}
        """,
        {**data, "sku": sku},
    )
    return cur.fetchone()


def delete_product(cur, sku: str) -> None:
    """Soft delete: reservations and adjustments keep pointing at the row."""
    cur.execute("UPDATE products SET deleted_at = clock_timestamp(), updated_at = clock_timestamp()"
                " WHERE sku = %s AND deleted_at IS NULL", (sku,))


def list_products(cur, q: str | None, stock_status: str | None, currency: str | None,
                  after: tuple[datetime, UUID] | None, limit: int) -> list[dict]:
    """A page of live products, newest first."""
    cur.execute(
        f"""
        SELECT {_PRODUCT_COLUMNS} FROM products
         WHERE deleted_at IS NULL
           AND (%(q)s::text IS NULL OR sku ILIKE %(pattern)s OR name ILIKE %(pattern)s)
           AND (%(status)s::text IS NULL OR ({_STOCK_STATUS_SQL}) = %(status)s)
           AND (%(currency)s::text IS NULL OR currency = %(currency)s)
           AND (%(after_t)s::timestamptz IS NULL OR (created_at, id) < (%(after_t)s, %(after_i)s))
         ORDER BY created_at DESC, id DESC
         LIMIT %(limit)s
        """,
        {"q": q, "pattern": f"%{_escape_like(q)}%" if q else None, "status": stock_status,
         "currency": currency, "after_t": after[0] if after else None,
         "after_i": after[1] if after else None, "limit": limit},
    )
    return cur.fetchall()


def set_on_hand(cur, sku: str, on_hand: int) -> dict:
    cur.execute(
        f"UPDATE products SET on_hand = %s, version = version + 1, updated_at = clock_timestamp()"
        f" WHERE sku = %s RETURNING {_PRODUCT_COLUMNS}", (on_hand, sku))
    return cur.fetchone()


def insert_adjustment(cur, sku: str, delta: int, reason: str, note: str | None,
                      on_hand_after: int, actor: str) -> dict:
    cur.execute(
        "INSERT INTO stock_adjustments (sku, delta, reason, note, on_hand_after, actor)"
        " VALUES (%s, %s, %s, %s, %s, %s) RETURNING *",
        (sku, delta, reason, note, on_hand_after, actor))
    return cur.fetchone()


def move_stock(cur, changes: list[tuple[str, int, int]]) -> None:
    """Apply (sku, on_hand delta, reserved delta) to each product, in sku order.

    One statement for every line; the table's CHECKs refuse anything that
    would oversell, whatever the caller computed.
    """
    if not changes:
        return
    ordered = sorted(changes)
    # Lock first, in sku order as reservations do (lock_products): an UPDATE ... FROM locks
    # rows in the order its plan visits them, and two transactions sharing products in
    # opposite orders deadlock.
    cur.execute("SELECT 1 FROM products WHERE sku = ANY(%s) ORDER BY sku FOR UPDATE",
                ([c[0] for c in ordered],))
    cur.execute(
        """
        UPDATE products AS p
           SET on_hand = p.on_hand + c.on_hand_delta, reserved = p.reserved + c.reserved_delta,
               version = p.version + 1, updated_at = clock_timestamp()
          FROM unnest(%s::text[], %s::int[], %s::int[]) AS c(sku, on_hand_delta, reserved_delta)
         WHERE p.sku = c.sku
        """,
        ([c[0] for c in ordered], [c[1] for c in ordered], [c[2] for c in ordered]),
    )


def claim_refund_restock(cur, refund_id: UUID, order_id: UUID, lines: list[dict]) -> bool:
    """Record that a refund's lines are restocked now; False if they were before."""
    cur.execute("INSERT INTO refund_restocks (refund_id, order_id, lines) VALUES (%s, %s, %s)"
                " ON CONFLICT (refund_id) DO NOTHING",
                (refund_id, order_id, json.dumps([{"sku": line["sku"], "quantity": line["quantity"]}
                                                  for line in lines])))
    return cur.rowcount == 1


# --- reservations -----------------------------------------------------------------------
def lock_order_key(cur, order_id: UUID) -> None:
    """Serialize everything that touches one order's reservation until the transaction ends.

    Two PUTs for a new order id would otherwise both find no reservation and
    both take stock; the lock makes the second one see the first one's row.
    """
    cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 7))", (f"reservation:{order_id}",))


def get_reservation(cur, order_id: UUID, lock: bool = False) -> dict | None:
    """The reservation with its lines (request order), or None."""
    cur.execute("SELECT * FROM reservations WHERE order_id = %s" + (" FOR UPDATE" if lock else ""),
                (order_id,))
    reservation = cur.fetchone()
    if reservation is not None:
        reservation["lines"] = _lines(cur, [order_id])[order_id]
    return reservation


def insert_reservation(cur, order_id: UUID, lines_hash: str, currency: str, total,
                       requested_by: str, ttl_s: float, lines: list[dict]) -> dict | None:
    """Insert a HELD reservation and its lines (one statement); None if the order has one."""
    cur.execute(
        """
        WITH reservation AS (
            INSERT INTO reservations (order_id, status, lines_hash, currency, total, requested_by,
                                      expires_at)
            VALUES (%(order_id)s, 'HELD', %(hash)s, %(currency)s, %(total)s, %(by)s,
                    clock_timestamp() + make_interval(secs => %(ttl)s))
            ON CONFLICT (order_id) DO NOTHING
            RETURNING *
        ), inserted_lines AS (
            INSERT INTO reservation_lines (order_id, line_no, sku, name, quantity, unit_price,
                                           line_total)
            SELECT %(order_id)s, l.line_no, l.sku, l.name, l.quantity, l.unit_price, l.line_total
              FROM unnest(%(skus)s::text[], %(names)s::text[], %(quantities)s::int[],
                          %(prices)s::numeric[], %(totals)s::numeric[])
                   WITH ORDINALITY AS l(sku, name, quantity, unit_price, line_total, line_no)
             WHERE EXISTS (SELECT 1 FROM reservation)
        )
        SELECT * FROM reservation
        """,
        {"order_id": order_id, "hash": lines_hash, "currency": currency, "total": total,
         "by": requested_by, "ttl": ttl_s, "skus": [line["sku"] for line in lines],
         "names": [line["name"] for line in lines],
         "quantities": [line["quantity"] for line in lines],
         "prices": [line["unit_price"] for line in lines],
         "totals": [line["line_total"] for line in lines]})
    return cur.fetchone()


def set_reservation_status(cur, order_id: UUID, status: str,
                           release_reason: str | None = None) -> None:
    cur.execute(
        """
        UPDATE reservations
           SET status = %(status)s, updated_at = clock_timestamp(),
               expires_at = CASE WHEN %(status)s = 'HELD' THEN expires_at END,
               confirmed_at = CASE WHEN %(status)s = 'CONFIRMED' THEN clock_timestamp()
                                   ELSE confirmed_at END,
               released_at = CASE WHEN %(status)s = 'RELEASED' THEN clock_timestamp()
                                  ELSE released_at END,
               release_reason = COALESCE(%(reason)s, release_reason)
         WHERE order_id = %(order_id)s
        """,
        {"status": status, "reason": release_reason, "order_id": order_id})


def hold_again(cur, order_id: UUID, ttl_s: float) -> None:
    """A released (expired) reservation is HELD again with a fresh time-to-live."""
    cur.execute(
        "UPDATE reservations SET status = 'HELD', updated_at = clock_timestamp(),"
        " expires_at = clock_timestamp() + make_interval(secs => %s), released_at = NULL,"
        " release_reason = NULL WHERE order_id = %s", (ttl_s, order_id))


def claim_expired(cur, limit: int) -> list[dict]:
    """HELD reservations past their time-to-live, locked, skipping ones in use; with lines."""
    cur.execute(
        """
        SELECT * FROM reservations
         WHERE status = 'HELD' AND expires_at <= clock_timestamp()
         ORDER BY expires_at
         LIMIT %s
         FOR UPDATE SKIP LOCKED
        """,
        (limit,))
    rows = cur.fetchall()
    lines = _lines(cur, [r["order_id"] for r in rows])
    for row in rows:
        row["lines"] = lines[row["order_id"]]
    return rows


def _lines(cur, order_ids: list[UUID]) -> dict[UUID, list[dict]]:
    if not order_ids:
        return {}
    cur.execute(
        "SELECT order_id, sku, name, quantity, unit_price, line_total FROM reservation_lines"
        " WHERE order_id = ANY(%s) ORDER BY order_id, line_no", (order_ids,))
    return grouped(cur.fetchall(), "order_id", order_ids)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
