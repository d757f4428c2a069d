"""Payments and their allowed transitions, refunds and the amount rule (pure Python, no I/O).

A payment is one Stripe PaymentIntent for one order, created with manual
capture: the customer's card is authorized at checkout and charged when the
order ships. docs/architecture.md draws the state machine.

Money is integer minor units of the currency (``shared/currencies.py``):
EUR 29.98 is 2998, JPY 1500 is 1500. Every amount is computed here from the
order's lines (their catalog prices), never taken from a client.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from shared.currencies import to_minor_units
from shared.errors import DomainError


class PaymentStatus(StrEnum):
    REQUIRES_PAYMENT = "REQUIRES_PAYMENT"  # intent created; the storefront has not confirmed it
    AUTHORIZED = "AUTHORIZED"              # the amount is held on the card (requires_capture)
    CAPTURED = "CAPTURED"                  # charged (the order shipped)
    REFUNDED = "REFUNDED"                  # every captured unit of money went back
    VOIDED = "VOIDED"                      # intent cancelled: nothing held, nothing charged
    REFUSED = "REFUSED"                    # the intent's amount was not the order's: cancelled


ALLOWED: dict[PaymentStatus, frozenset[PaymentStatus]] = {
    PaymentStatus.REQUIRES_PAYMENT: frozenset({PaymentStatus.AUTHORIZED, PaymentStatus.VOIDED,
                                               PaymentStatus.REFUSED}),
    PaymentStatus.AUTHORIZED: frozenset({PaymentStatus.CAPTURED, PaymentStatus.VOIDED}),
    PaymentStatus.CAPTURED: frozenset({PaymentStatus.REFUNDED}),
    PaymentStatus.REFUNDED: frozenset(),
    PaymentStatus.VOIDED: frozenset(),
    PaymentStatus.REFUSED: frozenset(),
}

# Stripe PaymentIntent statuses that matter here (the others change nothing of ours).
INTENT_AUTHORIZED = "requires_capture"
INTENT_CANCELED = "canceled"
INTENT_SUCCEEDED = "succeeded"


def can_transition(current: PaymentStatus, target: PaymentStatus) -> bool:
    """Whether a payment in ``current`` may move to ``target`` (forward only)."""
    return target in ALLOWED[current]


@dataclass(frozen=True)
class PaymentLine:
    """One order line as the payment knows it: units and the unit price in minor units."""

    sku: str
    quantity: int
    unit_amount: int

    def as_dict(self) -> dict:
        return {"sku": self.sku, "quantity": self.quantity, "unit_amount": self.unit_amount}


# Stripe's largest amount is 99,999,999 minor units (eight digits) for most currencies.
MAX_AMOUNT_MINOR = 99_999_999


def payment_lines(currency: str, lines: Iterable[tuple[str, int, Decimal]]) -> list[PaymentLine]:
    """Order lines (sku, quantity, unit price) in minor units; AmountRefused for what cannot be paid.

    A price finer than the currency's minor unit (JPY 10.50) is refused rather
    than rounded, and so is a total of nothing or more than a provider takes.
    """
    made, errors = [], []
    for index, (sku, quantity, price) in enumerate(lines):
        try:
            made.append(PaymentLine(sku, quantity, to_minor_units(price, currency)))
        except ValueError as exc:
            errors.append({"field": f"lines.{index}.unit_price", "message": str(exc)})
    if errors:
        raise AmountRefused("Some prices cannot be charged in this currency.", errors=errors)
    if not 0 < amount_of(made) <= MAX_AMOUNT_MINOR:
        raise AmountRefused(f"The amount must be between 1 and {MAX_AMOUNT_MINOR} minor units.",
                            errors=[{"field": "lines", "message": "Total out of range."}])
    return made


def amount_of(lines: Iterable[PaymentLine]) -> int:
    """What the order costs, in minor units: the sum of its lines."""
    return sum(line.unit_amount * line.quantity for line in lines)


def amount_matches(payment: dict, intent_amount: int, intent_currency: str) -> bool:
    """The provider's intent is for exactly the order's amount in the order's currency."""
    return (intent_amount == payment["amount_minor"]
            and intent_currency.strip().lower() == payment["currency"].strip().lower())


# --- refunds --------------------------------------------------------------------------------
@dataclass(frozen=True)
class RefundRequest:
    """What an operator asks to give back: everything, some units of some lines, or an amount."""

    full: bool = False
    lines: tuple[tuple[str, int], ...] = ()  # (sku, quantity)
    amount_minor: int | None = None


@dataclass(frozen=True)
class RefundPlan:
    amount_minor: int
    lines: tuple[tuple[str, int], ...]  # the units that go back to stock


def plan_refund(payment: dict, lines: list[PaymentLine], refunded_units: dict[str, int],
                request: RefundRequest) -> RefundPlan:
    """The amount and units of a refund, within what was captured and not yet refunded.

    A refund of lines costs those units at their order price; a refund of an
    amount alone restocks nothing (a goodwill gesture); a full refund is
    whatever money and units are left.
    """
    left = payment["amount_captured"] - payment["amount_refunded"]
    if left <= 0:
        raise RefundRefused("Everything captured for this order was refunded already.")
    units_left = {line.sku: line.quantity - refunded_units.get(line.sku, 0) for line in lines}
    if request.full:
        return RefundPlan(left, tuple((sku, n) for sku, n in units_left.items() if n > 0))
    if request.lines:
        by_sku = {line.sku: line for line in lines}
        errors = []
        for index, (sku, quantity) in enumerate(request.lines):
            if sku not in by_sku:
                errors.append({"field": f"lines.{index}.sku", "message": "Not a line of this order."})
            elif quantity > units_left[sku]:
                errors.append({"field": f"lines.{index}.quantity",
                               "message": f"Only {units_left[sku]} unit(s) left to refund."})
        if errors:
            raise RefundRefused("Some lines cannot be refunded.", errors=errors)
        amount = sum(by_sku[sku].unit_amount * quantity for sku, quantity in request.lines)
        if amount > left:
            raise RefundRefused(f"These lines cost {amount}; only {left} is left to refund.")
        return RefundPlan(amount, request.lines)
    assert request.amount_minor is not None
    if request.amount_minor > left:
        raise RefundRefused(f"Only {left} is left to refund.",
                            errors=[{"field": "amount_minor", "message": f"At most {left}."}])
    return RefundPlan(request.amount_minor, ())


# --- what a command can be refused with (the HTTP layer maps each to a problem) -----------------
class AmountRefused(DomainError):
    """The lines cannot make a chargeable amount (sub-unit prices, nothing, too much)."""


class PaymentConflict(DomainError):
    """The order already has a payment for other lines or another currency."""


class PaymentNotPayable(DomainError):
    """The payment cannot be confirmed any more (voided, refused)."""


class PaymentDeclined(DomainError):
    """The provider declined the payment method (the customer may try another)."""


class AmountMismatch(DomainError):
    """The provider's intent is not for the order's amount: refused and cancelled."""


class NotRefundable(DomainError):
    """Only captured money can be refunded."""


class RefundRefused(DomainError):
    """The refund asks for more than is left, or for lines the order does not have."""
