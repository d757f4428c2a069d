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
asks Stripe about payments with no news (:mod:`services.payment.reconciliation`).
Refunds are :mod:`services.payment.refunds`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from services.payment import refunds
from services.payment import repository as repo
from services.payment.domain import (
    INTENT_AUTHORIZED,
    INTENT_CANCELED,
    INTENT_SUCCEEDED,
    AmountMismatch,
    PaymentConflict,
    PaymentDeclined,
    PaymentNotPayable,
    PaymentStatus,
    amount_matches,
    amount_of,
    can_transition,
    payment_lines,
)
from services.payment.events import PRODUCER, SERVICE, now_iso
from services.payment.provider import Intent, ProviderRefused, ProviderUnavailable
from shared.auth import Principal
from shared.contracts import event_data, load_data
from shared.errors import NotFound
from shared.logging import get_logger
from shared.messaging.envelope import Envelope
from shared.queues import add_event

log = get_logger(__name__)

ORDER_EVENT_NEEDS = {"order.status_changed": ("order_id", "status"),
                     "order.cancelled": ("order_id",)}


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
                "authorized_at": now_iso()})))
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
        refunds.refund_whole(cur, gateway, payment)


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


# --- helpers ------------------------------------------------------------------------------------
def _move(cur, payment: dict, target: PaymentStatus, action: str, *, amount: int | None = None,
          amount_captured: int | None = None, note: str | None = None,
          last_error: str | None = None) -> None:
    repo.set_status(cur, payment["order_id"], target, amount_captured=amount_captured,
                    last_error=last_error)
    repo.add_history(cur, payment["order_id"], target, payment["status"], action, amount, note)


def _visible(principal: Principal, payment: dict) -> bool:
    return principal.is_admin or payment["customer_id"] == principal.subject
