"""The invariants checked after the chaos run has gone quiet, each a small function.

Each reads the services' schemas directly (the auditor's privilege, not a
service's) and returns its violations as sentences (empty: it holds). They
take what the run knows from outside — the order ids it was answered 201 for —
and :class:`Schemas`, one connection pool per service schema.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import psycopg2

from devstack.chaos.flow import DELIVERED, PENDING_PAYMENT, SHIPPED, TERMINAL_STATUSES
from services.notification.domain import email_template_for
from services.order.domain import OrderStatus, can_transition
from services.payment.domain import PaymentStatus
from shared.currencies import to_minor_units
from shared.messaging.envelope import Envelope

MAX_REPORTED = 20  # violations listed per invariant (the count is always complete)
SERVICES = ("order", "delivery", "inventory", "notification", "payment")  # the schemas read


@dataclass
class Schemas:
    order: object
    delivery: object
    inventory: object
    notification: object
    payment: object

    def rows(self, service: str, sql: str, params=()) -> list[dict]:
        # Once more on a dropped connection: a pooled one may predate a PostgreSQL restart.
        for attempt in (1, 2):
            try:
                with getattr(self, service).transaction() as cur:
                    cur.execute(sql, params)
                    return cur.fetchall()
            except (psycopg2.OperationalError, psycopg2.InterfaceError):
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


def _cap(violations: list[str]) -> list[str]:
    if len(violations) > MAX_REPORTED:
        return violations[:MAX_REPORTED] + [f"... and {len(violations) - MAX_REPORTED} more"]
    return violations


# --------------------------------------------------------------------------- orders


def every_accepted_order_exists_and_is_terminal(db: Schemas, accepted: set[str]) -> list[str]:
    rows = {str(r["id"]): r["status"] for r in db.rows("order", "SELECT id, status FROM orders")}
    out = [f"order {o} was answered 201 but does not exist" for o in sorted(accepted - rows.keys())]
    out += [f"order {o} exists without a 201" for o in sorted(rows.keys() - accepted)]
    out += [f"order {o} ended in {s}, not a terminal status" for o, s in sorted(rows.items())
            if o in accepted and s not in TERMINAL_STATUSES]
    return _cap(out)


def one_shipment_per_shipped_order(db: Schemas, accepted: set[str]) -> list[str]:
    shipped = {str(r["order_id"]) for r in db.rows(
        "order", "SELECT DISTINCT order_id FROM order_status_history WHERE applied AND status = %s",
        (SHIPPED,))}
    shipments = Counter(str(r["order_id"]) for r in db.rows("delivery", "SELECT order_id FROM shipments"))
    out = [f"shipped order {o} has {shipments[o]} shipments" for o in sorted(shipped)
           if shipments[o] != 1]
    out += [f"order {o} has {n} shipments" for o, n in shipments.items() if n > 1]
    return _cap(out)


def no_cancelled_order_was_shipped(db: Schemas, accepted: set[str]) -> list[str]:
    """A cancellation the customer was told succeeded must stop the shipment: the delivery
    service decides a paid order's cancel under the pick-up's lock before the order changes."""
    cancelled = {str(r["id"]) for r in db.rows("order", "SELECT id FROM orders WHERE status = %s",
                                               (OrderStatus.CANCELLED.value,))}
    moved = db.rows("delivery", "SELECT order_id, status FROM shipments WHERE status <> 'CANCELLED'"
                                " AND status <> 'CREATED'")
    return _cap([f"order {r['order_id']} was cancelled, but its shipment went on to {r['status']}"
                 for r in moved if str(r["order_id"]) in cancelled])


def no_status_regression(db: Schemas, accepted: set[str]) -> list[str]:
    history = defaultdict(list)
    for row in db.rows("order", "SELECT order_id, status, previous_status FROM order_status_history"
                                " WHERE applied ORDER BY order_id, id"):
        history[str(row["order_id"])].append(row)
    out = []
    for order_id, rows in history.items():
        current = None
        for row in rows:
            if current is None:
                current = row["status"]
                continue
            if row["status"] == current:
                continue  # a milestone inside a status (in transit)
            if row["previous_status"] != current or not can_transition(OrderStatus(current),
                                                                       OrderStatus(row["status"])):
                out.append(f"order {order_id}: {current} -> {row['status']} is not allowed")
            current = row["status"]
    return _cap(out)


# --------------------------------------------------------------------------- stock


def stock_is_conserved(db: Schemas, accepted: set[str], initial_on_hand: dict[str, int],
                       ) -> list[str]:
    products = {r["sku"]: r for r in db.rows("inventory", "SELECT sku, on_hand, reserved FROM products")}
    held, confirmed = Counter(), Counter()
    for row in db.rows("inventory", "SELECT r.status, l.sku, l.quantity FROM reservations r"
                                    " JOIN reservation_lines l USING (order_id)"):
        if row["status"] == "HELD":
            held[row["sku"]] += row["quantity"]
        elif row["status"] == "CONFIRMED":
            confirmed[row["sku"]] += row["quantity"]
    out = []
    for sku, start in initial_on_hand.items():
        product = products[sku]
        if product["reserved"] != held[sku]:
            out.append(f"{sku}: reserved {product['reserved']} but held reservations hold {held[sku]}")
        if product["on_hand"] != start - confirmed[sku]:
            out.append(f"{sku}: on_hand {product['on_hand']}, expected {start} - {confirmed[sku]} "
                       f"confirmed = {start - confirmed[sku]}")
    # Each order's reservation matches its lines: confirmed unless it was cancelled.
    lines = defaultdict(dict)
    for row in db.rows("order", "SELECT order_id, sku, quantity FROM order_lines"):
        lines[str(row["order_id"])][row["sku"]] = lines[str(row["order_id"])].get(row["sku"], 0) \
            + row["quantity"]
    statuses = {str(r["id"]): r["status"] for r in db.rows("order", "SELECT id, status FROM orders")}
    reserved = defaultdict(dict)
    reservation_status = {}
    for row in db.rows("inventory", "SELECT r.order_id, r.status, l.sku, l.quantity FROM reservations r"
                                    " JOIN reservation_lines l USING (order_id)"):
        order_id = str(row["order_id"])
        reserved[order_id][row["sku"]] = reserved[order_id].get(row["sku"], 0) + row["quantity"]
        reservation_status[order_id] = row["status"]
    # A checkout that failed after reserving (the payment could not be opened) gave the stock back,
    # or left it HELD for the sweeper (a crash in between): never CONFIRMED, never held for good.
    for order_id in sorted(reservation_status.keys() - statuses.keys()):
        if reservation_status[order_id] == "CONFIRMED":
            out.append(f"reservation {order_id} is CONFIRMED but its order does not exist")
    # Each order's reservation is released if it was cancelled (by the customer, or by the
    # unpaid-order expiry, reason payment_expired), confirmed otherwise.
    for order_id, status in statuses.items():
        expected = "RELEASED" if status == OrderStatus.CANCELLED.value else "CONFIRMED"
        if reservation_status.get(order_id) != expected:
            out.append(f"order {order_id} ({status}): reservation "
                       f"{reservation_status.get(order_id)}, expected {expected}")
        elif reserved[order_id] != lines[order_id]:
            out.append(f"order {order_id}: reserved {reserved[order_id]} != lines {lines[order_id]}")
    return _cap(out)


def no_reservation_held_past_its_ttl(db: Schemas, accepted: set[str]) -> list[str]:
    rows = db.rows("inventory", "SELECT order_id, expires_at FROM reservations"
                                " WHERE status = 'HELD' AND expires_at < now()")
    return _cap([f"reservation {r['order_id']} still HELD, expired {r['expires_at']}" for r in rows])


# --------------------------------------------------------------------------- payments


def _orders_and_payments(db: Schemas) -> tuple[dict[str, dict], dict[str, dict]]:
    orders = {str(r["id"]): r for r in db.rows("order", "SELECT id, status, total, currency FROM orders")}
    payments = {str(r["order_id"]): r for r in db.rows(
        "payment", "SELECT order_id, status, amount_minor, amount_captured, amount_refunded,"
                   " currency FROM payments")}
    return orders, payments


def delivered_orders_captured_once(db: Schemas, accepted: set[str]) -> list[str]:
    """Every DELIVERED order's payment is CAPTURED, once, for exactly the order's total."""
    orders, payments = _orders_and_payments(db)
    # Moves into CAPTURED, whoever made them: the worker's capture, or the provider's news of it
    # (webhook, reconciliation) when the worker was killed between Stripe's answer and its commit.
    captures = Counter(str(r["order_id"]) for r in db.rows(
        "payment", "SELECT order_id FROM payment_history WHERE status = 'CAPTURED'"
                   " AND previous_status IS DISTINCT FROM 'CAPTURED'"))
    out = []
    for order_id, order in sorted(orders.items()):
        if order["status"] != DELIVERED:
            continue
        payment = payments.get(order_id)
        if payment is None:
            out.append(f"delivered order {order_id} has no payment")
            continue
        total = to_minor_units(order["total"], order["currency"].strip())
        if payment["status"] != PaymentStatus.CAPTURED.value:
            out.append(f"delivered order {order_id}: payment {payment['status']}, not CAPTURED")
        if payment["amount_captured"] != total or payment["currency"].strip() != order["currency"].strip():
            out.append(f"delivered order {order_id}: captured {payment['amount_captured']} "
                       f"{payment['currency']}, order total {total} {order['currency']}")
        if captures[order_id] != 1:
            out.append(f"delivered order {order_id}: captured {captures[order_id]} times")
    return _cap(out)


# Payment statuses that hold no money on the customer's card.
NOTHING_HELD = frozenset({PaymentStatus.VOIDED.value, PaymentStatus.REFUNDED.value,
                          PaymentStatus.REFUSED.value})


def cancelled_orders_hold_no_authorization(db: Schemas, accepted: set[str]) -> list[str]:
    """A cancelled order's payment is voided (or refunded in full if it had been captured); a
    payment whose order never came to be (a failed checkout) was never authorized."""
    orders, payments = _orders_and_payments(db)
    out = []
    for order_id, order in sorted(orders.items()):
        if order["status"] != OrderStatus.CANCELLED.value:
            continue
        payment = payments.get(order_id)
        if payment is None:
            out.append(f"cancelled order {order_id} has no payment")
        elif payment["status"] not in NOTHING_HELD:
            out.append(f"cancelled order {order_id}: payment still {payment['status']}")
        elif payment["amount_refunded"] != payment["amount_captured"]:
            out.append(f"cancelled order {order_id}: captured {payment['amount_captured']}, "
                       f"refunded {payment['amount_refunded']}")
    for order_id in sorted(payments.keys() - orders.keys()):
        if payments[order_id]["status"] not in (PaymentStatus.REQUIRES_PAYMENT.value,
                                                *NOTHING_HELD):
            out.append(f"payment {order_id} without an order is {payments[order_id]['status']}")
    return _cap(out)


def no_order_unpaid_past_the_ttl(db: Schemas, accepted: set[str], ttl_s: float,
                                 expiry_interval_s: float, slack_s: float = 30.0) -> list[str]:
    """No order is PENDING_PAYMENT now, and none left it later than the TTL, the expiry job's
    interval and ``slack_s`` (a killed order worker, PostgreSQL away) after it was placed."""
    bound = ttl_s + expiry_interval_s + slack_s
    out = [f"order {r['id']} still PENDING_PAYMENT, placed {r['created_at']}" for r in db.rows(
        "order", "SELECT id, created_at FROM orders WHERE status = %s", (PENDING_PAYMENT,))]
    for row in db.rows("order", """
            SELECT o.id, EXTRACT(EPOCH FROM min(h.recorded_at) - o.created_at) AS waited
              FROM orders o JOIN order_status_history h ON h.order_id = o.id
             WHERE h.applied AND h.previous_status = %s AND h.status <> h.previous_status
             GROUP BY o.id, o.created_at
            HAVING EXTRACT(EPOCH FROM min(h.recorded_at) - o.created_at) > %s""",
                       (PENDING_PAYMENT, bound)):
        out.append(f"order {row['id']} left PENDING_PAYMENT after {float(row['waited']):.1f}s "
                   f"(bound {bound:.0f}s)")
    return _cap(out)


# --------------------------------------------------------------------------- notifications


def _order_events(db: Schemas) -> dict[str, list[dict]]:
    """The events the order service published for notification, per order."""
    events = defaultdict(list)
    for row in db.rows("order", "SELECT aggregate_id, event_type, event_id::text AS event_id, body"
                                " FROM outbox WHERE queue = 'order-status.fifo'"):
        events[row["aggregate_id"]].append(row)
    return events


def notified_once_per_status_change(db: Schemas, accepted: set[str]) -> list[str]:
    events = _order_events(db)
    notified = defaultdict(list)
    for row in db.rows("notification", "SELECT order_id, event_id::text AS event_id FROM notifications"):
        notified[row["order_id"]].append(row["event_id"])
    transitions = Counter(str(r["order_id"]) for r in db.rows(
        "order", "SELECT order_id FROM order_status_history WHERE applied AND previous_status"
                 " IS NOT NULL AND status <> previous_status"))
    out = []
    for order_id in sorted(accepted):
        published = events.get(order_id, [])
        expected = sorted(e["event_id"] for e in published)
        if sorted(notified.get(order_id, [])) != expected:
            out.append(f"order {order_id}: notifications {len(notified.get(order_id, []))} for "
                       f"{len(expected)} events")
        changes = sum(1 for e in published if e["event_type"] == "order.status_changed")
        if changes != transitions[order_id]:
            out.append(f"order {order_id}: {changes} status_changed events for "
                       f"{transitions[order_id]} status changes")
    return _cap(out)


def one_email_per_mailed_event(db: Schemas, accepted: set[str]) -> list[str]:
    expected = {}
    for order_id, rows in _order_events(db).items():
        for row in rows:
            data = Envelope.from_json(row["body"]).data
            template = email_template_for(row["event_type"], data)
            if template is not None:
                expected[row["event_id"]] = (order_id, template)
    mails = Counter()
    got = {}
    for row in db.rows("notification", "SELECT event_id::text AS event_id, order_id, template, status"
                                       " FROM email_deliveries"):
        got[row["event_id"]] = (row["order_id"], row["template"])
        mails[(row["order_id"], row["template"])] += 1
    out = [f"event {e} ({o}, {t}) has no email" for e, (o, t) in expected.items() if e not in got]
    out += [f"email {e} for {got[e]} was not expected" for e in got if e not in expected]
    out += [f"order {o}: {n} '{t}' emails" for (o, t), n in mails.items() if n > 1]
    unsent = db.rows("notification", "SELECT event_id, status FROM email_deliveries"
                                     " WHERE status NOT IN ('sent', 'skipped')")
    out += [f"email {r['event_id']} is {r['status']}, not sent" for r in unsent]
    return _cap(out)


def one_webhook_delivery_per_event(db: Schemas, accepted: set[str], subscription_id: str | None,
                                   ) -> list[str]:
    if subscription_id is None:
        return ["the run has no webhook subscription to check"]
    expected = {e["event_id"] for rows in _order_events(db).values() for e in rows}
    deliveries = Counter(r["event_id"] for r in db.rows(
        "notification", "SELECT event_id::text AS event_id FROM webhook_deliveries"
                        " WHERE subscription_id = %s", (subscription_id,)))
    out = [f"event {e} has no webhook delivery" for e in sorted(expected - deliveries.keys())]
    out += [f"event {e} has {n} webhook deliveries" for e, n in deliveries.items() if n > 1]
    out += [f"webhook delivery for unknown event {e}" for e in deliveries.keys() - expected]
    stuck = db.rows("notification", "SELECT id, status FROM webhook_deliveries WHERE"
                                    " subscription_id = %s AND status <> 'delivered'", (subscription_id,))
    out += [f"webhook delivery {r['id']} is {r['status']}" for r in stuck]
    return _cap(out)


# --------------------------------------------------------------------------- messaging


def outboxes_drained(db: Schemas, accepted: set[str]) -> list[str]:
    out = []
    for service in SERVICES:
        rows = db.rows(service, "SELECT count(*) AS n FROM outbox WHERE published_at IS NULL")
        if rows[0]["n"]:
            out.append(f"{service}: {rows[0]['n']} outbox rows unpublished")
    return out


def dead_letters_are_the_poison(dead_letters: dict[str, list[dict]], poison: dict[str, list],
                                ) -> list[str]:
    """Every DLQ entry is a corpus message injected on its queue, with that entry's reason; each
    corpus message is in its queue's DLQ exactly once."""
    out = []
    for queue, entries in poison.items():
        expected = {entry.body: entry for entry in entries}
        seen = Counter()
        for message in dead_letters.get(queue, []):
            entry = expected.get(message["body"])
            if entry is None:
                out.append(f"{queue}: unexpected dead letter ({message['reason']}): "
                           f"{message['body'][:120]!r}")
                continue
            seen[entry.body] += 1
            if message["reason"] != entry.reason:
                out.append(f"{queue}: '{entry.label}' dead-lettered as {message['reason']!r}, "
                           f"expected {entry.reason!r}")
        for entry in entries:
            if seen[entry.body] != 1:
                out.append(f"{queue}: '{entry.label}' is in the DLQ {seen[entry.body]} times")
    for queue in dead_letters.keys() - poison.keys():
        out += [f"{queue}: dead letter with no poison sent ({m['reason']})" for m in dead_letters[queue]]
    return _cap(out)


CANCELLED_BUT_SHIPPED = "no cancelled order's shipment left the warehouse"
# Outcomes the design documents but does not forbid (docs/architecture.md, "Known edges"):
# counted and shown by every run, never a violation. A cancel crossing the carrier's pick-up
# was one until the delivery service decided paid cancels synchronously; it is a check now.
KNOWN_EDGES: dict[str, tuple[Callable, str]] = {}

CHECKS: dict[str, Callable] = {
    "every accepted order exists, is terminal; no order without a 201":
        every_accepted_order_exists_and_is_terminal,
    "exactly one shipment per shipped order": one_shipment_per_shipped_order,
    CANCELLED_BUT_SHIPPED: no_cancelled_order_was_shipped,
    "no status regression in any order's history": no_status_regression,
    "no reservation HELD past its TTL": no_reservation_held_past_its_ttl,
    "one notification per order event; status_changed events = status changes":
        notified_once_per_status_change,
    "one email per mailed event, all sent": one_email_per_mailed_event,
    "outboxes drained": outboxes_drained,
    "every DELIVERED order captured exactly once, for its total": delivered_orders_captured_once,
    "no cancelled order holds an authorization (voided, or refunded if captured)":
        cancelled_orders_hold_no_authorization,
}
