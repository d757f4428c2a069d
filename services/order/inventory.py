"""The order service's client for the inventory service: stock reservations.

Every call goes through the named breaker ``inventory`` (thresholds from
``BREAKER_INVENTORY_FAIL_MAX`` / ``BREAKER_INVENTORY_RESET_TIMEOUT_S``) with a
timeout (``ORDER_INVENTORY_TIMEOUT_S``) and a tenacity retry for transient
errors only (``ORDER_INVENTORY_ATTEMPTS``): connection refused/reset,
timeouts, 429/502/503/504. Retrying is safe because a reservation is
idempotent by order id: the same lines again answer with the same reservation.

Authentication: the order service calls with its OWN token (client
``ORDER_CLIENT_ID``, scope ``inventory:reserve``), never the customer's, so
customers cannot hold stock without placing an order. It gets that token from
the auth service with client credentials (:mod:`shared.service_token`: cached,
renewed a minute before it expires, through the ``auth-token`` breaker); when
inventory answers 401 the token is dropped and the next call gets a new one.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal

import requests

from services.order.settings import OrderSettings
from shared.config import Settings, peer_url
from shared.logging import get_logger
from shared.resilience import BreakerOpen, BreakerRegistry, ResilientHttp, is_transient
from shared.service_token import ServiceToken, ServiceTokenError

log = get_logger(__name__)

BREAKER = "inventory"
RESERVE_SCOPE = "inventory:reserve"
# A 503 that is not the breaker's own: inventory failed or was unreachable on every attempt.
UNAVAILABLE_RETRY_AFTER_S = 1


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


class InventoryUnavailable(Exception):
    """Inventory could not be used: breaker open, down, too slow, or broken."""

    def __init__(self, reason: str, retry_after_s: float):
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class InventoryConfig:
    base_url: str
    timeout_s: float
    attempts: int


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
                 session: requests.Session | None = None):
        self.breaker = breakers.get(BREAKER)
        self.http = ResilientHttp(config.base_url, self.breaker, timeout_s=config.timeout_s,
                                  attempts=config.attempts, session=session or _session())
        self.token = token

    def reserve(self, order_id: uuid.UUID, lines, correlation_id: str | None) -> Reservation:
        """Hold ``lines`` (sku, quantity) for ``order_id``; the catalog's prices come back.

        Raises :class:`InventoryRefused` (409 short stock, 422 unknown skus...) or
        :class:`InventoryUnavailable` (breaker open, unreachable, too slow, 5xx).
        """
        headers = {}
        if correlation_id:
            headers["X-Request-ID"] = correlation_id
        body = {"lines": [{"sku": line.sku, "quantity": line.quantity} for line in lines]}
        try:
            headers["Authorization"] = self.token.header()
            response = self.http.request("PUT", f"/v1/reservations/{order_id}", json=body,
                                         headers=headers)
        except ServiceTokenError as exc:  # our credentials were refused: a deployment problem
            self._log_unavailable(order_id, str(exc))
            raise InventoryUnavailable("service_token_refused", UNAVAILABLE_RETRY_AFTER_S) from None
        except BreakerOpen as exc:
            raise InventoryUnavailable("breaker_open", exc.retry_after_s) from None
        except Exception as exc:
            if not is_transient(exc):
                raise
            self._log_unavailable(order_id, f"{type(exc).__name__}: {exc}")
            raise InventoryUnavailable(type(exc).__name__, UNAVAILABLE_RETRY_AFTER_S) from None
        if response.status_code in (200, 201):
            return _reservation(response.json())
        problem = _problem(response)
        if response.status_code in (409, 422):
            raise InventoryRefused(response.status_code, problem)
        if response.status_code == 401:  # keys rotated or token revoked: get a new one next time
            self.token.invalidate()
        # 401/403 (our token), 404, 500: inventory cannot serve us; the client may retry later.
        self._log_unavailable(order_id, f"HTTP {response.status_code}: {problem.get('type')}")
        raise InventoryUnavailable(f"HTTP {response.status_code}", UNAVAILABLE_RETRY_AFTER_S)

    def release(self, order_id: uuid.UUID, correlation_id: str | None) -> bool:
        """Give back a HELD reservation of an order that was not committed; False if it failed.

        Best effort: when inventory cannot be reached the reservation's
        time-to-live releases it anyway (``INVENTORY_RESERVATION_TTL_S``).
        """
        headers = {"X-Request-ID": correlation_id} if correlation_id else {}
        try:
            headers["Authorization"] = self.token.header()
            response = self.http.request("DELETE", f"/v1/reservations/{order_id}", headers=headers)
        except Exception as exc:
            self._log_unavailable(order_id, f"release: {type(exc).__name__}: {exc}")
            return False
        if response.status_code not in (200, 204, 404):
            self._log_unavailable(order_id, f"release: HTTP {response.status_code}")
            return False
        return True

    def _log_unavailable(self, order_id, error: str) -> None:
        log.warning("inventory_unavailable", order_id=str(order_id), error=error[:300],
                    breaker=self.breaker.current_state, failures=self.breaker.fail_counter)


def _session() -> requests.Session:
    """A keep-alive session for one internal peer.

    ``trust_env`` off: requests would otherwise re-read proxy and netrc
    settings from the environment on every call (a third of a millisecond of
    CPU per order), and a call between two services must not go through an
    outbound proxy configured for the internet anyway.
    """
    session = requests.Session()
    session.trust_env = False
    return session


def _problem(response: requests.Response) -> dict:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _reservation(body: dict) -> Reservation:
    return Reservation(
        order_id=uuid.UUID(body["order_id"]), status=body["status"], currency=body["currency"],
        total=Decimal(body["total"]),
        lines=[ReservedLine(line["sku"], line["name"], int(line["quantity"]),
                            Decimal(line["unit_price"])) for line in body["lines"]])
