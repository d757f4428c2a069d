"""Refunds of captured payments: money back, and for lines their units back to stock.

A refund is recorded PENDING before the provider is called and finished once
(:func:`finish_refund`; the reconciliation job finishes those whose provider
call failed); its ``payment.refunded`` carries the lines inventory restocks.
"""

from __future__ import annotations

import uuid

from services.payment import repository as repo
from services.payment.domain import (
    NotRefundable,
    PaymentLine,
    PaymentStatus,
    RefundRequest,
    plan_refund,
)
from services.payment.events import PRODUCER, SERVICE, now_iso
from shared.auth import Principal
from shared.contracts import event_data
from shared.errors import NotFound
from shared.logging import get_logger
from shared.messaging.envelope import Envelope
from shared.queues import add_event

log = get_logger(__name__)


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


def refund_whole(cur, gateway, payment: dict) -> None:
    """Refund everything not refunded yet of a captured payment whose order was cancelled.

    Its refund id is derived from the order, so a redelivered cancel finds it again.
    """
    order_id = payment["order_id"]
    refund_id = uuid.uuid5(uuid.NAMESPACE_URL, f"order-cancelled:{order_id}")
    lines = [PaymentLine(**line) for line in payment["lines"]]
    plan = plan_refund(payment, lines, _refunded_units(cur, order_id), RefundRequest(full=True))
    repo.insert_refund(cur, refund_id, order_id, "order-cancelled", plan.amount_minor,
                       _line_dicts(plan.lines), "order.cancelled")
    _complete_refund(cur, gateway, payment, repo.get_refund(cur, refund_id))


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
            "refunded_at": now_iso()})))
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
