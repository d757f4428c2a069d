"""All SQL of the notification service (schema ``notification_svc``), parameterized."""

from __future__ import annotations

import json
from datetime import datetime
from uuid import UUID

from psycopg2.extras import Json

# Notifications get their ids in commit order: every inserting transaction holds this
# advisory lock from taking its id until it commits (see insert_notification).
NOTIFICATION_ORDER_LOCK = 0x6E_6F_74_69  # "noti"
STREAM_CHANNEL = "notification_svc_stream"
EMAIL_CHANNEL = "notification_svc_email"


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


# --- webhook subscriptions -----------------------------------------------------------------
SUBSCRIPTION_COLUMNS = ("id, owner_id, all_customers, name, topic, delivery_url, status,"
                        " disabled_reason, disabled_at, consecutive_failures, created_at, updated_at")


def insert_subscription(cur, sub_id: UUID, owner_id: str, all_customers: bool, name: str,
                        topic: str, delivery_url: str, secret: str, status: str) -> dict | None:
    """Insert; None when the owner already has this (url, topic)."""
    cur.execute(
        f"""
        INSERT INTO webhook_subscriptions
               (id, owner_id, all_customers, name, topic, delivery_url, secret, status)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (owner_id, delivery_url, topic) DO NOTHING
        RETURNING {SUBSCRIPTION_COLUMNS}
        """,
        (sub_id, owner_id, all_customers, name, topic, delivery_url, secret, status))
    return cur.fetchone()


def count_subscriptions(cur, owner_id: str) -> int:
    cur.execute("SELECT count(*) AS n FROM webhook_subscriptions WHERE owner_id = %s", (owner_id,))
    return cur.fetchone()["n"]


def get_subscription(cur, sub_id: UUID, lock: bool = False, with_secret: bool = False) -> dict | None:
    columns = SUBSCRIPTION_COLUMNS + (", secret" if with_secret else "")
    cur.execute(f"SELECT {columns} FROM webhook_subscriptions WHERE id = %s"
                + (" FOR UPDATE" if lock else ""), (sub_id,))
    return cur.fetchone()


def list_subscriptions(cur, owner_id: str | None, after: tuple[datetime, UUID] | None,
                       limit: int) -> list[dict]:
    """A page of subscriptions, newest first; ``owner_id`` None means everyone's."""
    cur.execute(
        f"""
        SELECT {SUBSCRIPTION_COLUMNS} FROM webhook_subscriptions
         WHERE (%(owner)s::text IS NULL OR owner_id = %(owner)s)
           AND (%(after_t)s::timestamptz IS NULL OR (created_at, id) < (%(after_t)s, %(after_i)s))
         ORDER BY created_at DESC, id DESC LIMIT %(limit)s
        """,
        {"owner": owner_id, "after_t": after[0] if after else None,
         "after_i": after[1] if after else None, "limit": limit})
    return cur.fetchall()


def update_subscription(cur, sub_id: UUID, name: str, topic: str, delivery_url: str, status: str,
                        secret: str | None) -> dict | None:
    """Replace the editable fields; activating clears a disabled state. None on a duplicate."""
    cur.execute(
        f"""
        UPDATE webhook_subscriptions
           SET name = %(name)s, topic = %(topic)s, delivery_url = %(url)s, status = %(status)s,
               secret = COALESCE(%(secret)s, secret),
               disabled_reason = CASE WHEN %(status)s = 'active' THEN NULL ELSE disabled_reason END,
               disabled_at = CASE WHEN %(status)s = 'active' THEN NULL ELSE disabled_at END,
               consecutive_failures = CASE WHEN %(status)s = 'active' AND status <> 'active'
                                           THEN 0 ELSE consecutive_failures END,
               updated_at = clock_timestamp()
         WHERE id = %(id)s
           AND NOT EXISTS (SELECT 1 FROM webhook_subscriptions other
                            WHERE other.owner_id = webhook_subscriptions.owner_id
                              AND other.delivery_url = %(url)s AND other.topic = %(topic)s
                              AND other.id <> %(id)s)
        RETURNING {SUBSCRIPTION_COLUMNS}
        """,
        {"id": sub_id, "name": name, "topic": topic, "url": delivery_url, "status": status,
         "secret": secret})
    return cur.fetchone()


def delete_subscription(cur, sub_id: UUID) -> None:
    cur.execute("DELETE FROM webhook_subscriptions WHERE id = %s", (sub_id,))


def matching_subscriptions(cur, customer_id: str, topics: list[str]) -> list[dict]:
    """Active subscriptions that receive an event of the customer's order on these topics."""
    cur.execute(
        "SELECT id, topic FROM webhook_subscriptions WHERE status = 'active' AND topic = ANY(%s)"
        " AND (all_customers OR owner_id = %s) ORDER BY created_at, id",
        (topics, customer_id))
    return cur.fetchall()


