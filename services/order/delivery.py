"""The order service's client for the delivery service: stopping a paid order's shipment.

Before a paid (PENDING_SHIPMENT) order is cancelled, the delivery service —
the one that knows whether the carrier has the parcel — is asked to stop its
shipment: ``PUT /v1/shipment-cancellations/{order_id}``. It cancels the
shipment (or, when there is none yet, records that none may be created) or
answers 409 with the shipment's ``status_now`` when the carrier has picked it
up. Only after its yes does the order change, so a cancel can no longer cross
the pick-up (docs/architecture.md, "Cancelling a paid order").

A :class:`services.order.peer.PeerClient` named ``delivery``: its breaker
(``BREAKER_DELIVERY_FAIL_MAX`` / ``BREAKER_DELIVERY_RESET_TIMEOUT_S``), a
timeout (``ORDER_DELIVERY_TIMEOUT_S``), a retry for transient errors only
(``ORDER_DELIVERY_ATTEMPTS``; safe, the call is idempotent by order id), and
the order service's own token (scope ``shipments:cancel``).
"""

from __future__ import annotations

import uuid

from services.order.peer import PeerClient, PeerConfig, PeerUnavailable, problem_of
from services.order.settings import OrderSettings
from shared.config import Settings, peer_url
from shared.resilience import BreakerRegistry
from shared.service_token import ServiceToken

BREAKER = "delivery"
SCOPE = "shipments:cancel"


class ShipmentUnderway(Exception):
    """The carrier has the parcel (or delivered it): ``status_now`` is the shipment's status."""

    def __init__(self, status_now: str):
        super().__init__(f"the shipment is already {status_now}")
        self.status_now = status_now


class DeliveryUnavailable(PeerUnavailable):
    """The delivery service could not say whether the shipment can be stopped."""


def delivery_config(settings: Settings, own: OrderSettings) -> PeerConfig:
    """``DELIVERY_URL`` (required in production; the local port otherwise) and the call's limits."""
    return PeerConfig(peer_url(settings, "delivery"), own.delivery_timeout_s, own.delivery_attempts)


class DeliveryClient:
    """Stops the shipment of an order about to be cancelled."""

    def __init__(self, config: PeerConfig, breakers: BreakerRegistry, token: ServiceToken,
                 session=None):
        self.peer = PeerClient(BREAKER, config, breakers, token, DeliveryUnavailable, session)

    def stop_shipment(self, order_id: uuid.UUID, reason: str | None,
                      correlation_id: str | None) -> None:
        """Return once no shipment of ``order_id`` will leave the warehouse.

        Raises :class:`ShipmentUnderway` (the carrier has it) or
        :class:`DeliveryUnavailable` (breaker open, unreachable, too slow, 5xx).
        """
        response = self.peer.call("PUT", f"/v1/shipment-cancellations/{order_id}", order_id,
                                  correlation_id, json={"reason": reason})
        if response.status_code == 200:
            return
        problem = problem_of(response)
        if response.status_code == 409 and isinstance(problem.get("status_now"), str):
            raise ShipmentUnderway(problem["status_now"])
        raise self.peer.refused(order_id, response)
