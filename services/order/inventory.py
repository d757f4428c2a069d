"""The order service's client for the inventory service: stock reservations.

A :class:`services.order.peer.PeerClient` named ``inventory``: its breaker
(``BREAKER_INVENTORY_FAIL_MAX`` / ``BREAKER_INVENTORY_RESET_TIMEOUT_S``), a
timeout (``ORDER_INVENTORY_TIMEOUT_S``) and a retry for transient errors only
(``ORDER_INVENTORY_ATTEMPTS``). Retrying is safe because a reservation is
idempotent by order id: the same lines again answer with the same reservation.

The order service's own token carries scope ``inventory:reserve``; customers
never hold it, so they cannot hold stock without placing an order.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal

from services.order.peer import PeerClient, PeerConfig, PeerUnavailable, problem_of
from services.order.settings import OrderSettings
from shared.config import Settings, peer_url
from shared.resilience import BreakerRegistry
from shared.service_token import ServiceToken

BREAKER = "inventory"
RESERVE_SCOPE = "inventory:reserve"


@dataclass(frozen=True)
class ReservedLine:
    sku: str
    name: str
    quantity: int
    unit_price: Decimal


@dataclass(frozen=True)
class Reservation:
    order_id: uuid.UUID
    status: str
    currency: str
    total: Decimal
    lines: list[ReservedLine]


class InventoryRefused(Exception):
    """Inventory answered with a problem the caller must see (409 stock, 422 skus)."""

    def __init__(self, status: int, problem: dict):
        super().__init__(problem.get("detail") or f"HTTP {status}")
        self.status = status
        self.problem = problem


class InventoryUnavailable(PeerUnavailable):
    """Inventory could not be used: breaker open, down, too slow, or broken."""


InventoryConfig = PeerConfig


def inventory_config(settings: Settings, own: OrderSettings) -> InventoryConfig:
    """Where inventory is and how long to wait for it.

    ``INVENTORY_URL`` (required in production; the local port otherwise), and the
    order service's ``ORDER_INVENTORY_TIMEOUT_S`` / ``ORDER_INVENTORY_ATTEMPTS``
    (from its :class:`OrderSettings`).
    """
    url = peer_url(settings, "inventory")
    return InventoryConfig(base_url=url, timeout_s=own.inventory_timeout_s, attempts=own.inventory_attempts)


class InventoryClient:
    """Reserves stock for an order (``PUT /v1/reservations/{order_id}``)."""

    def __init__(self, config: InventoryConfig, breakers: BreakerRegistry, token: ServiceToken,
                 session=None):
        self.peer = PeerClient(BREAKER, config, breakers, token, InventoryUnavailable, session)
        self.breaker = self.peer.breaker
        self.token = token

    def reserve(self, order_id: uuid.UUID, lines, correlation_id: str | None) -> Reservation:
        """Hold ``lines`` (sku, quantity) for ``order_id``; the catalog's prices come back.

        Raises :class:`InventoryRefused` (409 short stock, 422 unknown skus...) or
        :class:`InventoryUnavailable` (breaker open, unreachable, too slow, 5xx).
        """
        body = {"lines": [{"sku": line.sku, "quantity": line.quantity} for line in lines]}
        response = self.peer.call("PUT", f"/v1/reservations/{order_id}", order_id,
                                  correlation_id, json=body)
        if response.status_code in (200, 201):
            return _reservation(response.json())
        if response.status_code in (409, 422):
            raise InventoryRefused(response.status_code, problem_of(response))
        raise self.peer.refused(order_id, response)

    def release(self, order_id: uuid.UUID, correlation_id: str | None) -> bool:
        """Give back a HELD reservation of an order that was not committed; False if it failed.

        Best effort: when inventory cannot be reached the reservation's
        time-to-live releases it anyway (``INVENTORY_RESERVATION_TTL_S``).
        """
        try:
            response = self.peer.call("DELETE", f"/v1/reservations/{order_id}", order_id,
                                      correlation_id)
        except Exception as exc:
            self.peer.log_unavailable(order_id, f"release: {type(exc).__name__}: {exc}")
            return False
        if response.status_code not in (200, 204, 404):
            self.peer.log_unavailable(order_id, f"release: HTTP {response.status_code}")
            return False
        return True


def _reservation(body: dict) -> Reservation:
    return Reservation(
        order_id=uuid.UUID(body["order_id"]), status=body["status"], currency=body["currency"],
        total=Decimal(body["total"]),
        lines=[ReservedLine(line["sku"], line["name"], int(line["quantity"]),
                            Decimal(line["unit_price"])) for line in body["lines"]])
