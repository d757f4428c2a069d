"""SQL of the order emails waiting, being sent and sent (schema ``notification_svc``).

Parameterized. A pending email wakes the dispatchers with a NOTIFY on
:data:`EMAIL_CHANNEL`; dispatchers lease what they claim. Every claim writes a
fresh ``lease_token``; renewing a lease and recording an outcome (sent, retry,
failed) take effect only while the row still carries the caller's token, so a
sender whose lease ran out and was taken over changes nothing.
"""

from __future__ import annotations

from uuid import UUID

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


def claim_emails(cur, limit: int, lease_s: float, token: UUID) -> list[dict]:
    """Due mails (pending, or 'sending' whose sender's lease ran out), leased to ``token``."""
    cur.execute(
        """
        UPDATE email_deliveries e
           SET status = 'sending', attempts = e.attempts + 1, lease_token = %s,
               lease_until = clock_timestamp() + make_interval(secs => %s)
          FROM (SELECT id FROM email_deliveries
                 WHERE (status = 'pending' AND next_attempt_at <= now())
                    OR (status = 'sending' AND lease_until < clock_timestamp())
                 ORDER BY next_attempt_at, id
                 LIMIT %s FOR UPDATE SKIP LOCKED) due
         WHERE e.id = due.id
        RETURNING e.id, e.event_id, e.order_id, e.template, e.recipient, e.context, e.attempts
        """, (token, lease_s, limit))
    return cur.fetchall()


def renew_email_lease(cur, email_id: int, token: UUID, lease_s: float) -> bool:
    """Extend the caller's lease on a mail; False when the lease is no longer the caller's.

    A lease that ran out but was not taken over is still the caller's: nobody else can
    be sending the mail, so renewing it is safe.
    """
    cur.execute(
        "UPDATE email_deliveries SET lease_until = clock_timestamp() + make_interval(secs => %s)"
        " WHERE id = %s AND lease_token = %s AND status = 'sending'", (lease_s, email_id, token))
    return cur.rowcount == 1


def mark_email_sent(cur, email_id: int, token: UUID, provider: str,
                    message_id: str | None) -> bool:
    """Record the mail as sent; False (nothing written) when the caller lost its lease."""
    cur.execute(
        "UPDATE email_deliveries SET status = 'sent', sent_at = clock_timestamp(), provider = %s,"
        " provider_message_id = %s, lease_until = NULL, lease_token = NULL, last_error = NULL"
        " WHERE id = %s AND lease_token = %s AND status = 'sending'",
        (provider, message_id, email_id, token))
    return cur.rowcount == 1


def retry_email(cur, email_id: int, token: UUID, delay_s: float, error: str) -> bool:
    """Back to pending in ``delay_s``; False (nothing written) when the caller lost its lease."""
    cur.execute(
        "UPDATE email_deliveries SET status = 'pending', lease_until = NULL, lease_token = NULL,"
        " last_error = %s, next_attempt_at = now() + make_interval(secs => %s)"
        " WHERE id = %s AND lease_token = %s AND status = 'sending'",
        (error[:1000], delay_s, email_id, token))
    return cur.rowcount == 1


def fail_email(cur, email_id: int, token: UUID, error: str) -> bool:
    """Give up on the mail; False (nothing written) when the caller lost its lease."""
    cur.execute("UPDATE email_deliveries SET status = 'failed', lease_until = NULL,"
                " lease_token = NULL, last_error = %s"
                " WHERE id = %s AND lease_token = %s AND status = 'sending'",
                (error[:1000], email_id, token))
    return cur.rowcount == 1
