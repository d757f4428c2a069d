"""Shipments, their allowed transitions, and who reaches which shipment (pure Python, no I/O).

Reach (:func:`reach_of`): an operator (``admin``) reaches every shipment; a carrier
client (``shipments:read`` or ``shipments:write``) reaches only the shipments of the
carrier its client is bound to (the token's ``carrier`` claim), and none when it is
bound to no carrier; anyone else (a customer, ``orders:read``) reaches their own.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from enum import StrEnum

from shared.errors import DomainError


class ShipmentStatus(StrEnum):
    CREATED = "CREATED"
    SHIPPED = "SHIPPED"
    IN_TRANSIT = "IN_TRANSIT"
    OUT_FOR_DELIVERY = "OUT_FOR_DELIVERY"
    DELIVERED = "DELIVERED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


S = ShipmentStatus
ALLOWED_TRANSITIONS: dict[ShipmentStatus, frozenset[ShipmentStatus]] = {
    S.CREATED: frozenset({S.SHIPPED, S.CANCELLED}),
    S.SHIPPED: frozenset({S.IN_TRANSIT, S.OUT_FOR_DELIVERY, S.DELIVERED, S.FAILED}),
    S.IN_TRANSIT: frozenset({S.OUT_FOR_DELIVERY, S.DELIVERED, S.FAILED}),
    S.OUT_FOR_DELIVERY: frozenset({S.DELIVERED, S.FAILED}),
    S.DELIVERED: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELLED: frozenset(),
}

# What a carrier may report (CREATED and CANCELLED come from orders, not carriers).
CARRIER_STATUSES = (S.SHIPPED, S.IN_TRANSIT, S.OUT_FOR_DELIVERY, S.DELIVERED, S.FAILED)

# The path the carrier simulator walks a new shipment along.
SIMULATED_PATH = {
    S.CREATED: S.SHIPPED,
    S.SHIPPED: S.IN_TRANSIT,
    S.IN_TRANSIT: S.OUT_FOR_DELIVERY,
    S.OUT_FOR_DELIVERY: S.DELIVERED,
}

EVENT_TYPES: dict[ShipmentStatus, str] = {
    S.CREATED: "delivery.shipment_created",
    S.SHIPPED: "delivery.shipped",
    S.IN_TRANSIT: "delivery.in_transit",
    S.OUT_FOR_DELIVERY: "delivery.out_for_delivery",
    S.DELIVERED: "delivery.delivered",
    S.FAILED: "delivery.failed",
    S.CANCELLED: "delivery.shipment_cancelled",
}

CARRIERS = ("DHL", "UPS", "GLS")
# The scopes of a carrier client: holding one makes the caller a carrier, bound or not.
CARRIER_SCOPES = frozenset({"shipments:read", "shipments:write"})


@dataclass(frozen=True)
class Reach:
    """Which shipments a caller may see and report on."""

    everything: bool = False
    carrier: str | None = None    # this carrier's shipments
    customer: str | None = None   # this customer's shipments

    def covers(self, shipment: dict) -> bool:
        return (self.everything
                or (self.carrier is not None and shipment["carrier"] == self.carrier)
                or (self.customer is not None and shipment["customer_id"] == self.customer))


def reach_of(principal) -> Reach:
    """The :class:`Reach` of a :class:`shared.auth.Principal` (see the module docstring)."""
    if principal.is_admin:
        return Reach(everything=True)
    if principal.scopes & CARRIER_SCOPES:
        # Fail closed: a carrier client without a binding is no customer and no carrier.
        return Reach(carrier=principal.carrier)
    return Reach(customer=principal.subject)


def can_transition(current: ShipmentStatus, target: ShipmentStatus) -> bool:
    """Whether a shipment in ``current`` may move to ``target``."""
    return target in ALLOWED_TRANSITIONS[current]


def choose_carrier(order_id: str) -> str:
    """A carrier for the order (stable per order, spread across carriers)."""
    digest = hashlib.sha256(order_id.encode()).digest()
    return CARRIERS[digest[0] % len(CARRIERS)]


def new_tracking_number(carrier: str) -> str:
    """A carrier-prefixed tracking number, e.g. ``DHL7K2P9Q4M1X8Z``."""
    alphabet = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"
    return carrier + "".join(secrets.choice(alphabet) for _ in range(12))


class InvalidTransition(DomainError):
    """A carrier reported a status the shipment may not move to from its current one."""


class ShipmentUnderway(DomainError):
    """A shipment the carrier has already picked up (or delivered) can no longer be stopped."""
