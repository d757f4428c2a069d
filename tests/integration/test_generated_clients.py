"""A client generated from each OpenAPI document parses what the live service answers.

openapi-python-client (pinned in pyproject.toml) generates a client from
each document of docs/openapi/ in a subprocess; the client is imported and
pointed at the service's app served over HTTP on loopback (real Postgres).
Through it, a success parses to the documented model and the problems to
the document's ``Problem`` model: a 422 with its field details, a 404. A
document that declared its errors as anything else (as smorest's
``application/json`` ``Error`` did) would make the client return None here.
"""

from __future__ import annotations

import base64
import importlib
import subprocess
import sys
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from shared.auth import SCOPES
from shared.services import SERVICE_NAMES
from tests.support.auth import make_client
from tests.support.servers import AppServer
from tests.support.tokens import TEST_SIGNER

pytestmark = pytest.mark.slow  # runs the generator as a subprocess

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "openapi"
GENERATOR = Path(sys.executable).with_name("openapi-python-client")
GENERATE_TIMEOUT_S = 120
# The generator's formatting hooks (ruff) are not wanted in a throwaway client.
GENERATOR_CONFIG = "post_hooks: []\n"


@dataclass(frozen=True)
class Calls:
    """For one service: operation modules and calls that get a success, a 422 and a 404.

    Each call takes (package, client) and returns the generated function's
    ``Response``; ``not_found`` is None for a service without any operation
    that looks a resource up by path (its document must then declare no 404).
    """

    success: Callable
    invalid: Callable
    not_found: Callable | None
    credentials: Callable[[object], tuple[str, str]]  # app -> (Authorization prefix, token)


def _api(package, tag: str, operation: str):
    return importlib.import_module(f"{package.__name__}.api.{tag}.{operation}")


def _bearer(_app) -> tuple[str, str]:
    return "Bearer", TEST_SIGNER.sign(TEST_SIGNER.claims("client-test-operator", SCOPES, 3600))


def _first_party_client(app) -> tuple[str, str]:
    creds = make_client(app, "Generated client test", ["orders:read"], ("password",), first_party=True)
    return "Basic", base64.b64encode(f"{creds.client_id}:{creds.client_secret}".encode()).decode()


def _list_call(tag: str, operation: str, **kwargs):
    return lambda pkg, client: _api(pkg, tag, operation).sync_detailed(client=client, **kwargs)


def _register(password: str):
    def call(pkg, client):
        models = importlib.import_module(f"{pkg.__name__}.models")
        body = models.RegisterCustomer(username=f"{uuid.uuid4().hex[:8]}@example.com", password=password)
        return _api(pkg, "customers", "customers_customers_post").sync_detailed(client=client, body=body)

    return call


SCENARIOS: dict[str, Calls] = {
    "order": Calls(
        _list_call("orders", "orders_orders_get"),
        _list_call("orders", "orders_orders_get", limit=0),
        lambda pkg, client: _api(pkg, "orders", "orders_order_by_id_get").sync_detailed(
            uuid.uuid4(), client=client),
        _bearer),
    "delivery": Calls(
        _list_call("shipments", "shipments_shipments_get"),
        _list_call("shipments", "shipments_shipments_get", limit=0),
        lambda pkg, client: _api(pkg, "shipments", "shipments_shipment_by_id_get").sync_detailed(
            uuid.uuid4(), client=client),
        _bearer),
    "inventory": Calls(
        _list_call("products", "products_products_get"),
        _list_call("products", "products_products_get", limit=0),
        lambda pkg, client: _api(pkg, "products", "products_product_by_sku_get").sync_detailed(
            "NO-SUCH-SKU", client=client),
        _bearer),
    "notification": Calls(
        _list_call("webhooks", "webhooks_subscriptions_get"),
        _list_call("webhooks", "webhooks_subscriptions_get", limit=0),
        lambda pkg, client: _api(pkg, "webhooks", "webhooks_subscription_by_id_get").sync_detailed(
            uuid.uuid4(), client=client),
        _bearer),
    "payment": Calls(
        _list_call("admin", "admin_outbox_get"),
        _list_call("admin", "admin_outbox_get", limit=0),
        lambda pkg, client: _api(pkg, "payments", "payments_payment_by_order_get").sync_detailed(
            uuid.uuid4(), client=client),
        _bearer),
    "ops": Calls(
        _list_call("ops", "ops_audit_get"),
        _list_call("ops", "ops_audit_get", limit=0),
        lambda pkg, client: _api(pkg, "ops", "ops_dead_letters_get").sync_detailed(
            "no-such-queue.fifo", client=client),
        _bearer),
    # The auth service looks nothing up by path: registration shows success and 422.
    "auth": Calls(_register("correct horse battery staple"), _register("short"), None,
                  _first_party_client),
}


def generate(service: str, into: Path):
    """Generate the client of ``service``'s document into ``into``; import and return it."""
    config = into / "generator.yaml"
    config.write_text(GENERATOR_CONFIG)
    package = f"{service}_generated_client"
    result = subprocess.run(
        [str(GENERATOR), "generate", "--path", str(DOCS / f"{service}.json"), "--meta", "none",
         "--output-path", str(into / package), "--config", str(config)],
        capture_output=True, text=True, timeout=GENERATE_TIMEOUT_S, cwd=into)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # The generator skips what it cannot model and says so: nothing may be skipped.
    assert "Warning" not in output, output
    sys.path.insert(0, str(into))
    try:
        return importlib.import_module(package)
    finally:
        sys.path.remove(str(into))


@contextmanager
def served(app):
    """``app`` over HTTP on a loopback port, for the time of the block; yields its base URL."""
    server = AppServer(app)
    try:
        yield server.url
    finally:
        server.stop()


def test_every_service_has_a_scenario():
    assert set(SCENARIOS) == set(SERVICE_NAMES), "add the new service's calls to SCENARIOS"


@pytest.mark.parametrize("service", sorted(SCENARIOS))
def test_a_generated_client_parses_success_and_problems(request, tmp_path, service):
    pkg = generate(service, tmp_path)
    problem_model = importlib.import_module(f"{pkg.__name__}.models").Problem
    app = request.getfixturevalue(f"{service}_app")
    calls = SCENARIOS[service]
    prefix, token = calls.credentials(app)
    with served(app) as base_url:
        client = pkg.AuthenticatedClient(base_url=base_url, token=token, prefix=prefix,
                                         raise_on_unexpected_status=True)
        ok = calls.success(pkg, client)
        assert 200 <= ok.status_code < 300, ok.content
        assert ok.parsed is not None and not isinstance(ok.parsed, problem_model), ok.content

        invalid = calls.invalid(pkg, client)
        assert invalid.status_code == 422, invalid.content
        assert isinstance(invalid.parsed, problem_model), invalid.content
        assert invalid.parsed.status == 422 and invalid.parsed.type_.endswith("validation-error")
        assert invalid.parsed.errors and invalid.parsed.errors[0].field and invalid.parsed.errors[0].message

        if calls.not_found is None:
            declared = (DOCS / f"{service}.json").read_text()
            assert '"404"' not in declared, "the document declares a 404: add a not_found call"
            return
        missing = calls.not_found(pkg, client)
        assert missing.status_code == 404, missing.content
        assert isinstance(missing.parsed, problem_model), missing.content
        assert missing.parsed.status == 404 and missing.parsed.type_.endswith("not-found")
        assert missing.parsed.detail
