"""Stock, its derived status, and reservations (pure Python, no I/O).

Stock model (one row per product):

* ``on_hand`` — units we own that no confirmed order has taken yet;
* ``reserved`` — units HELD for orders that are not confirmed yet;
* ``available = on_hand - reserved`` — what a new reservation may take.

A reservation is HELD (with a time-to-live) when an order is being placed,
CONFIRMED when the order was committed (``order.created``: the units leave
``on_hand`` and ``reserved`` together), and RELEASED when the order was
cancelled (a confirmed reservation gives its units back to ``on_hand``) or
never committed (the sweeper releases it when its time-to-live ends).
Without backorders, ``available`` never goes below zero; with them it may,
which is what "on backorder" means.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from shared.errors import DomainError

CENT = Decimal("0.01")


class StockStatus(StrEnum):
    INSTOCK = "instock"
    OUTOFSTOCK = "outofstock"
    ONBACKORDER = "onbackorder"


class ReservationStatus(StrEnum):
    HELD = "HELD"
    CONFIRMED = "CONFIRMED"
    RELEASED = "RELEASED"


class ReleaseReason(StrEnum):
    CANCELLED = "order_cancelled"
    EXPIRED = "expired"
    # Checkout gave up before committing the order (its payment could not be opened).
    ABANDONED = "checkout_abandoned"


# Released reservations a retry of the same checkout may hold again (no order was committed).
RE_HOLDABLE = frozenset({ReleaseReason.EXPIRED.value, ReleaseReason.ABANDONED.value})


class AdjustmentReason(StrEnum):
    """Why an operator changed the stock on hand (kept with every adjustment)."""

    RECEIVED = "received"      # goods arrived
    RETURNED = "returned"      # a customer sent goods back into stock
    RECOUNT = "recount"        # a stock take found a different number
    CORRECTION = "correction"  # an earlier adjustment was wrong
    DAMAGED = "damaged"
    LOST = "lost"


def available(on_hand: int, reserved: int) -> int:
    """Units a new reservation may take (negative only for backorders)."""
    return on_hand - reserved


def stock_status(on_hand: int, reserved: int, allow_backorder: bool) -> StockStatus:
    """``instock`` while anything is available, else ``onbackorder`` or ``outofstock``."""
    if available(on_hand, reserved) > 0:
        return StockStatus.INSTOCK
    return StockStatus.ONBACKORDER if allow_backorder else StockStatus.OUTOFSTOCK


def can_take(on_hand: int, reserved: int, allow_backorder: bool, quantity: int) -> bool:
    """Whether ``quantity`` more units may be promised (backorders may always promise)."""
    return allow_backorder or available(on_hand, reserved) >= quantity


def adjusted_on_hand(on_hand: int, reserved: int, allow_backorder: bool, delta: int) -> int:
    """``on_hand`` after an operator adjustment; raise :class:`StockWouldGoNegative`.

    Without backorders the result must still cover every HELD unit, so an
    adjustment can never take away stock that was already promised.
    """
    after = on_hand + delta
    if not allow_backorder and after - reserved < 0:
        raise StockWouldGoNegative(on_hand, reserved, delta)
    return after


class StockWouldGoNegative(ValueError):
    """An adjustment would leave less stock than is held for orders."""

    def __init__(self, on_hand: int, reserved: int, delta: int):
        super().__init__(f"on_hand {on_hand} + delta {delta} would not cover {reserved} reserved")
        self.on_hand = on_hand
        self.reserved = reserved
        self.delta = delta


@dataclass(frozen=True)
class RequestedLine:
    """One line of an availability query or a reservation: a sku and how many."""

    sku: str
    quantity: int


@dataclass(frozen=True)
class Shortage:
    """A line that cannot be reserved: what was asked and what is there."""

    sku: str
    requested: int
    available: int

    def as_dict(self) -> dict:
        return {"sku": self.sku, "requested": self.requested, "available": self.available}


def lines_fingerprint(lines: list[RequestedLine]) -> str:
    """A hash of the lines that ignores their order (same lines -> same reservation)."""
    canonical = ";".join(f"{line.sku}:{line.quantity}" for line in sorted(lines, key=_by_sku))
    return hashlib.sha256(canonical.encode()).hexdigest()


def lock_order(lines: list[RequestedLine]) -> list[str]:
    """The skus in the one order every transaction locks product rows in (no deadlocks)."""
    return sorted({line.sku for line in lines})


def shortages(products: dict[str, dict], lines: list[RequestedLine]) -> list[Shortage]:
    """Every line the products (sku -> row) cannot cover, in request order."""
    short = []
    for line in lines:
        product = products[line.sku]
        if not can_take(product["on_hand"], product["reserved"], product["allow_backorder"],
                        line.quantity):
            short.append(Shortage(line.sku, line.quantity,
                                  max(0, available(product["on_hand"], product["reserved"]))))
    return short


def line_total(unit_price: Decimal, quantity: int) -> Decimal:
    """Price times quantity, in cents."""
    return (unit_price * quantity).quantize(CENT)


def _by_sku(line: RequestedLine) -> str:
    return line.sku


# --- what a command can be refused with (the HTTP layer maps each to a problem) -----------------
class ProductExists(DomainError):
    """A live product already has this sku."""


class NegativeStock(DomainError):
    """The change would leave fewer units on hand than are held for orders."""


class ProductInUse(DomainError):
    """Units of the product are held for orders being placed."""


class UnknownSku(DomainError):
    """No product has some of the requested skus (``errors``: which lines)."""


class MixedCurrencies(DomainError):
    """The requested products are priced in different currencies."""


class InsufficientStock(DomainError):
    """Not every line can be held: ``lines`` lists the short ones with what is available."""


class ReservationConfirmed(DomainError):
    """The reservation belongs to a committed order: only a cancel gives its stock back."""


class ReservationConflict(DomainError):
    """The order already holds a reservation with other lines."""


def require_known(products: dict[str, dict], lines: list[RequestedLine]) -> None:
    """Raise :class:`UnknownSku` naming each line whose sku has no product."""
    unknown = [(i, line.sku) for i, line in enumerate(lines) if line.sku not in products]
    if unknown:
        raise UnknownSku(f"No product has these skus: {', '.join(sku for _, sku in unknown)}.",
                         errors=[{"field": f"lines.{i}.sku", "message": "No such product."}
                                 for i, _ in unknown])
