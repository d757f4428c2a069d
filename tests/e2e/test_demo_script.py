"""End to end as a user would: APIs under gunicorn, workers as processes, the demo script over HTTP."""

from __future__ import annotations

import os
import subprocess
import sys

import requests

from shared.devstack import REPO_ROOT
from tests.conftest import free_port
from tests.support.wait import wait_until


def _ready(url: str) -> bool:
    try:
        return requests.get(f"{url}/health/ready", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def test_demo_script_runs_against_the_system(processes, service_env):
    order_port, delivery_port, inventory_port = free_port(), free_port(), free_port()
    order_url = f"http://127.0.0.1:{order_port}"
    delivery_url = f"http://127.0.0.1:{delivery_port}"
    inventory_url = f"http://127.0.0.1:{inventory_port}"
    subprocess.run([sys.executable, "-m", "services.inventory.seed"], check=True, cwd=REPO_ROOT,
                   env={**os.environ, **service_env}, capture_output=True, timeout=60)
    processes.api("inventory", inventory_port, WEB_CONCURRENCY="1", GUNICORN_THREADS="4")
    processes.api("order", order_port, WEB_CONCURRENCY="1", GUNICORN_THREADS="4",
                  INVENTORY_URL=inventory_url)
    processes.api("delivery", delivery_port, WEB_CONCURRENCY="1", GUNICORN_THREADS="4")
    processes.worker("order")
    processes.worker("inventory")
    processes.worker("delivery", DELIVERY_SIMULATOR_ENABLED="true", DELIVERY_SIMULATOR_STEP_S="0.3")
    for url in (order_url, delivery_url, inventory_url):
        wait_until(lambda u=url: _ready(u), timeout=60, message=f"{url} ready")

    result = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "demo.sh")],
        env={**os.environ, "ORDER_URL": order_url, "DELIVERY_URL": delivery_url,
             "INVENTORY_URL": inventory_url, "DEMO_DEADLINE_S": "60"},
        capture_output=True, text=True, timeout=120, cwd=REPO_ROOT,
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
    assert "insufficient-stock" in output and "'sku': 'GRINDER-BURR'" in output
    assert "application/problem+json" in output
    assert "items.0.quantity" in output
