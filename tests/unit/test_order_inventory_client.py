"""The order service's inventory client and how its answers become problems (no network)."""

from __future__ import annotations

import json
import uuid

import pytest
import requests

from services.order.api import PROBLEMS
from services.order.domain import InsufficientStock, Item, ItemsRefused
from services.order.handlers import reserve_stock
from services.order.inventory import (
    InventoryClient,
    InventoryConfig,
    InventoryRefused,
    InventoryUnavailable,
    inventory_config,
)
from services.order.settings import load
from shared.auth import verify_bearer_token
from shared.config import ConfigError
from shared.resilience import BreakerRegistry
from shared.service_token import ServiceTokenError
from tests.support.tokens import TEST_SIGNER, static_settings

TOKENS = static_settings()


class FakeToken:
    """Stands in for shared.service_token.ServiceToken (which asks the auth service)."""

    def __init__(self, refuse: bool = False):
        self.refuse = refuse
        self.invalidated = 0

    def header(self) -> str:
        if self.refuse:
            raise ServiceTokenError("auth service refused client order-service: HTTP 401")
        claims = TEST_SIGNER.claims("order-service", ["inventory:reserve"], 600, client_id="order-service")
        return f"Bearer {TEST_SIGNER.sign(claims)}"

    def invalidate(self) -> None:
        self.invalidated += 1
ORDER_ID = uuid.UUID(int=42)
ITEMS = [Item("A", 2), Item("B", 1)]
RESERVATION = {"order_id": str(ORDER_ID), "status": "HELD", "currency": "EUR", "total": "21.50",
               "lines": [{"sku": "A", "name": "Item A", "quantity": 2, "unit_price": "10.00",
                          "line_total": "20.00"},
                         {"sku": "B", "name": "Item B", "quantity": 1, "unit_price": "1.50",
                          "line_total": "1.50"}]}


def _response(status: int, body: dict | None = None) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = json.dumps(body or {}).encode()  # noqa: SLF001 - a canned answer
    response.headers["Content-Type"] = "application/json"
    return response


