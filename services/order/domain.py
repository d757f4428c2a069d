"""Orders and their allowed transitions (pure Python, no I/O).

The delivery-status -> order-status mapping is the one explicit table
(:data:`DELIVERY_TO_ORDER_STATUS`); docs/architecture.md draws it as the order lifecycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from shared.errors import DomainError


class OrderStatus(StrEnum):
    PENDING_PAYMENT = "PENDING_PAYMENT"
    PENDING_SHIPMENT = "PENDING_SHIPMENT"
    SHIPPED = "SHIPPED"
    DELIVERED = "DELIVERED"
    CANCELLED = "CANCELLED"
    DELIVERY_FAILED = "DELIVERY_FAILED"


ALLOWED_TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    # payment.authorized, or a cancel (the customer's, or the unpaid-order expiry)
    OrderStatus.PENDING_PAYMENT: frozenset({OrderStatus.PENDING_SHIPMENT, OrderStatus.CANCELLED}),
    OrderStatus.PENDING_SHIPMENT: frozenset({OrderStatus.SHIPPED, OrderStatus.CANCELLED,
                                             OrderStatus.DELIVERY_FAILED}),
    OrderStatus.SHIPPED: frozenset({OrderStatus.DELIVERED, OrderStatus.DELIVERY_FAILED}),
    OrderStatus.DELIVERED: frozenset(),
    OrderStatus.CANCELLED: frozenset(),
    OrderStatus.DELIVERY_FAILED: frozenset(),
}

CANCELLABLE = frozenset({OrderStatus.PENDING_PAYMENT, OrderStatus.PENDING_SHIPMENT})
# Where an order can stay for good if nothing more happens: listed for operators past an age.
NON_TERMINAL = frozenset({OrderStatus.PENDING_PAYMENT, OrderStatus.PENDING_SHIPMENT,
                          OrderStatus.SHIPPED})

# None: a milestone that is recorded in the history but changes no status.
DELIVERY_TO_ORDER_STATUS: dict[str, OrderStatus | None] = {
    "delivery.shipment_created": None,
    "delivery.shipped": OrderStatus.SHIPPED,
    "delivery.in_transit": OrderStatus.SHIPPED,
    "delivery.out_for_delivery": OrderStatus.SHIPPED,
    "delivery.delivered": OrderStatus.DELIVERED,
    "delivery.failed": OrderStatus.DELIVERY_FAILED,
    "delivery.shipment_cancelled": None,
}


# Events that report progress inside a status (SHIPPED) rather than entering one.
PROGRESS_MILESTONES = frozenset({"delivery.in_transit", "delivery.out_for_delivery"})


def can_transition(current: OrderStatus, target: OrderStatus) -> bool:
    """Whether an order in ``current`` may move to ``target``."""
    return target in ALLOWED_TRANSITIONS[current]


@dataclass(frozen=True)
class Decision:
    """What to do with a delivery event for an order in a given status."""

    kind: str  # "transition" | "milestone" | "ignored"
    target: OrderStatus
    note: str


def decide(current: OrderStatus, delivery_event: str) -> Decision:
    """Apply the mapping table with guarded transitions.

    Stale or out-of-order events (``shipped`` after ``delivered``, anything
    after ``CANCELLED``) are ``ignored``: acknowledged and recorded, never applied.
    """
    target = DELIVERY_TO_ORDER_STATUS[delivery_event]
    if current == OrderStatus.CANCELLED and delivery_event != "delivery.shipment_cancelled":
        return Decision("ignored", current, f"{delivery_event} after CANCELLED")
    if target == current and delivery_event not in PROGRESS_MILESTONES:
        # e.g. a second delivery.delivered (a new event id, so the inbox let it through)
        return Decision("ignored", current, f"duplicate {delivery_event}: already {current}")
    if target is None or target == current:
        return Decision("milestone", current, delivery_event)
    if can_transition(current, target):
        return Decision("transition", target, delivery_event)
    return Decision("ignored", current, f"{delivery_event}: {current} -> {target} not allowed")


@dataclass(frozen=True)
class Item:
    """What the customer asks for: a sku and how many (prices are the catalog's)."""

    sku: str
    quantity: int


@dataclass(frozen=True)
class Line:
    """One order line as ordered: the unit price is the catalog's at reservation time."""

    sku: str
    quantity: int
    unit_price: Decimal

    @property
    def total(self) -> Decimal:
        return (self.unit_price * self.quantity).quantize(Decimal("0.01"))


def order_total(lines: list[Line]) -> Decimal:
    """The sum of the line totals."""
    return sum((line.total for line in lines), Decimal("0.00"))


# --- what a command can be refused with (the HTTP layer maps each to a problem) -----------------
class OrderNotCancellable(DomainError):
    """The order has shipped (or ended): too late to cancel."""


class PaymentUnavailable(DomainError):
    """The payment could not be opened (provider or payment service down): nothing was ordered."""

    def __init__(self, detail: str, retry_after_s: float):
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class ReservationReleased(DomainError):
    """The stock held under this order id was released (the order was cancelled)."""


class InsufficientStock(DomainError):
    """Inventory has not enough of some items: ``lines`` says how much of each there is."""


class ItemsRefused(DomainError):
    """Inventory refused the items for another reason (unknown skus, mixed currencies, ...).

    ``kind``, ``title`` and ``refused_status`` are inventory's own, passed on
    to the caller; the field paths are this order's items.
    """

    def __init__(self, kind: str, title: str, detail: str, refused_status: int,
                 errors: list[dict[str, str]] | None):
        super().__init__(detail, errors)
        self.kind = kind
        self.title = title
        self.refused_status = refused_status
