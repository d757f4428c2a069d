"""SQL of the notification history and what it is built from (schema ``notification_svc``).

The notifications the SSE stream serves (ids in commit order, a NOTIFY per
insert), the order contacts consumed events leave behind, and the retention
purge of finished history across the service's tables. Parameterized.
"""

from __future__ import annotations

from psycopg2.extras import Json

# Notifications get their ids in commit order: every inserting transaction holds this
# advisory lock from taking its id until it commits (see insert_notification).
NOTIFICATION_ORDER_LOCK = 0x6E_6F_74_69  # "noti"
STREAM_CHANNEL = "notification_svc_stream"


# --- notifications -----------------------------------------------------------------------
def notification_exists(cur, event_id: str) -> bool:
    cur.execute("SELECT 1 FROM notifications WHERE event_id = %s", (event_id,))
    return cur.fetchone() is not None


def insert_notification(cur, event_id: str, order_id: str, customer_id: str, type_: str,
                        payload: dict, occurred_at: str) -> int:
    """Store a notification and wake every stream; call LAST in the transaction.

    A stream resumes with ``id > Last-Event-ID``, which is only gap-free if ids
    become visible in increasing order. Ids come from a sequence at INSERT but
    become visible at COMMIT, so two transactions could commit out of id order.
    The advisory lock (released at commit) makes "take an id, commit" one step
    at a time; holding it only for the insert and the commit keeps that short.
    """
    cur.execute("SELECT pg_advisory_xact_lock(%s)", (NOTIFICATION_ORDER_LOCK,))
    cur.execute(
        "INSERT INTO notifications (event_id, order_id, customer_id, type, payload, occurred_at)"
        " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
        (event_id, order_id, customer_id, type_, Json(payload), occurred_at))
    notification_id = cur.fetchone()["id"]
    # Delivered at commit, to every API instance's hub (payload: the new id).
    cur.execute("SELECT pg_notify(%s, %s)", (STREAM_CHANNEL, str(notification_id)))
    return notification_id


def notifications_after(cur, after_id: int, customer_id: str | None, order_id: str | None,
                        limit: int) -> list[dict]:
    """Notifications with id > ``after_id`` (oldest first), optionally narrowed."""
    cur.execute(
        """
        SELECT id, order_id, customer_id, type, payload, created_at FROM notifications
         WHERE id > %(after)s
           AND (%(customer)s::text IS NULL OR customer_id = %(customer)s)
           AND (%(order)s::text IS NULL OR order_id = %(order)s)
         ORDER BY id LIMIT %(limit)s
        """,
        {"after": after_id, "customer": customer_id, "order": order_id, "limit": limit})
    return cur.fetchall()


def notifications_before(cur, before_id: int | None, customer_id: str | None,
                         order_id: str | None, limit: int) -> list[dict]:
    """Notification history, newest first, before ``before_id`` (a page cursor)."""
    cur.execute(
        """
        SELECT id, order_id, customer_id, type, payload, created_at FROM notifications
         WHERE (%(before)s::bigint IS NULL OR id < %(before)s)
           AND (%(customer)s::text IS NULL OR customer_id = %(customer)s)
           AND (%(order)s::text IS NULL OR order_id = %(order)s)
         ORDER BY id DESC LIMIT %(limit)s
        """,
        {"before": before_id, "customer": customer_id, "order": order_id, "limit": limit})
    return cur.fetchall()


def last_notification_id(cur) -> int:
    cur.execute("SELECT COALESCE(max(id), 0) AS id FROM notifications")
    return cur.fetchone()["id"]


# --- order contacts ------------------------------------------------------------------------
def upsert_contact(cur, order_id: str, customer_id: str, email: str | None, details: dict) -> None:
    cur.execute(
        """
        INSERT INTO order_contacts (order_id, customer_id, customer_email, details)
        VALUES (%s, %s, %s, %s)
        ON CONFLICT (order_id) DO UPDATE
           SET customer_email = COALESCE(EXCLUDED.customer_email, order_contacts.customer_email),
               details = order_contacts.details || EXCLUDED.details, updated_at = now()
        """,
        (order_id, customer_id, email, Json(details)))


def get_contact(cur, order_id: str) -> dict | None:
    cur.execute("SELECT * FROM order_contacts WHERE order_id = %s", (order_id,))
    return cur.fetchone()


# --- retention -------------------------------------------------------------------------------
def purge_older_than(cur, days: int, limit: int) -> dict[str, int]:
    """Delete finished history older than ``days`` (at most ``limit`` rows per table).

    The inbox and outbox are not in here: every worker's messaging retention
    job purges them (shared/messaging/retention.py).
    """
    statements = {
        # Resuming from an id older than this replays only what is left (documented).
        "notifications": "DELETE FROM notifications WHERE id IN (SELECT id FROM notifications"
                         " WHERE created_at < now() - make_interval(days => %s) LIMIT %s)",
        # Attempts go with their delivery (ON DELETE CASCADE); pending ones are kept.
        "webhook_deliveries": "DELETE FROM webhook_deliveries WHERE id IN (SELECT id FROM"
                              " webhook_deliveries WHERE status <> 'pending'"
                              " AND updated_at < now() - make_interval(days => %s) LIMIT %s)",
        "email_deliveries": "DELETE FROM email_deliveries WHERE id IN (SELECT id FROM"
                            " email_deliveries WHERE status IN ('sent', 'failed', 'skipped')"
                            " AND created_at < now() - make_interval(days => %s) LIMIT %s)",
    }
    deleted = {}
    for table, statement in statements.items():
        cur.execute(statement, (days, limit))
        deleted[table] = cur.rowcount
    return deleted


# --- stream tickets --------------------------------------------------------------------------
def insert_ticket(cur, ticket_hash: bytes, subject: str, is_admin: bool, order_id: str | None,
                  token_expires_at, ttl_s: int) -> None:
    cur.execute(
        "INSERT INTO stream_tickets (ticket_hash, subject, is_admin, order_id, token_expires_at,"
        " expires_at) VALUES (%s, %s, %s, %s, %s, now() + make_interval(secs => %s))",
        (ticket_hash, subject, is_admin, order_id, token_expires_at, ttl_s))


def redeem_ticket(cur, ticket_hash: bytes) -> dict | None:
    """Mark an unused, unexpired ticket used and return it; None otherwise (atomic)."""
    cur.execute(
        "UPDATE stream_tickets SET used_at = now()"
        " WHERE ticket_hash = %s AND used_at IS NULL AND expires_at > now()"
        " RETURNING subject, is_admin, order_id, token_expires_at",
        (ticket_hash,))
    return cur.fetchone()


def live_tickets(cur, subject: str) -> int:
    cur.execute("SELECT count(*) AS n FROM stream_tickets WHERE subject = %s AND used_at IS NULL"
                " AND expires_at > now()", (subject,))
    return cur.fetchone()["n"]


def delete_expired_tickets(cur) -> None:
    # Done when issuing: the table holds at most a TTL's worth of tickets.
    cur.execute("DELETE FROM stream_tickets WHERE expires_at < now()")