class FakeSession:
    """Answers each request with the next item (a Response, or an exception to raise)."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.calls: list[dict] = []

    def request(self, method, url, **kwargs):
        self.calls.append({"method": method, "url": url, **kwargs})
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer


def _client(session: FakeSession, fail_max: int = 5, attempts: int = 3,
            token: FakeToken | None = None) -> InventoryClient:
    breakers = BreakerRegistry({"BREAKER_INVENTORY_FAIL_MAX": str(fail_max),
                                "BREAKER_INVENTORY_RESET_TIMEOUT_S": "30"})
    return InventoryClient(InventoryConfig("http://inventory:8003/", 0.5, attempts), breakers,
                           token or FakeToken(), session=session)


def test_reserve_puts_the_lines_with_the_service_token_and_parses_the_answer():
    session = FakeSession(_response(201, RESERVATION))
    reservation = _client(session).reserve(ORDER_ID, ITEMS, "req-1")
    [call] = session.calls
    assert (call["method"], call["url"]) == ("PUT", f"http://inventory:8003/v1/reservations/{ORDER_ID}")
    assert call["json"] == {"lines": [{"sku": "A", "quantity": 2}, {"sku": "B", "quantity": 1}]}
    assert call["timeout"] == 0.5
    assert call["headers"]["X-Request-ID"] == "req-1"
    principal = verify_bearer_token(call["headers"]["Authorization"].split()[1], TOKENS)
    assert (principal.subject, principal.scopes) == ("order-service", frozenset({"inventory:reserve"}))
    assert (reservation.currency, str(reservation.total)) == ("EUR", "21.50")
    assert [(line.sku, line.quantity, str(line.unit_price)) for line in reservation.lines] == [
        ("A", 2, "10.00"), ("B", 1, "1.50")]


def test_refused_service_credentials_make_inventory_unavailable_without_a_call():
    session = FakeSession()
    with pytest.raises(InventoryUnavailable) as info:
        _client(session, token=FakeToken(refuse=True)).reserve(ORDER_ID, ITEMS, None)
    assert info.value.reason == "service_token_refused"
    assert session.calls == []


def test_a_401_from_inventory_drops_the_service_token():
    token = FakeToken()
    with pytest.raises(InventoryUnavailable):
        _client(FakeSession(_response(401)), token=token).reserve(ORDER_ID, ITEMS, None)
    assert token.invalidated == 1


def test_transient_failures_are_retried_then_succeed():
    session = FakeSession(requests.ConnectionError("refused"), _response(503),
                          _response(200, RESERVATION))
    assert _client(session).reserve(ORDER_ID, ITEMS, None).status == "HELD"
    assert len(session.calls) == 3


@pytest.mark.parametrize("answer", [requests.ConnectionError("refused"), requests.ReadTimeout("slow"),
                                    _response(502), _response(504), _response(429)])
def test_exhausted_transient_failures_are_unavailable(answer):
    session = FakeSession(*([answer] * 2))
    with pytest.raises(InventoryUnavailable) as info:
        _client(session, attempts=2).reserve(ORDER_ID, ITEMS, None)
    assert info.value.retry_after_s >= 1
    assert len(session.calls) == 2


@pytest.mark.parametrize("status", [401, 403, 404, 500])
def test_other_failures_are_unavailable_without_retrying(status):
    session = FakeSession(_response(status, {"type": "/problems/x"}))
    with pytest.raises(InventoryUnavailable):
        _client(session).reserve(ORDER_ID, ITEMS, None)
    assert len(session.calls) == 1  # not transient: no retry


@pytest.mark.parametrize("status", [409, 422])
def test_refusals_carry_inventorys_problem(status):
    problem = {"type": "/problems/insufficient-stock", "detail": "Not enough."}
    session = FakeSession(_response(status, problem))
    with pytest.raises(InventoryRefused) as info:
        _client(session).reserve(ORDER_ID, ITEMS, None)
    assert (info.value.status, info.value.problem) == (status, problem)
    assert len(session.calls) == 1


def test_an_open_breaker_fails_fast_without_calling():
    session = FakeSession(*([requests.ConnectionError("refused")] * 2))
    client = _client(session, fail_max=2, attempts=2)
    with pytest.raises(InventoryUnavailable):
        client.reserve(ORDER_ID, ITEMS, None)
    with pytest.raises(InventoryUnavailable) as info:
        client.reserve(ORDER_ID, ITEMS, None)
    assert info.value.reason == "breaker_open"
    assert 0 < info.value.retry_after_s <= 30
    assert len(session.calls) == 2


# --- the problems the order API answers with ----------------------------------------------------
class FakeInventory:
    def __init__(self, exc: Exception):
        self.exc = exc

    def reserve(self, *_args):
        raise self.exc


def test_short_stock_becomes_409_with_lines_and_item_errors():
    refused = InventoryRefused(409, {"type": "/problems/insufficient-stock", "detail": "Not enough.",
                                     "lines": [{"sku": "B", "requested": 1, "available": 0}]})
    with pytest.raises(InsufficientStock) as info:
        reserve_stock(FakeInventory(refused), ORDER_ID, ITEMS, None)
    problem = PROBLEMS.problem(info.value)
    assert (problem.status, problem.type) == (409, "insufficient-stock")
    assert problem.extensions["lines"] == [{"sku": "B", "requested": 1, "available": 0}]
    assert problem.errors == [{"field": "items.1.quantity", "message": "Only 0 available."}]


def test_unknown_sku_becomes_422_on_the_item():
    refused = InventoryRefused(422, {"type": "/problems/unknown-sku", "title": "Unknown sku",
                                     "detail": "No product has these skus: B.",
                                     "errors": [{"field": "lines.1.sku", "message": "No such product."}]})
    with pytest.raises(ItemsRefused) as info:
        reserve_stock(FakeInventory(refused), ORDER_ID, ITEMS, None)
    problem = PROBLEMS.problem(info.value)
    assert (problem.status, problem.type) == (422, "unknown-sku")
    assert problem.errors == [{"field": "items.1.sku", "message": "No such product."}]


def test_unavailable_becomes_503_with_retry_after_in_whole_seconds():
    with pytest.raises(InventoryUnavailable) as info:
        reserve_stock(FakeInventory(InventoryUnavailable("breaker_open", 2.2)), ORDER_ID, ITEMS, None)
    problem = PROBLEMS.problem(info.value)
    assert (problem.status, problem.type) == (503, "inventory-unavailable")
    assert problem.headers == {"Retry-After": "3"}


def test_inventory_url_is_required_in_production_only():
    base = {"DATABASE_URL": "postgresql://x/y", "JWT_SECRET": "s" * 40}
    with pytest.raises(ConfigError, match="INVENTORY_URL"):
        inventory_config(*load({**base, "APP_ENV": "production"}))
    assert inventory_config(*load(base)).base_url == "http://127.0.0.1:8003"
    configured = inventory_config(*load({
        **base, "INVENTORY_URL": "http://inv:8003", "ORDER_INVENTORY_TIMEOUT_S": "0.25",
        "ORDER_INVENTORY_ATTEMPTS": "2"}))
    assert (configured.base_url, configured.timeout_s, configured.attempts) == (
        "http://inv:8003", 0.25, 2)
    with pytest.raises(ConfigError, match="ORDER_INVENTORY_ATTEMPTS"):
        inventory_config(*load({**base, "ORDER_INVENTORY_ATTEMPTS": "0"}))
