"""Payment commands and event handlers: one function each, dependencies as arguments.

The provider (``gateway``, :class:`services.payment.provider.StripeGateway`)
is called with idempotency keys, so each command may be retried: a consumer
calls it inside its inbox transaction and a failure rolls everything back
for the message to come again. Every state change and the events it causes
are written in one transaction (the outbox); nothing here talks to SQS.
Commands return rows and raise the refusals of :mod:`services.payment.domain`;
the views turn those into problems (``services/payment/api.py``).

How an authorization is learnt, whichever comes first (all go through
:func:`apply_intent`, which moves forward only, so duplicates and stale or
reordered news change nothing): the answer to the confirm call, the webhook
``payment_intent.amount_capturable_updated``, or the reconciliation job that
asks Stripe about payments with no news.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from services.payment import repository as repo
from services.payment.domain import (
    INTENT_AUTHORIZED,
    INTENT_CANCELED,
    INTENT_SUCCEEDED,
    AmountMismatch,
    NotRefundable,
    PaymentConflict,
    PaymentDeclined,
    PaymentLine,
    PaymentNotPayable,
    PaymentStatus,
    RefundRequest,
    amount_matches,
    amount_of,
    can_transition,
    payment_lines,
    plan_refund,
)
from services.payment.provider import Intent, ProviderRefused, ProviderUnavailable
from shared.auth import Principal
from shared.contracts import event_data, load_data
from shared.errors import NotFound
from shared.logging import get_logger
from shared.messaging.envelope import Envelope
from shared.queues import add_event

log = get_logger(__name__)

SERVICE = "payment"
PRODUCER = "payment-service"
ORDER_EVENT_NEEDS = {"order.status_changed": ("order_id", "status"),
                     "order.cancelled": ("order_id",)}
RECONCILE_BATCH = 20


@dataclass(frozen=True)
class CreatePayment:
    order_id: uuid.UUID
    customer_id: str
    currency: str
    lines: list[tuple[str, int, Decimal]]  # sku, quantity, unit price (the catalog's)


def create_payment(db, gateway, command: CreatePayment) -> tuple[dict, bool]:
    """The order's payment with a PaymentIntent for its amount: ``(payment, created)``.

    Idempotent by order id: the same lines again answer the stored payment;
    other lines or another currency are :class:`PaymentConflict`. When the
    provider cannot be reached the row is removed again and
    :class:`ProviderUnavailable` passes through (checkout answers 503; no
    payment is left half-made).
    """
    currency = command.currency.strip().upper()
    lines = payment_lines(currency, command.lines)
    amount = amount_of(lines)
    with db.transaction() as cur:
        existing = repo.get_payment(cur, command.order_id, lock=True)
        if existing is None:
            repo.insert_payment(cur, command.order_id, command.customer_id, currency, amount,
                                [line.as_dict() for line in lines], PaymentStatus.REQUIRES_PAYMENT)
            repo.add_history(cur, command.order_id, PaymentStatus.REQUIRES_PAYMENT, None, "create",
                             amount)
        elif (existing["currency"].strip() != currency or existing["amount_minor"] != amount
              or existing["lines"] != [line.as_dict() for line in lines]):
            raise PaymentConflict("This order already has a payment for other lines or another "
                                  "currency.")
        elif existing["intent_id"] is not None:
            return existing, False
    try:
        intent = gateway.create_intent(command.order_id, amount, currency)
    except (ProviderUnavailable, ProviderRefused):
        with db.transaction() as cur:
            repo.delete_unstarted(cur, command.order_id)
        raise
    with db.transaction() as cur:
        repo.set_intent(cur, command.order_id, intent.id, intent.client_secret)
        payment = repo.get_payment(cur, command.order_id)
    log.info("payment_created", order_id=str(command.order_id), amount_minor=amount,
             currency=currency, intent_id=payment["intent_id"])
    return payment, existing is None


def get_payment(db, principal: Principal, order_id: uuid.UUID) -> dict:
    """The payment with its history and refunds, if the caller may see it."""
    with db.transaction() as cur:
        payment = repo.get_payment(cur, order_id)
        if payment is None or not _visible(principal, payment):
            raise NotFound("No payment for this order.")
        payment["history"] = repo.history(cur, order_id)
        payment["refunds"] = repo.refunds_of(cur, order_id)
    return payment


def confirm_payment(db, gateway, principal: Principal, order_id: uuid.UUID,
                    payment_method_id: str) -> dict:
    """Confirm the intent with a PaymentMethod id from the storefront (Stripe.js; no card data).

    A payment already authorized (or further) is answered as it is. The
    confirm answer is applied like any other news of the intent.
    """
    with db.transaction() as cur:
        payment = repo.get_payment(cur, order_id)
    if payment is None or not _visible(principal, payment):
        raise NotFound("No payment for this order.")
    status = PaymentStatus(payment["status"])
    if status in (PaymentStatus.VOIDED, PaymentStatus.REFUSED):
        raise PaymentNotPayable(f"This payment is {status} and can no longer be paid.",
                                status_now=status.value)
    if status != PaymentStatus.REQUIRES_PAYMENT:
        return get_payment(db, principal, order_id)
    try:
        intent = gateway.confirm(order_id, payment["intent_id"], payment_method_id)
    except ProviderRefused as exc:
        with db.transaction() as cur:
            repo.set_last_error(cur, order_id, f"{exc.code or 'refused'}: {exc}"[:500])
        raise PaymentDeclined(str(exc) or "The payment method was declined.",
                              decline_code=exc.code) from None
    with db.transaction() as cur:
        locked = repo.get_payment(cur, order_id, lock=True)
        outcome = apply_intent(cur, gateway, locked, intent, "confirm")
    if outcome == "refused":
        raise AmountMismatch("The payment provider's amount is not this order's amount; the "
                             "payment was refused and cancelled.")
    return get_payment(db, principal, order_id)


def apply_intent(cur, gateway, payment: dict, intent: Intent, cause: str) -> str:
    """Bring a locked payment forward to what the provider says of its intent; the outcome.

    ``authorized`` emits ``payment.authorized`` (only for the order's exact
    amount and currency; otherwise ``refused``: the intent is cancelled and
    nothing is emitted). An authorization for a payment already voided (its
    order was cancelled meanwhile) is voided again at once, so a cancelled
    order never keeps money held. News that would move the payment backwards
    or sideways is ``ignored``.
    """
    order_id = payment["order_id"]
    current = PaymentStatus(payment["status"])
    if intent.status == INTENT_AUTHORIZED:
        if current == PaymentStatus.VOIDED:
            gateway.cancel(order_id, intent.id)
            repo.add_history(cur, order_id, current, current, "void", note=f"{cause}: authorized "
                             "after the order was cancelled")
            return "voided_again"
        if current != PaymentStatus.REQUIRES_PAYMENT:
            return "ignored"
        if not amount_matches(payment, intent.amount, intent.currency):
            gateway.cancel(order_id, intent.id)
            note = (f"intent {intent.amount} {intent.currency} is not the order's "
                    f"{payment['amount_minor']} {payment['currency'].strip()}")
            _move(cur, payment, PaymentStatus.REFUSED, cause, note=note, last_error=note)
            log.error("payment_amount_mismatch", order_id=str(order_id), note=note)
            return "refused"
        _move(cur, payment, PaymentStatus.AUTHORIZED, cause, amount=intent.amount)
        add_event(cur, SERVICE, Envelope(
            event_type="payment.authorized", aggregate_id=str(order_id), producer=PRODUCER,
            data=event_data("payment.authorized", {
                "order_id": str(order_id), "payment_intent_id": intent.id,
                "currency": payment["currency"].strip(), "amount_minor": intent.amount,
                "authorized_at": _now()})))
        log.info("payment_authorized", order_id=str(order_id), cause=cause)
        return "authorized"
    if intent.status == INTENT_CANCELED and can_transition(current, PaymentStatus.VOIDED):
        _move(cur, payment, PaymentStatus.VOIDED, cause, note="cancelled at the provider")
        return "voided"
    if intent.status == INTENT_SUCCEEDED and current == PaymentStatus.AUTHORIZED:
        _move(cur, payment, PaymentStatus.CAPTURED, cause, amount=intent.amount,
              amount_captured=intent.amount)
        return "captured"
    repo.mark_checked(cur, order_id)
    return "ignored"


# --- consumed events: the order's life decides what happens to its money ----------------------
def order_event_handler(gateway) -> Callable:
    """The consumer of ``order-payments.fifo``: capture on SHIPPED, void or refund on cancel."""

    def on_order_event(cur, event: Envelope) -> None:
        data = load_data(event.event_type, event.data, ORDER_EVENT_NEEDS[event.event_type])
        order_id = data["order_id"]
        if event.event_type == "order.status_changed" and data["status"] != "SHIPPED":
            return  # only shipping moves money
        payment = repo.get_payment(cur, order_id, lock=True)
        if payment is None:
            log.warning("order_event_without_payment", order_id=str(order_id),
                        event_type=event.event_type)
            return
        if event.event_type == "order.status_changed":
            capture(cur, gateway, payment, event.event_type)
        else:
            settle_cancelled(cur, gateway, payment, data.get("reason"))

    return on_order_event


def capture(cur, gateway, payment: dict, cause: str) -> None:
    """Charge the authorized amount (the whole order ships as one shipment); once."""
    current = PaymentStatus(payment["status"])
    if current != PaymentStatus.AUTHORIZED:
        log.warning("capture_skipped", order_id=str(payment["order_id"]), status=current.value)
        repo.add_history(cur, payment["order_id"], current, current, "capture_skipped",
                         note=f"payment is {current}")
        return
    amount = payment["amount_minor"]
    gateway.capture(payment["order_id"], payment["intent_id"], amount)
    _move(cur, payment, PaymentStatus.CAPTURED, "capture", amount=amount, amount_captured=amount)
    log.info("payment_captured", order_id=str(payment["order_id"]), amount_minor=amount)


def settle_cancelled(cur, gateway, payment: dict, reason: str | None) -> None:
    """A cancelled order keeps no money: void what is held, refund what was captured."""
    current = PaymentStatus(payment["status"])
    order_id = payment["order_id"]
    if current in (PaymentStatus.REQUIRES_PAYMENT, PaymentStatus.AUTHORIZED):
        gateway.cancel(order_id, payment["intent_id"])
        _move(cur, payment, PaymentStatus.VOIDED, "void", note=reason)
        log.info("payment_voided", order_id=str(order_id), was=current.value)
    elif current == PaymentStatus.CAPTURED:
        refund_id = uuid.uuid5(uuid.NAMESPACE_URL, f"order-cancelled:{order_id}")
        lines = [PaymentLine(**line) for line in payment["lines"]]
        plan = plan_refund(payment, lines, _refunded_units(cur, order_id), RefundRequest(full=True))
        repo.insert_refund(cur, refund_id, order_id, "order-cancelled", plan.amount_minor,
                           _line_dicts(plan.lines), "order.cancelled")
        _complete_refund(cur, gateway, payment, repo.get_refund(cur, refund_id))


# --- refunds ----------------------------------------------------------------------------------
def refund(db, gateway, principal: Principal, order_id: uuid.UUID, request: RefundRequest,
           request_key: str | None) -> dict:
    """Give back money (and, for lines, their units to stock) of a captured payment.

    The refund is recorded PENDING before the provider is called, under a
    refund id the provider sees in its metadata; a retry with the same
    ``Idempotency-Key`` (``request_key``) reuses it, and the reconciliation job
    finishes refunds whose provider call failed. So each refund is made once
    and its ``payment.refunded`` (with the lines) is emitted once.
    """
    with db.transaction() as cur:
        payment = repo.get_payment(cur, order_id, lock=True)
        if payment is None:
            raise NotFound("No payment for this order.")
        existing = repo.refund_by_key(cur, order_id, request_key) if request_key else None
        if existing is not None:
            refund_id = existing["id"]
        else:
            current = PaymentStatus(payment["status"])
            if current not in (PaymentStatus.CAPTURED,):
                raise NotRefundable(f"Only a captured payment can be refunded; this one is "
                                    f"{current}.", status_now=current.value)
            lines = [PaymentLine(**line) for line in payment["lines"]]
            plan = plan_refund(payment, lines, _refunded_units(cur, order_id), request)
            refund_id = uuid.uuid4()
            repo.insert_refund(cur, refund_id, order_id, request_key, plan.amount_minor,
                               _line_dicts(plan.lines), principal.subject)
    return finish_refund(db, gateway, refund_id)


def finish_refund(db, gateway, refund_id: uuid.UUID) -> dict:
    """Make a PENDING refund at the provider and record it; a SUCCEEDED one is returned as it is."""
    with db.transaction() as cur:
        row = repo.get_refund(cur, refund_id, lock=True)
        if row["status"] == "PENDING":
            payment = repo.get_payment(cur, row["order_id"], lock=True)
            _complete_refund(cur, gateway, payment, row)
        return repo.get_refund(cur, refund_id)


def _complete_refund(cur, gateway, payment: dict, row: dict) -> None:
    order_id = payment["order_id"]
    made = gateway.refund(order_id, payment["intent_id"], row["id"], row["amount_minor"])
    repo.complete_refund(cur, row["id"], made.id)
    repo.add_refunded(cur, order_id, row["amount_minor"])
    refunded_all = payment["amount_refunded"] + row["amount_minor"] >= payment["amount_captured"]
    target = PaymentStatus.REFUNDED if refunded_all else PaymentStatus(payment["status"])
    if target != payment["status"]:
        repo.set_status(cur, order_id, target)
    repo.add_history(cur, order_id, target, payment["status"], "refund", row["amount_minor"],
                     note=f"refund {row['id']}")
    add_event(cur, SERVICE, Envelope(
        event_type="payment.refunded", aggregate_id=str(order_id), producer=PRODUCER,
        data=event_data("payment.refunded", {
            "refund_id": str(row["id"]), "order_id": str(order_id),
            "currency": payment["currency"].strip(), "amount_minor": row["amount_minor"],
            "lines": [{"sku": line["sku"], "quantity": line["quantity"]} for line in row["lines"]],
            "refunded_at": _now()})))
    log.info("payment_refunded", order_id=str(order_id), refund_id=str(row["id"]),
             amount_minor=row["amount_minor"], lines=len(row["lines"]))


def _refunded_units(cur, order_id: uuid.UUID) -> dict[str, int]:
    units: dict[str, int] = {}
    for row in repo.refunds_of(cur, order_id):  # pending ones count: they are on their way
        for line in row["lines"]:
            units[line["sku"]] = units.get(line["sku"], 0) + line["quantity"]
    return units


def _line_dicts(lines) -> list[dict]:
    return [{"sku": sku, "quantity": quantity} for sku, quantity in lines]


# --- Stripe's webhook events ------------------------------------------------------------------
INTENT_EVENTS = ("payment_intent.amount_capturable_updated", "payment_intent.canceled",
                 "payment_intent.succeeded", "payment_intent.payment_failed")


def on_stripe_event(db, gateway, event: dict) -> str:
    """Apply one verified Stripe event, once (``stripe_events`` is its inbox); the outcome.

    The event's intent is applied like a confirm answer; an event of another
    type, or for an intent that is not ours, is recorded and changes nothing.
    """
    with db.transaction() as cur:
        if not repo.claim_stripe_event(cur, event["id"], event["type"]):
            return "duplicate"
        outcome = "ignored"
        if event["type"] in INTENT_EVENTS:
            obj = event["data"]["object"]
            payment = repo.lock_payment_by_intent(cur, obj["id"])
            if payment is None:
                outcome = "unknown_intent"
            elif event["type"] == "payment_intent.payment_failed":
                error = (obj.get("last_payment_error") or {}).get("code") or "payment_failed"
                repo.set_last_error(cur, payment["order_id"], error)
                outcome = "payment_failed"
            else:
                outcome = apply_intent(cur, gateway, payment, Intent.of(obj), event["type"])
        repo.set_stripe_event_outcome(cur, event["id"], outcome)
    log.info("stripe_event_handled", event_id=event["id"], type=event["type"], outcome=outcome)
    return outcome


# --- reconciliation -----------------------------------------------------------------------------
def reconcile(db, gateway, older_than_s: float, limit: int = RECONCILE_BATCH) -> int:
    """Ask the provider about payments with no news and finish refunds left PENDING.

    For orders whose webhook never came: a payment still REQUIRES_PAYMENT for
    longer than ``older_than_s`` is looked up and applied as the provider has
    it. Each payment is one transaction, taken with SKIP LOCKED so several
    workers share the work. Returns how many were looked at.
    """
    with db.transaction() as cur:
        order_ids = repo.unsettled(cur, older_than_s, limit)
        refund_ids = repo.pending_refunds(cur, older_than_s, limit)
    for order_id in order_ids:
        try:
            with db.transaction() as cur:
                payment = repo.try_lock_payment(cur, order_id)
                if payment is None or payment["status"] != PaymentStatus.REQUIRES_PAYMENT:
                    continue
                intent = gateway.retrieve(order_id, payment["intent_id"])
                outcome = apply_intent(cur, gateway, payment, intent, "reconcile")
            if outcome != "ignored":
                log.warning("payment_reconciled", order_id=str(order_id), outcome=outcome)
        except (ProviderUnavailable, ProviderRefused) as exc:
            log.warning("reconcile_failed", order_id=str(order_id), error=str(exc)[:300])
    for refund_id in refund_ids:
        try:
            finish_refund(db, gateway, refund_id)
        except (ProviderUnavailable, ProviderRefused) as exc:
            log.warning("refund_retry_failed", refund_id=str(refund_id), error=str(exc)[:300])
    return len(order_ids) + len(refund_ids)


# --- helpers ------------------------------------------------------------------------------------
def _move(cur, payment: dict, target: PaymentStatus, action: str, *, amount: int | None = None,
          amount_captured: int | None = None, note: str | None = None,
          last_error: str | None = None) -> None:
    repo.set_status(cur, payment["order_id"], target, amount_captured=amount_captured,
                    last_error=last_error)
    repo.add_history(cur, payment["order_id"], target, payment["status"], action, amount, note)


def _visible(principal: Principal, payment: dict) -> bool:
    return principal.is_admin or payment["customer_id"] == principal.subject


def _now() -> str:
    return datetime.now(UTC).isoformat()
