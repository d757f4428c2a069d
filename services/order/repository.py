"""All SQL of the order service (schema ``order_svc``), parameterized."""

from __future__ import annotations

import json
from datetime import datetime
from uuid import UUID

from shared.rows import grouped

# What get_order reads of each history row.
HISTORY_COLUMNS = ("status", "previous_status", "event", "applied", "note", "occurred_at")
IDEMPOTENCY_TTL = "24 hours"
# An in-progress key older than this was abandoned by a crashed request.
IDEMPOTENCY_STALE_AFTER = "60 seconds"


def insert_order(cur, order_id: UUID, customer_id: str, customer_email: str, currency: str,
                 total, shipping_address: dict, lines, payment) -> dict:
    """A new order awaiting its payment, its lines and its first history row; the order.

    ``payment`` is the opened PaymentIntent's handle. One statement (one round
    trip instead of one per line plus the history and read-backs); the
    result is what :func:`get_order` would read, the values as PostgreSQL
    stored them (numeric scale, timestamps).
    """
    cur.execute(
        """
        WITH new_order AS (
            INSERT INTO orders (id, customer_id, customer_email, status, currency, total,
                                shipping_address, payment_intent_id, payment_client_secret,
                                payment_amount_minor)
            VALUES (%(id)s, %(customer)s, %(email)s, 'PENDING_PAYMENT', %(currency)s, %(total)s,
                    %(address)s, %(intent)s, %(secret)s, %(minor)s)
            RETURNING *),
        new_lines AS (
            INSERT INTO order_lines (order_id, line_no, sku, quantity, unit_price, line_total)
            SELECT %(id)s, line_no, sku, quantity, unit_price, line_total
              FROM unnest(%(skus)s::text[], %(quantities)s::integer[], %(prices)s::numeric[],
                          %(totals)s::numeric[]) WITH ORDINALITY
                   AS line (sku, quantity, unit_price, line_total, line_no)
            RETURNING line_no, sku, quantity, unit_price, line_total),
        first_history AS (
            INSERT INTO order_status_history (order_id, status, previous_status, event, occurred_at)
            VALUES (%(id)s, 'PENDING_PAYMENT', NULL, 'order.created', now())
            RETURNING status, previous_status, event, applied, note, occurred_at)
        SELECT new_order.*,
               (SELECT array_agg(sku ORDER BY line_no) FROM new_lines) AS line_skus,
               (SELECT array_agg(quantity ORDER BY line_no) FROM new_lines) AS line_quantities,
               (SELECT array_agg(unit_price ORDER BY line_no) FROM new_lines) AS line_unit_prices,
               (SELECT array_agg(line_total ORDER BY line_no) FROM new_lines) AS line_totals,
               first_history.status AS history_status,
               first_history.previous_status AS history_previous_status,
               first_history.event AS history_event, first_history.applied AS history_applied,
               first_history.note AS history_note,
               first_history.occurred_at AS history_occurred_at
          FROM new_order, first_history
        """,
        {"id": order_id, "customer": customer_id, "email": customer_email, "currency": currency,
         "total": total, "address": json.dumps(shipping_address), "intent": payment.intent_id,
         "secret": payment.client_secret, "minor": payment.amount_minor,
         "skus": [line.sku for line in lines], "quantities": [line.quantity for line in lines],
         "prices": [line.unit_price for line in lines], "totals": [line.total for line in lines]},
    )
    order = cur.fetchone()
    order["lines"] = [
        {"sku": sku, "quantity": quantity, "unit_price": price, "line_total": line_total}
        for sku, quantity, price, line_total in zip(
            order.pop("line_skus"), order.pop("line_quantities"), order.pop("line_unit_prices"),
            order.pop("line_totals"), strict=True)]
    order["history"] = [{column: order.pop(f"history_{column}") for column in HISTORY_COLUMNS}]
    return order


