"""A short seeded chaos run (scripts/chaos.py's machinery) as part of the suite.

The whole system as ``make run`` starts it (payment and ops services and
localstripe included), a couple of hundred orders that are paid, cancelled
before or after paying, or left unpaid to expire, while every kind of process
is killed, SQS and PostgreSQL go away, the inventory API and the payment
provider freeze, deliveries are duplicated and reordered and the malformed
corpus is put on every queue; then every invariant must hold (the documented
known edges are counted, not asserted). About three minutes on two shared
cores (183 s measured): after the notification worker is killed, its leased
mails wait out the mailer's fixed 120 s lease, which bounds the quiet period.
"""

from __future__ import annotations

import shutil

import pytest

from devstack.chaos import faults as f
from devstack.chaos import report
from devstack.chaos.invariants import KNOWN_EDGES
from devstack.chaos.run import Config, chaos_run
from devstack.emulators import DEFAULT_FAUXQS_DIR, fauxqs_package_dir


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.skipif(shutil.which("node") is None or fauxqs_package_dir(DEFAULT_FAUXQS_DIR) is None,
                    reason="fauxqs is not installed (make fauxqs; it needs node >= 20)")
def test_a_short_chaos_run_keeps_every_invariant(tmp_path):
    config = Config(seed=7, duration_s=40, max_orders=300, clients=4, sqs_outage_s=5, freeze_s=3,
                    provider_freeze_s=4)
    result = chaos_run(config, say=print)

    kinds = {fault.fault.kind for fault in result.faults}
    assert kinds == f.KINDS
    assert [fr.error for fr in result.faults if fr.error] == []
    killed = {fr.fault.target for fr in result.faults if fr.fault.kind == f.KILL}
    assert killed == {"order-api", "order-worker", "delivery-api", "delivery-worker", "inventory-api",
                      "inventory-worker", "notification-api", "notification-worker", "auth-api",
                      "payment-api", "payment-worker", "ops-api"}
    # The checkout made while the payment provider was frozen was refused (503), not left hanging.
    assert [fr.detail for fr in result.faults if fr.fault.kind == f.PROVIDER_FREEZE][0].startswith(
        "checkout answered 503")
    # After each outage, and after the corpus on every queue, a new order still completes.
    assert all(fr.recovery_s is not None for fr in result.faults
               if fr.fault.kind in (*f.OUTAGES, f.POISON))
    assert len(result.accepted) >= 50   # 80-270 seen on the shared two cores
    assert result.corpus_sent > 0 and result.dead_letters == result.corpus_sent
    assert result.duplicates_sent > 0
    assert {name: v for name, v in result.violations.items() if v} == {}
    assert set(result.edges) == set(KNOWN_EDGES)

    path = tmp_path / "RELIABILITY.md"
    report.write(result, path)
    report.write(result, path)  # rewrites its section, keeps the rest
    text = path.read_text()
    assert text.count(report.BEGIN) == 1 and f"seed {config.seed}" in text
    assert f"{len(result.accepted)} orders accepted" in text


def test_the_schedule_is_reproducible_and_covers_every_fault():
    options = f.Options(duration_s=100, processes=("order-api", "order-worker"), kills_per_process=2)
    first, again, other = f.schedule(3, options), f.schedule(3, options), f.schedule(4, options)
    assert first == again and first != other
    assert [x.at_s for x in first] == sorted(x.at_s for x in first)
    assert {x.kind for x in first} == f.KINDS
    assert sum(1 for x in first if x.kind == f.KILL and x.target == "order-api") == 2
    assert all(0 < x.at_s < 100 for x in first)


class _Tables:
    """Rows for the payment invariants' queries, picked by the table each one reads."""

    def __init__(self, orders, payments, captures=()):
        self.orders, self.payments, self.captures = orders, payments, captures

    def rows(self, service, sql, params=()):
        if "FROM payment_history" in sql:
            return [{"order_id": o} for o in self.captures]
        return self.payments if "FROM payments" in sql else self.orders


def _order(order_id, status, total="12.50"):
    from decimal import Decimal

    return {"id": order_id, "status": status, "total": Decimal(total), "currency": "EUR"}


def _payment(order_id, status, captured=0, refunded=0):
    return {"order_id": order_id, "status": status, "amount_minor": 1250, "amount_captured": captured,
            "amount_refunded": refunded, "currency": "EUR"}


def test_the_payment_invariants_see_what_they_promise_to_see():
    from devstack.chaos import invariants as inv

    held = _Tables([_order("a", "DELIVERED"), _order("b", "CANCELLED"), _order("c", "CANCELLED")],
                   [_payment("a", "CAPTURED", 1250), _payment("b", "VOIDED"),
                    _payment("c", "REFUNDED", 1250, 1250), _payment("orphan", "REQUIRES_PAYMENT")],
                   captures=["a"])
    assert inv.delivered_orders_captured_once(held, set()) == []
    assert inv.cancelled_orders_hold_no_authorization(held, set()) == []

    broken = _Tables([_order("a", "DELIVERED"), _order("d", "DELIVERED"), _order("b", "CANCELLED"),
                      _order("c", "CANCELLED")],
                     [_payment("a", "CAPTURED", 1200), _payment("d", "AUTHORIZED"),
                      _payment("b", "AUTHORIZED"), _payment("c", "REFUNDED", 1250, 250),
                      _payment("orphan", "AUTHORIZED")],
                     captures=["a", "a"])
    captured = inv.delivered_orders_captured_once(broken, set())
    assert any("captured 1200 EUR, order total 1250" in v for v in captured)
    assert any("captured 2 times" in v for v in captured)
    assert any("payment AUTHORIZED, not CAPTURED" in v for v in captured)
    held_money = inv.cancelled_orders_hold_no_authorization(broken, set())
    assert sorted(v.split(":")[0] for v in held_money) == [
        "cancelled order b", "cancelled order c", "payment orphan without an order is AUTHORIZED"]
