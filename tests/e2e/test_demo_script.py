"""End to end as a user would: APIs under gunicorn, workers as processes, the demo script over HTTP."""

from __future__ import annotations

import os
import subprocess

import requests

from shared.devstack import REPO_ROOT
from tests.conftest import free_port
from tests.support.wait import wait_until


def _ready(url: str) -> bool:
    try:
        return requests.get(f"{url}/health/ready", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def test_demo_script_runs_against_the_system(processes):
    order_port, delivery_port = free_port(), free_port()
    order_url = f"http://127.0.0.1:{order_port}"
    delivery_url = f"http://127.0.0.1:{delivery_port}"
    processes.api("order", order_port, WEB_CONCURRENCY="1", GUNICORN_THREADS="4")
    processes.api("delivery", delivery_port, WEB_CONCURRENCY="1", GUNICORN_THREADS="4")
    processes.worker("order")
    processes.worker("delivery", DELIVERY_SIMULATOR_ENABLED="true", DELIVERY_SIMULATOR_STEP_S="0.3")
    for url in (order_url, delivery_url):
        wait_until(lambda u=url: _ready(u), timeout=60, message=f"{url} ready")

    result = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "demo.sh")],
        env={**os.environ, "ORDER_URL": order_url, "DELIVERY_URL": delivery_url,
             "DEMO_DEADLINE_S": "60"},
        capture_output=True, text=True, timeout=120, cwd=REPO_ROOT,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Idempotent-Replayed: true" in output
    assert "same order id" in output
    for step in ("delivery.shipment_created", "delivery.shipped", "delivery.delivered"):
        assert step in output, output
    assert "status CANCELLED (changed my mind)" in output
    assert "application/problem+json" in output
    assert "items.0.quantity" in output
