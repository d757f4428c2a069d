"""SQL of webhook subscriptions, their deliveries and attempts (schema ``notification_svc``).

Parameterized. A delivery belongs to a subscription (deleted with it); its
attempts belong to the delivery.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from shared.rows import grouped

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


def lock_owner(cur, owner_id: str) -> None:
    """Serialize, until commit, the creation of one owner's subscriptions (so a limit holds)."""
    cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                (f"webhook-owner:{owner_id}",))


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
    return grouped(cur.fetchall(), "delivery_id")
