"""All SQL of the payment service (schema ``payment_svc``), parameterized."""

from __future__ import annotations

import json
from uuid import UUID


def insert_payment(cur, order_id: UUID, customer_id: str, currency: str, amount_minor: int,
                   lines: list[dict], status: str) -> None:
    cur.execute(
        "INSERT INTO payments (order_id, customer_id, currency, amount_minor, lines, status)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        (order_id, customer_id, currency, amount_minor, json.dumps(lines), status))


def get_payment(cur, order_id: UUID, lock: bool = False) -> dict | None:
    cur.execute("SELECT * FROM payments WHERE order_id = %s" + (" FOR UPDATE" if lock else ""),
                (order_id,))
    return cur.fetchone()


def lock_payment_by_intent(cur, intent_id: str) -> dict | None:
    cur.execute("SELECT * FROM payments WHERE intent_id = %s FOR UPDATE", (intent_id,))
    return cur.fetchone()


def try_lock_payment(cur, order_id: UUID) -> dict | None:
    """The payment locked, or None when another transaction holds it (it is being handled)."""
    cur.execute("SELECT * FROM payments WHERE order_id = %s FOR UPDATE SKIP LOCKED", (order_id,))
    return cur.fetchone()


def set_intent(cur, order_id: UUID, intent_id: str, client_secret: str | None) -> None:
    """Record the provider's intent, unless a concurrent attempt recorded one first."""
    cur.execute(
        "UPDATE payments SET intent_id = %s, client_secret = %s, updated_at = clock_timestamp()"
        " WHERE order_id = %s AND intent_id IS NULL", (intent_id, client_secret, order_id))


def delete_unstarted(cur, order_id: UUID) -> None:
    """Forget a payment whose intent could not be created (checkout answered 503)."""
    cur.execute("DELETE FROM payments WHERE order_id = %s AND intent_id IS NULL", (order_id,))


def set_status(cur, order_id: UUID, status: str, *, amount_captured: int | None = None,
               last_error: str | None = None) -> None:
    cur.execute(
        "UPDATE payments SET status = %s, amount_captured = COALESCE(%s, amount_captured),"
        " last_error = COALESCE(%s, last_error), updated_at = clock_timestamp(),"
        " checked_at = clock_timestamp() WHERE order_id = %s",
        (status, amount_captured, last_error, order_id))


def set_last_error(cur, order_id: UUID, error: str) -> None:
    cur.execute("UPDATE payments SET last_error = %s, updated_at = clock_timestamp()"
                " WHERE order_id = %s", (error, order_id))


def mark_checked(cur, order_id: UUID) -> None:
    cur.execute("UPDATE payments SET checked_at = clock_timestamp() WHERE order_id = %s",
                (order_id,))


def add_history(cur, order_id: UUID, status: str, previous: str | None, action: str,
                amount_minor: int | None = None, note: str | None = None) -> None:
    cur.execute(
        "INSERT INTO payment_history (order_id, status, previous_status, action, amount_minor, note)"
        " VALUES (%s, %s, %s, %s, %s, %s)", (order_id, status, previous, action, amount_minor, note))


def history(cur, order_id: UUID) -> list[dict]:
    cur.execute("SELECT status, previous_status, action, amount_minor, note, recorded_at"
                " FROM payment_history WHERE order_id = %s ORDER BY id", (order_id,))
    return cur.fetchall()


def unsettled(cur, older_than_s: float, limit: int) -> list[UUID]:
    """Payments still waiting for their authorization and not looked at for a while."""
    cur.execute(
        "SELECT order_id FROM payments WHERE status = 'REQUIRES_PAYMENT' AND intent_id IS NOT NULL"
        " AND checked_at < clock_timestamp() - make_interval(secs => %s)"
        " ORDER BY checked_at LIMIT %s", (older_than_s, limit))
    return [row["order_id"] for row in cur.fetchall()]


# --- refunds --------------------------------------------------------------------------------
def insert_refund(cur, refund_id: UUID, order_id: UUID, request_key: str | None, amount_minor: int,
                  lines: list[dict], requested_by: str) -> None:
    cur.execute(
        "INSERT INTO refunds (id, order_id, request_key, amount_minor, lines, status, requested_by)"
        " VALUES (%s, %s, %s, %s, %s, 'PENDING', %s)",
        (refund_id, order_id, request_key, amount_minor, json.dumps(lines), requested_by))


def refund_by_key(cur, order_id: UUID, request_key: str) -> dict | None:
    cur.execute("SELECT * FROM refunds WHERE order_id = %s AND request_key = %s",
                (order_id, request_key))
    return cur.fetchone()


def get_refund(cur, refund_id: UUID, lock: bool = False) -> dict | None:
    cur.execute("SELECT * FROM refunds WHERE id = %s" + (" FOR UPDATE" if lock else ""),
                (refund_id,))
    return cur.fetchone()


def refunds_of(cur, order_id: UUID) -> list[dict]:
    cur.execute("SELECT * FROM refunds WHERE order_id = %s ORDER BY created_at, id", (order_id,))
    return cur.fetchall()


def complete_refund(cur, refund_id: UUID, provider_refund_id: str) -> None:
    cur.execute(
        "UPDATE refunds SET status = 'SUCCEEDED', provider_refund_id = %s,"
        " completed_at = clock_timestamp() WHERE id = %s", (provider_refund_id, refund_id))


def add_refunded(cur, order_id: UUID, amount_minor: int) -> None:
    cur.execute("UPDATE payments SET amount_refunded = amount_refunded + %s,"
                " updated_at = clock_timestamp() WHERE order_id = %s", (amount_minor, order_id))


def pending_refunds(cur, older_than_s: float, limit: int) -> list[UUID]:
    cur.execute(
        "SELECT id FROM refunds WHERE status = 'PENDING'"
        " AND created_at < clock_timestamp() - make_interval(secs => %s)"
        " ORDER BY created_at LIMIT %s", (older_than_s, limit))
    return [row["id"] for row in cur.fetchall()]


# --- Stripe's events (the webhook's inbox) ----------------------------------------------------
def claim_stripe_event(cur, event_id: str, event_type: str) -> bool:
    """Record a received event; False when it was received before (a duplicate)."""
    cur.execute("INSERT INTO stripe_events (id, type, outcome) VALUES (%s, %s, 'received')"
                " ON CONFLICT (id) DO NOTHING", (event_id, event_type))
    return cur.rowcount == 1


def set_stripe_event_outcome(cur, event_id: str, outcome: str) -> None:
    cur.execute("UPDATE stripe_events SET outcome = %s WHERE id = %s", (outcome, event_id))
