"""The SQL of the order service's reports (schema ``order_svc``), parameterized.

Reports read the same ``orders`` and ``order_lines`` tables the API writes;
nothing is precomputed, so a cancellation is reflected the moment it commits.
Which statuses are not a sale is the caller's to say (``no_sale``): the
status list belongs to :mod:`services.order.domain`.
"""

from __future__ import annotations

from datetime import datetime


def count_by_status(cur) -> dict[str, int]:
    """Every status that has orders -> how many orders are in it."""
    cur.execute("SELECT status, count(*) AS n FROM orders GROUP BY status")
    return {row["status"]: int(row["n"]) for row in cur.fetchall()}


def sales(cur, period: str, start: datetime, end: datetime, no_sale: list[str]) -> list[dict]:
    """Orders, items and revenue per ``period`` bucket (UTC) and currency in [start, end).

    ``period`` is a ``date_trunc`` unit the caller has validated (day, week, month).
    Orders in a ``no_sale`` status (e.g. cancelled) are left out entirely.
    """
    cur.execute(
        """
        SELECT date_trunc(%s, o.created_at AT TIME ZONE 'UTC') AS bucket, o.currency,
               count(*) AS orders, COALESCE(sum(l.items), 0) AS items, sum(o.total) AS revenue
          FROM orders o
          JOIN LATERAL (SELECT sum(quantity) AS items FROM order_lines
                         WHERE order_lines.order_id = o.id) AS l ON true
         WHERE o.created_at >= %s AND o.created_at < %s AND NOT (o.status = ANY(%s))
         GROUP BY bucket, o.currency
         ORDER BY bucket, o.currency
        """,
        (period, start, end, no_sale),
    )
    return cur.fetchall()


def customer_stats(cur, customer_id: str, no_sale: list[str]) -> dict:
    """One customer's order count (all), cancelled count, and last order."""
    cur.execute(
        """
        SELECT count(*) AS orders,
               count(*) FILTER (WHERE status = ANY(%s)) AS not_sold,
               max(created_at) AS last_order_at
          FROM orders WHERE customer_id = %s
        """,
        (no_sale, customer_id),
    )
    stats = cur.fetchone()
    cur.execute("SELECT id FROM orders WHERE customer_id = %s ORDER BY created_at DESC, id DESC"
                " LIMIT 1", (customer_id,))
    last = cur.fetchone()
    stats["last_order_id"] = last["id"] if last else None
    return stats


def customer_value(cur, customer_id: str, no_sale: list[str]) -> list[dict]:
    """A customer's lifetime value per currency (orders in a ``no_sale`` status excluded)."""
    cur.execute(
        "SELECT currency, count(*) AS orders, sum(total) AS total FROM orders"
        " WHERE customer_id = %s AND NOT (status = ANY(%s)) GROUP BY currency ORDER BY currency",
        (customer_id, no_sale),
    )
    return cur.fetchall()
