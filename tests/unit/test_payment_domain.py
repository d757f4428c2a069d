"""The payment rules without I/O: minor units, the state machine, refunds, the amount check."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.payment.domain import (
    ALLOWED,
    PaymentLine,
    PaymentStatus,
    RefundRefused,
    RefundRequest,
    amount_matches,
    amount_of,
    can_transition,
    payment_lines,
    plan_refund,
)
from shared.currencies import exponent_of, from_minor_units, to_minor_units

Ps = PaymentStatus
LINES = [PaymentLine("SKU-1", 2, 999), PaymentLine("SKU-2", 3, 50)]


def captured(amount_captured=2148, amount_refunded=0) -> dict:
    return {"amount_minor": 2148, "currency": "EUR", "amount_captured": amount_captured,
            "amount_refunded": amount_refunded}


@pytest.mark.parametrize(("amount", "currency", "minor"), [
    ("29.98", "EUR", 2998), ("1500", "JPY", 1500), ("1500.00", "JPY", 1500),
    ("1.234", "KWD", 1234), ("0.50", "usd", 50), (Decimal("14.50"), "EUR", 1450)])
def test_amounts_go_to_minor_units_with_the_currencys_exponent(amount, currency, minor):
    assert to_minor_units(amount, currency) == minor
    assert from_minor_units(minor, currency) == Decimal(str(amount)).quantize(
        Decimal(1).scaleb(-exponent_of(currency)))


@pytest.mark.parametrize(("amount", "currency"), [("10.50", "JPY"), ("0.001", "EUR")])
def test_an_amount_finer_than_the_minor_unit_is_refused_not_rounded(amount, currency):
    with pytest.raises(ValueError, match="more decimals"):
        to_minor_units(amount, currency)


def test_an_unknown_currency_has_no_exponent():
    with pytest.raises(ValueError, match="unknown currency"):
        exponent_of("XXX")


def test_the_amount_is_the_sum_of_the_lines_at_their_prices():
    lines = payment_lines("EUR", [("SKU-1", 2, Decimal("9.99")), ("SKU-2", 3, Decimal("0.50"))])
    assert lines == LINES and amount_of(lines) == 2148


def test_payments_only_move_forward_and_end_states_are_final():
    assert set(ALLOWED) == set(PaymentStatus)
    for end in (Ps.REFUNDED, Ps.VOIDED, Ps.REFUSED):
        assert ALLOWED[end] == frozenset()
    assert can_transition(Ps.REQUIRES_PAYMENT, Ps.AUTHORIZED)
    assert can_transition(Ps.AUTHORIZED, Ps.CAPTURED) and can_transition(Ps.AUTHORIZED, Ps.VOIDED)
    assert not can_transition(Ps.CAPTURED, Ps.AUTHORIZED)   # a late authorization changes nothing
    assert not can_transition(Ps.CAPTURED, Ps.VOIDED)       # captured money is refunded, not voided
    assert not can_transition(Ps.REQUIRES_PAYMENT, Ps.CAPTURED)  # never charged unauthorized


def test_the_amount_check_wants_the_same_amount_and_currency():
    payment = captured()
    assert amount_matches(payment, 2148, "eur")
    assert not amount_matches(payment, 2147, "eur")
    assert not amount_matches(payment, 2148, "usd")


def test_a_refund_of_lines_costs_their_order_prices_and_restocks_them():
    plan = plan_refund(captured(), LINES, {}, RefundRequest(lines=(("SKU-1", 1),)))
    assert (plan.amount_minor, plan.lines) == (999, (("SKU-1", 1),))


def test_a_refund_of_an_amount_restocks_nothing_and_a_full_one_is_what_is_left():
    assert plan_refund(captured(), LINES, {}, RefundRequest(amount_minor=100)).lines == ()
    full = plan_refund(captured(amount_refunded=999), LINES, {"SKU-1": 1}, RefundRequest(full=True))
    assert (full.amount_minor, full.lines) == (1149, (("SKU-1", 1), ("SKU-2", 3)))


@pytest.mark.parametrize(("request_", "refunded_units", "field"), [
    (RefundRequest(lines=(("SKU-1", 3),)), {}, "lines.0.quantity"),        # ordered 2
    (RefundRequest(lines=(("SKU-1", 2),)), {"SKU-1": 1}, "lines.0.quantity"),  # one went back
    (RefundRequest(lines=(("SKU-9", 1),)), {}, "lines.0.sku"),
    (RefundRequest(amount_minor=2149), {}, "amount_minor"),
])
def test_a_refund_beyond_what_is_left_is_refused_naming_the_field(request_, refunded_units, field):
    with pytest.raises(RefundRefused) as refused:
        plan_refund(captured(), LINES, refunded_units, request_)
    assert [e["field"] for e in refused.value.errors] == [field]


def test_nothing_is_refundable_once_everything_went_back():
    with pytest.raises(RefundRefused):
        plan_refund(captured(amount_refunded=2148), LINES, {}, RefundRequest(amount_minor=1))