def add_history(cur, order_id: UUID, status: str, previous_status: str | None, event: str,
                applied: bool = True, note: str | None = None,
                source_event_id: str | None = None, occurred_at: datetime | None = None) -> None:
    cur.execute(
        "INSERT INTO order_status_history (order_id, status, previous_status, event, applied,"
        " note, source_event_id, occurred_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, COALESCE(%s, now()))",
        (order_id, status, previous_status, event, applied, note, source_event_id, occurred_at),
    )


def lock_order(cur, order_id: UUID) -> dict | None:
    """The order row, locked for the rest of the transaction (serializes its changes)."""
    cur.execute("SELECT * FROM orders WHERE id = %s FOR UPDATE", (order_id,))
    return cur.fetchone()


def set_status(cur, order_id: UUID, status: str, cancel_reason: str | None = None) -> None:
    cur.execute(
        "UPDATE orders SET status = %s, cancel_reason = COALESCE(%s, cancel_reason),"
        " updated_at = now(), version = version + 1 WHERE id = %s",
        (status, cancel_reason, order_id),
    )


def set_paid(cur, order_id: UUID) -> None:
    cur.execute(
        "UPDATE orders SET status = 'PENDING_SHIPMENT', paid_at = now(), updated_at = now(),"
        " version = version + 1 WHERE id = %s", (order_id,))


def claim_unpaid(cur, ttl_s: float, limit: int) -> list[dict]:
    """Orders unpaid for longer than ``ttl_s``, locked; ones another worker holds are skipped."""
    cur.execute(
        "SELECT * FROM orders WHERE status = 'PENDING_PAYMENT'"
        " AND created_at < now() - make_interval(secs => %s)"
        " ORDER BY created_at LIMIT %s FOR UPDATE SKIP LOCKED", (ttl_s, limit))
    return cur.fetchall()


def claim_stuck(cur, status: str, older_than_s: float, limit: int) -> list[dict]:
    """Orders in ``status`` unchanged for ``older_than_s``, locked (others' claims skipped)."""
    cur.execute(
        "SELECT * FROM orders WHERE status = %s AND updated_at < now() - make_interval(secs => %s)"
        " ORDER BY updated_at LIMIT %s FOR UPDATE SKIP LOCKED", (status, older_than_s, limit))
    return cur.fetchall()


def list_stuck(cur, statuses: list[str], older_than_s: float, limit: int) -> list[dict]:
    """Orders in one of ``statuses`` that have not changed for ``older_than_s``, oldest first."""
    cur.execute(
        "SELECT * FROM orders WHERE status = ANY(%s)"
        " AND updated_at < now() - make_interval(secs => %s)"
        " ORDER BY updated_at, id LIMIT %s", (statuses, older_than_s, limit))
    orders = cur.fetchall()
    lines = _lines(cur, [o["id"] for o in orders])
    for order in orders:
        order["lines"] = lines[order["id"]]
    return orders


def set_shipment(cur, order_id: UUID, shipment_id, carrier, tracking_number) -> None:
    cur.execute(
        "UPDATE orders SET shipment_id = %s, carrier = COALESCE(%s, carrier),"
        " tracking_number = COALESCE(%s, tracking_number), updated_at = now() WHERE id = %s",
        (shipment_id, carrier, tracking_number, order_id),
    )


def get_order(cur, order_id: UUID) -> dict | None:
    """The order with its lines and history, or None."""
    cur.execute("SELECT * FROM orders WHERE id = %s", (order_id,))
    order = cur.fetchone()
    if order is None:
        return None
    order["lines"] = _lines(cur, [order_id])[order_id]
    cur.execute(
        f"SELECT {', '.join(HISTORY_COLUMNS)}"
        " FROM order_status_history WHERE order_id = %s ORDER BY id", (order_id,))
    order["history"] = cur.fetchall()
    return order


