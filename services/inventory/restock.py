"""Refunded units go back to stock: the consumer of ``payment.refunded``.

A refund of lines (the customer sent them back) puts exactly those units back
on hand, once per refund: ``refund_restocks`` records the refund in the same
transaction as the stock change and the inbox row. Each unit is also an audit
row in ``stock_adjustments`` (reason ``returned``), like an operator's return.
A refund of an amount alone has no lines and changes no stock.
"""

from __future__ import annotations

from services.inventory import repository as repo
from services.inventory.domain import AdjustmentReason
from shared.contracts import load_data
from shared.logging import get_logger
from shared.messaging.envelope import Envelope

log = get_logger(__name__)

REFUNDED_NEEDS = ("refund_id", "order_id", "lines", "lines.sku", "lines.quantity")
ACTOR = "payment.refunded"


def on_payment_refunded(cur, event: Envelope) -> None:
    """Put the refund's lines back on hand, exactly once per refund id."""
    data = load_data("payment.refunded", event.data, REFUNDED_NEEDS)
    lines = [line for line in data["lines"] if line["quantity"] > 0]
    if not repo.claim_refund_restock(cur, data["refund_id"], data["order_id"], lines):
        log.info("refund_restock_duplicate", refund_id=str(data["refund_id"]))
        return
    if not lines:
        return
    repo.move_stock(cur, [(line["sku"], line["quantity"], 0) for line in lines])
    for line in sorted(lines, key=lambda item: item["sku"]):
        product = repo.get_product(cur, line["sku"])
        repo.insert_adjustment(cur, line["sku"], line["quantity"], AdjustmentReason.RETURNED.value,
                               f"refund {data['refund_id']} of order {data['order_id']}",
                               product["on_hand"], ACTOR)
    log.info("refund_restocked", refund_id=str(data["refund_id"]), order_id=str(data["order_id"]),
             units=sum(line["quantity"] for line in lines))
