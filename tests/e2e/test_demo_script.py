"""End to end as a user would: APIs under gunicorn, workers as processes, the demo script over HTTP.

Tokens come from the real auth service (demo identities as `make run` makes
them), every API verifies them against its JWKS; afterwards every process log
is scanned for secrets: client secrets, passwords, refresh tokens, access tokens.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import requests

from devstack.paths import REPO_ROOT
from services.auth.demo import DEMO_CUSTOMER, STOREFRONT, ensure_demo, service_client_env
from tests.conftest import free_port
from tests.support.wait import wait_until

# Every test here starts service processes: deselect with -m "not slow".
pytestmark = pytest.mark.slow


def _ready(url: str) -> bool:
    try:
        return requests.get(f"{url}/health/ready", timeout=2).status_code == 200
    except requests.RequestException:
        return False


# A JWS compact serialization: header.payload.signature, the first two base64url JSON objects.
JWT_PATTERN = re.compile(r"eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{20,}")


# Seven processes and the demo's every step (pay, deliver, capture, refund, cancel) on a shared
# two-core machine: well past the suite's default 180 s at times.
@pytest.mark.timeout(420)
def test_demo_script_runs_against_the_system(processes, service_env, tmp_path):
    order_port, delivery_port, inventory_port = free_port(), free_port(), free_port()
    auth_port, payment_port = free_port(), free_port()
    payment_url = f"http://127.0.0.1:{payment_port}"
    auth_url = f"http://127.0.0.1:{auth_port}"
    credentials = tmp_path / "demo-credentials.json"
    ensure_demo(service_env["DATABASE_URL"], credentials, auth_url,
                env={**os.environ, **service_env})
    # From here on the system runs on the real auth service: its JWKS, its tokens.
    processes.base_env.update({"AUTH_URL": auth_url,
                               "AUTH_JWKS_URL": f"{auth_url}/.well-known/jwks.json",
                               **service_client_env(credentials)})
    processes.api("auth", auth_port, WEB_CONCURRENCY="1", GUNICORN_THREADS="4")
    order_url = f"http://127.0.0.1:{order_port}"
    delivery_url = f"http://127.0.0.1:{delivery_port}"
    inventory_url = f"http://127.0.0.1:{inventory_port}"
    subprocess.run([sys.executable, "-m", "services.inventory.seed"], check=True, cwd=REPO_ROOT,
                   env={**os.environ, **service_env}, capture_output=True, timeout=60)
    processes.api("inventory", inventory_port, WEB_CONCURRENCY="1", GUNICORN_THREADS="4")
    processes.api("payment", payment_port, WEB_CONCURRENCY="1", GUNICORN_THREADS="4")
    processes.api("order", order_port, WEB_CONCURRENCY="1", GUNICORN_THREADS="4",
                  INVENTORY_URL=inventory_url, PAYMENT_URL=payment_url, DELIVERY_URL=delivery_url)
    processes.api("delivery", delivery_port, WEB_CONCURRENCY="1", GUNICORN_THREADS="4")
    processes.worker("order")
    processes.worker("inventory")
    processes.worker("payment")
    # Slow enough that the demo's cancel (a few HTTP calls after placing) lands before the
    # carrier picks the order up, even on a loaded machine; fast enough to deliver in seconds.
    processes.worker("delivery", DELIVERY_SIMULATOR_ENABLED="true", DELIVERY_SIMULATOR_STEP_S="1.5")
    for url in (auth_url, order_url, delivery_url, inventory_url, payment_url):
        wait_until(lambda u=url: _ready(u), timeout=60, message=f"{url} ready")

    result = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "demo.sh")],
        env={**os.environ, "ORDER_URL": order_url, "DELIVERY_URL": delivery_url,
             "INVENTORY_URL": inventory_url, "AUTH_URL": auth_url, "PAYMENT_URL": payment_url,
             "DEMO_CREDENTIALS": str(credentials), "DEMO_DEADLINE_S": "60"},
        capture_output=True, text=True, timeout=240, cwd=REPO_ROOT,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Idempotent-Replayed: true" in output
    assert "same order id" in output
    for step in ("delivery.shipment_created", "delivery.shipped", "delivery.delivered"):
        assert step in output, output
    assert "status CANCELLED (changed my mind)" in output
    assert "(catalog prices)" in output and "total 38.00 EUR" in output
    assert "stock restored" in output
    assert "payment AUTHORIZED" in output and "payment CAPTURED" in output
    assert "restocked: MUG-STONEWARE" in output and "payment VOIDED" in output
    assert "paying it now gets HTTP 409" in output
    assert "insufficient-stock" in output and "'sku': 'GRINDER-BURR'" in output
    assert "application/problem+json" in output
    assert "items.0.quantity" in output
    assert "Log in as the demo customer" in output
    assert "the logged-out session's refresh token now gets HTTP 400" in output

    seen = _more_auth_traffic(auth_url, order_url, credentials)
    _assert_no_secret_in_logs(processes, credentials, seen)


def _more_auth_traffic(auth_url: str, order_url: str, credentials) -> list[str]:
    """Logins (one failed), a refresh, a revocation, a call with a token: what a log could leak."""
    saved = json.loads(credentials.read_text())
    storefront = (STOREFRONT, saved["clients"][STOREFRONT])
    password = saved["users"][DEMO_CUSTOMER]
    wrong = "Wrong-Password-4-Log-Scan"
    assert requests.post(f"{auth_url}/oauth/token", auth=storefront, timeout=10, data={
        "grant_type": "password", "username": DEMO_CUSTOMER, "password": wrong}).status_code == 400
    login = requests.post(f"{auth_url}/oauth/token", auth=storefront, timeout=10, data={
        "grant_type": "password", "username": DEMO_CUSTOMER, "password": password}).json()
    refreshed = requests.post(f"{auth_url}/oauth/token", auth=storefront, timeout=10, data={
        "grant_type": "refresh_token", "refresh_token": login["refresh_token"]}).json()
    assert requests.get(f"{order_url}/v1/orders", timeout=10, headers={
        "Authorization": f"Bearer {refreshed['access_token']}"}).status_code == 200
    assert requests.post(f"{auth_url}/oauth/revoke", auth=storefront, timeout=10,
                         data={"token": refreshed["refresh_token"]}).status_code == 200
    return [wrong, login["access_token"], login["refresh_token"], refreshed["access_token"],
            refreshed["refresh_token"]]


def _assert_no_secret_in_logs(processes, credentials, seen: list[str]) -> None:
    saved = json.loads(credentials.read_text())
    secrets = [*saved["clients"].values(), *saved["users"].values(), *seen]
    logs = {p.log_path.name: p.log_text() for p in processes.started}
    assert sum(len(text) for text in logs.values()) > 1000, "the processes logged (almost) nothing"
    for name, text in logs.items():
        for secret in secrets:
            assert secret not in text, f"a secret ({secret[:4]}…) is in {name}"
        tokens = JWT_PATTERN.findall(text)
        assert not tokens, f"an access token is in {name}: {tokens[0][:20]}…"
