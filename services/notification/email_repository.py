"""SQL of the order emails waiting, being sent and sent (schema ``notification_svc``).

Parameterized. A pending email wakes the dispatchers with a NOTIFY on
:data:`EMAIL_CHANNEL`; dispatchers lease what they claim.
"""

from __future__ import annotations

from psycopg2.extras import Json

EMAIL_CHANNEL = "notification_svc_email"


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