def record_subscription_success(cur, sub_id: UUID) -> None:
    cur.execute("UPDATE webhook_subscriptions SET consecutive_failures = 0"
                " WHERE id = %s AND consecutive_failures <> 0", (sub_id,))


def record_subscription_failure(cur, sub_id: UUID) -> int:
    """Count one more failed delivery; return the new consecutive count."""
    cur.execute("UPDATE webhook_subscriptions SET consecutive_failures = consecutive_failures + 1,"
                " updated_at = clock_timestamp() WHERE id = %s RETURNING consecutive_failures",
                (sub_id,))
    row = cur.fetchone()
    return row["consecutive_failures"] if row else 0


def disable_subscription(cur, sub_id: UUID, reason: str) -> None:
    cur.execute(
        "UPDATE webhook_subscriptions SET status = 'disabled', disabled_reason = %s,"
        " disabled_at = clock_timestamp(), updated_at = clock_timestamp()"
        " WHERE id = %s AND status <> 'disabled'", (reason[:1000], sub_id))


# --- webhook deliveries --------------------------------------------------------------------
def insert_delivery(cur, delivery_id: UUID, sub_id: UUID, event_id: str, topic: str, body: str,
                    token: UUID | None, attempt_limit: int) -> bool:
    """Insert a pending delivery; False when this event already has one for this subscription."""
    cur.execute(
        "INSERT INTO webhook_deliveries (id, subscription_id, event_id, topic, body, status,"
        " schedule_token, attempt_limit) VALUES (%s, %s, %s, %s, %s, 'pending', %s, %s)"
        " ON CONFLICT (subscription_id, event_id) DO NOTHING RETURNING id",
        (delivery_id, sub_id, event_id, topic, body, token, attempt_limit))
    return cur.fetchone() is not None


def lock_delivery(cur, delivery_id: UUID) -> dict | None:
    """The delivery with its subscription's target and secret, locked until commit."""
    cur.execute(
        """
        SELECT d.id, d.subscription_id, d.event_id, d.topic, d.body, d.status, d.attempts,
               d.attempt_limit, d.schedule_token,
               EXTRACT(EPOCH FROM d.next_attempt_at - now())::float AS due_in_s,
               s.delivery_url, s.secret, s.status AS subscription_status
          FROM webhook_deliveries d JOIN webhook_subscriptions s ON s.id = d.subscription_id
         WHERE d.id = %s
           FOR UPDATE OF d
        """, (delivery_id,))
    return cur.fetchone()


def schedule_delivery(cur, delivery_id: UUID, token: UUID, delay_s: float,
                      reset: bool = False) -> None:
    """Make ``token`` the one live message of the delivery, due in ``delay_s``."""
    cur.execute(
        "UPDATE webhook_deliveries SET schedule_token = %s, status = 'pending',"
        " next_attempt_at = now() + make_interval(secs => %s), updated_at = clock_timestamp(),"
        " delivered_at = CASE WHEN %s THEN NULL ELSE delivered_at END WHERE id = %s",
        (token, delay_s, reset, delivery_id))


def set_schedule_token(cur, delivery_id: UUID, token: UUID) -> None:
    """Hand the delivery to a new message without moving its due time (long waits)."""
    cur.execute("UPDATE webhook_deliveries SET schedule_token = %s WHERE id = %s",
                (token, delivery_id))


def extend_attempt_limit(cur, delivery_id: UUID, more: int) -> None:
    """A fresh retry schedule of ``more`` attempts from now (manual redelivery)."""
    cur.execute("UPDATE webhook_deliveries SET attempt_limit = attempts + %s WHERE id = %s",
                (more, delivery_id))