def list_orders(cur, customer_id: str | None, status: str | None,
                after: tuple[datetime, UUID] | None, limit: int) -> list[dict]:
    """A page of orders, newest first; ``customer_id`` None means every customer."""
    cur.execute(
        """
        SELECT * FROM orders
         WHERE (%(customer)s::text IS NULL OR customer_id = %(customer)s)
           AND (%(status)s::text IS NULL OR status = %(status)s)
           AND (%(after_t)s::timestamptz IS NULL OR (created_at, id) < (%(after_t)s, %(after_i)s))
         ORDER BY created_at DESC, id DESC
         LIMIT %(limit)s
        """,
        {"customer": customer_id, "status": status, "after_t": after[0] if after else None,
         "after_i": after[1] if after else None, "limit": limit},
    )
    orders = cur.fetchall()
    lines = _lines(cur, [o["id"] for o in orders])
    for order in orders:
        order["lines"] = lines[order["id"]]
    return orders


def _lines(cur, order_ids: list[UUID]) -> dict[UUID, list[dict]]:
    if not order_ids:
        return {}
    cur.execute(
        "SELECT order_id, sku, quantity, unit_price, line_total FROM order_lines"
        " WHERE order_id = ANY(%s) ORDER BY order_id, line_no", (order_ids,))
    return grouped(cur.fetchall(), "order_id", order_ids)


# --- idempotency keys ----------------------------------------------------------
def claim_idempotency_key(cur, customer_id: str, key: str, request_hash: str,
                          order_id: UUID) -> tuple[UUID | None, dict | None]:
    """Claim ``key`` for this request: ``(order id to use, None)``, or ``(None, existing row)``.

    Expired keys, released keys (an earlier attempt failed) and in-progress
    keys abandoned by a crashed request are taken over. A takeover with the
    same request body keeps the earlier attempt's order id, so the stock it
    may have reserved is found again instead of held twice; ``order_id`` is
    used otherwise.
    """
    cur.execute(
        f"""
        INSERT INTO idempotency_keys (customer_id, key, request_hash, state, expires_at, order_id)
        VALUES (%s, %s, %s, 'in_progress', now() + interval '{IDEMPOTENCY_TTL}', %s)
        ON CONFLICT (customer_id, key) DO UPDATE
           SET request_hash = EXCLUDED.request_hash, state = 'in_progress',
               response_status = NULL, response_body = NULL, response_headers = NULL,
               created_at = now(), expires_at = EXCLUDED.expires_at,
               order_id = CASE WHEN idempotency_keys.request_hash = EXCLUDED.request_hash
                                    AND idempotency_keys.expires_at >= now()
                               THEN COALESCE(idempotency_keys.order_id, EXCLUDED.order_id)
                               ELSE EXCLUDED.order_id END
         WHERE idempotency_keys.expires_at < now()
            OR idempotency_keys.state = 'released'
            OR (idempotency_keys.state = 'in_progress'
                AND idempotency_keys.created_at < now() - interval '{IDEMPOTENCY_STALE_AFTER}')
        RETURNING order_id
        """,
        (customer_id, key, request_hash, order_id),
    )
    claimed = cur.fetchone()
    if claimed is not None:
        return claimed["order_id"], None
    cur.execute("SELECT * FROM idempotency_keys WHERE customer_id = %s AND key = %s",
                (customer_id, key))
    return None, cur.fetchone()


def complete_idempotency_key(cur, customer_id: str, key: str, status: int, body: str,
                             headers: dict) -> None:
    cur.execute(
        "UPDATE idempotency_keys SET state = 'completed', response_status = %s,"
        " response_body = %s, response_headers = %s WHERE customer_id = %s AND key = %s",
        (status, body, json.dumps(headers), customer_id, key),
    )


def release_idempotency_key(cur, customer_id: str, key: str) -> None:
    """The attempt failed: the key may be claimed again at once (its order id is kept)."""
    cur.execute("UPDATE idempotency_keys SET state = 'released' WHERE customer_id = %s"
                " AND key = %s AND state = 'in_progress'", (customer_id, key))


def purge_expired_idempotency_keys(cur) -> int:
    cur.execute("DELETE FROM idempotency_keys WHERE expires_at < now()")
    return cur.rowcount