def record_attempt(cur, delivery_id: UUID, attempt: int, outcome: str, status_code: int | None,
                   duration_ms: int | None, excerpt: str | None, error: str | None) -> None:
    cur.execute(
        "INSERT INTO webhook_attempts (delivery_id, attempt, outcome, status_code, duration_ms,"
        " response_excerpt, error) VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (delivery_id, attempt, outcome, status_code, duration_ms, excerpt, error))
    cur.execute(
        "UPDATE webhook_deliveries SET attempts = %s, last_status_code = %s, last_error = %s,"
        " updated_at = clock_timestamp() WHERE id = %s",
        (attempt, status_code, error, delivery_id))


def finish_delivery(cur, delivery_id: UUID, status: str) -> None:
    """Final state: delivered, failed or cancelled (no live message any more)."""
    cur.execute(
        "UPDATE webhook_deliveries SET status = %s, schedule_token = NULL,"
        " delivered_at = CASE WHEN %s = 'delivered' THEN clock_timestamp() ELSE delivered_at END,"
        " updated_at = clock_timestamp() WHERE id = %s",
        (status, status, delivery_id))


def get_delivery(cur, sub_id: UUID, delivery_id: UUID, lock: bool = False) -> dict | None:
    cur.execute("SELECT * FROM webhook_deliveries WHERE id = %s AND subscription_id = %s"
                + (" FOR UPDATE" if lock else ""), (delivery_id, sub_id))
    return cur.fetchone()


def list_deliveries(cur, sub_id: UUID, after: tuple[datetime, UUID] | None,
                    limit: int) -> list[dict]:
    """A page of a subscription's deliveries (newest first), each with every attempt."""
    cur.execute(
        """
        SELECT id, event_id, topic, status, attempts, next_attempt_at, last_status_code,
               last_error, created_at, updated_at, delivered_at
          FROM webhook_deliveries
         WHERE subscription_id = %(sub)s
           AND (%(after_t)s::timestamptz IS NULL OR (created_at, id) < (%(after_t)s, %(after_i)s))
         ORDER BY created_at DESC, id DESC LIMIT %(limit)s
        """,
        {"sub": sub_id, "after_t": after[0] if after else None,
         "after_i": after[1] if after else None, "limit": limit})
    deliveries = cur.fetchall()
    attempts = attempts_of(cur, [d["id"] for d in deliveries])
    for delivery in deliveries:
        delivery["attempt_log"] = attempts.get(delivery["id"], [])
    return deliveries


def attempts_of(cur, delivery_ids: list[UUID]) -> dict[UUID, list[dict]]:
    if not delivery_ids:
        return {}
    cur.execute(
        "SELECT delivery_id, attempt, attempted_at, outcome, status_code, duration_ms,"
        " response_excerpt, error FROM webhook_attempts WHERE delivery_id = ANY(%s::uuid[])"
        " ORDER BY delivery_id, id", ([str(d) for d in delivery_ids],))
    result: dict[UUID, list[dict]] = {}
    for row in cur.fetchall():
        result.setdefault(row.pop("delivery_id"), []).append(row)
    return result


# --- email -----------------------------------------------------------------------------------
def insert_email(cur, event_id: str, order_id: str, template: str, recipient: str | None,
                 context: dict, status: str = "pending", error: str | None = None) -> bool:
    cur.execute(
        "INSERT INTO email_deliveries (event_id, order_id, template, recipient, context, status,"
        " last_error) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (event_id) DO NOTHING"
        " RETURNING id",
        (event_id, order_id, template, recipient, Json(context), status, error))
    inserted = cur.fetchone() is not None
    if inserted and status == "pending":
        cur.execute("SELECT pg_notify(%s, '')", (EMAIL_CHANNEL,))
    return inserted


def claim_emails(cur, limit: int, lease_s: float) -> list[dict]:
    """Due mails (pending, or 'sending' whose sender's lease ran out), leased to the caller."""
    cur.execute(
        """
        UPDATE email_deliveries e
           SET status = 'sending', attempts = e.attempts + 1,
               lease_until = now() + make_interval(secs => %s)
          FROM (SELECT id FROM email_deliveries
                 WHERE (status = 'pending' AND next_attempt_at <= now())
                    OR (status = 'sending' AND lease_until < now())
                 ORDER BY next_attempt_at, id
                 LIMIT %s FOR UPDATE SKIP LOCKED) due
         WHERE e.id = due.id
        RETURNING e.id, e.event_id, e.order_id, e.template, e.recipient, e.context, e.attempts
        """, (lease_s, limit))
    return cur.fetchall()


def mark_email_sent(cur, email_id: int, provider: str, message_id: str | None) -> None:
    cur.execute(
        "UPDATE email_deliveries SET status = 'sent', sent_at = clock_timestamp(), provider = %s,"
        " provider_message_id = %s, lease_until = NULL, last_error = NULL WHERE id = %s",
        (provider, message_id, email_id))


def retry_email(cur, email_id: int, delay_s: float, error: str) -> None:
    cur.execute(
        "UPDATE email_deliveries SET status = 'pending', lease_until = NULL, last_error = %s,"
        " next_attempt_at = now() + make_interval(secs => %s) WHERE id = %s",
        (error[:1000], delay_s, email_id))


def fail_email(cur, email_id: int, error: str) -> None:
    cur.execute("UPDATE email_deliveries SET status = 'failed', lease_until = NULL,"
                " last_error = %s WHERE id = %s", (error[:1000], email_id))


# --- retention -------------------------------------------------------------------------------
def purge_older_than(cur, days: int, limit: int) -> dict[str, int]:
    """Delete finished history older than ``days`` (at most ``limit`` rows per table)."""
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
        # No queue keeps a message this long, so no redelivery can need these any more.
        "inbox": "DELETE FROM inbox WHERE (consumer, event_id) IN (SELECT consumer, event_id"
                 " FROM inbox WHERE received_at < now() - make_interval(days => %s) LIMIT %s)",
        "outbox": "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE published_at"
                  " < now() - make_interval(days => %s) LIMIT %s)",
    }
    deleted = {}
    for table, statement in statements.items():
        cur.execute(statement, (days, limit))
        deleted[table] = cur.rowcount
    return deleted


def dumps(value) -> str:
    """JSON for text columns (stable key order)."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)
