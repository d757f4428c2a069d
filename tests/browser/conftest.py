"""Browser tests of the web pages: Playwright for Python driving the machine's Chromium
against the whole system started as processes (as `make run` runs it: every API under
gunicorn, every worker, the real auth service with the demo identities, the payment
service on the session's localstripe). Orders are paid as a storefront pays them
(:meth:`Stack.pay`): an order ships only once its payment is authorized.

Skipped, with the reason, when Playwright or a Chromium cannot be had (`make test`
installs Debian's chromium where it can). Screenshots go to .data/test-artifacts/browser/;
with SAVE_DOC_SCREENSHOTS=1 also to docs/screenshots/ (the README shows those).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from devstack.paths import DATA_DIR, REPO_ROOT
from services.auth.demo import (
    CARRIER,
    DEMO_CUSTOMER,
    DEMO_OPERATOR,
    STOREFRONT,
    ensure_demo,
    service_client_env,
    web_client_env,
)
from tests.conftest import free_port
from tests.support.payments import pay
from tests.support.tcp_proxy import TcpProxy
from tests.support.wait import wait_until

ARTIFACTS = DATA_DIR / "test-artifacts" / "browser"
DOC_SCREENSHOTS = REPO_ROOT / "docs" / "screenshots"
CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
VIEWPORT = {"width": 1280, "height": 900}


def chromium_path() -> str | None:
    """CHROMIUM_PATH, or the first Chromium on PATH."""
    configured = os.environ.get("CHROMIUM_PATH")
    if configured:
        return configured if Path(configured).exists() else None
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium (skipped with the reason when there is none).

    Module-scoped on purpose: while Playwright's sync API is open it leaves its event loop
    registered as running in the main thread, so every later ``asyncio.run`` in the session
    (the consumer and worker tests) would fail with "cannot be called from a running event
    loop". Closing it at the end of each browser module keeps the rest of the suite clean."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright for Python is not installed (pip install -e '.[dev]')")
    executable = chromium_path()
    if executable is None:
        pytest.skip("no Chromium found (apt-get install chromium, or set CHROMIUM_PATH)")
    with sync_playwright() as playwright:
        try:
            instance = playwright.chromium.launch(executable_path=executable, headless=True)
        except Exception as exc:  # a Chromium that cannot start here is a skip, not a failure
            pytest.skip(f"Chromium at {executable} does not start: {str(exc)[:200]}")
        yield instance
        instance.close()


def screenshot(page, name: str) -> Path:
    """Save a full-page screenshot as a test artifact (and for the docs if asked)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("SAVE_DOC_SCREENSHOTS") == "1":
        DOC_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOC_SCREENSHOTS / path.name)
    return path


@dataclass
class Stack:
    """The running system: its URLs, the demo credentials, the notification proxy."""

    urls: dict[str, str]
    credentials: dict
    notification_proxy: TcpProxy
    processes: object
    tokens: dict[str, str] = field(default_factory=dict)

    def password(self, user: str) -> str:
        return self.credentials["users"][user]

    def token(self, who: str) -> str:
        """An access token of the demo customer (``customer``) or carrier (``carrier``)."""
        if who not in self.tokens:
            clients = self.credentials["clients"]
            if who == "carrier":
                form, client = {"grant_type": "client_credentials"}, CARRIER
            else:
                form, client = {"grant_type": "password", "username": DEMO_CUSTOMER,
                                "password": self.password(DEMO_CUSTOMER)}, STOREFRONT
            answer = requests.post(f"{self.urls['auth']}/oauth/token", data=form, timeout=10,
                                   auth=(client, clients[client]))
            answer.raise_for_status()
            self.tokens[who] = answer.json()["access_token"]
        return self.tokens[who]

    def pay(self, order_id: str) -> None:
        """Confirm the order's payment as the demo customer does from the storefront
        (a Stripe test PaymentMethod): payment.authorized then moves the order on."""
        answer = pay(self.urls["payment"], order_id, self.token("customer"))
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "AUTHORIZED", answer.text

    def call(self, who: str, method: str, service: str, path: str, **kwargs) -> requests.Response:
        return requests.request(method, f"{self.urls[service]}{path}", timeout=10, **kwargs,
                                headers={"Authorization": f"Bearer {self.token(who)}"})


@pytest.fixture
def start_stack(processes, service_env, tmp_path):
    """``start_stack(delivery_worker=True, simulator=False)``: the whole system, ready."""
    proxies: list[TcpProxy] = []

    def start(delivery_worker: bool = True, simulator: bool = False) -> Stack:
        ports = {name: free_port() for name in ("auth", "order", "delivery", "inventory",
                                                 "notification", "payment", "ops")}
        urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        path = tmp_path / "demo-credentials.json"
        ensure_demo(service_env["DATABASE_URL"], path, urls["auth"],
                    env={**os.environ, **service_env})
        # PAYMENT_URL (below) is this stack's payment API, not the session's in-process one:
        # it must trust this stack's auth service (the order service's and customer's tokens).
        # The browser reaches the notification API through a proxy the tests can cut.
        proxy = TcpProxy("127.0.0.1", ports["notification"])
        proxies.append(proxy)
        processes.base_env.update({
            "AUTH_URL": urls["auth"], "AUTH_JWKS_URL": f"{urls['auth']}/.well-known/jwks.json",
            **{f"{name.upper()}_URL": url for name, url in urls.items() if name != "auth"},
            **service_client_env(path), **web_client_env(path),
            "CORS_ALLOWED_ORIGINS": urls["ops"],
            "OPS_WEB_NOTIFICATION_URL": proxy.url,
            # Short enough that a cut stream is noticed and resumed quickly.
            "NOTIFICATION_SSE_HEARTBEAT_S": "2",
            "DELIVERY_SIMULATOR_ENABLED": "true" if simulator else "false",
            "DELIVERY_SIMULATOR_STEP_S": "1",
        })
        single = {"WEB_CONCURRENCY": "1", "GUNICORN_THREADS": "4"}
        # Every API and worker (seven and five) fetches the auth service's JWKS at its first
        # request, all at once when the page signs in: one auth worker with 4 threads timed
        # those fetches out on a loaded machine (then tokens were refused), so it gets more.
        processes.api("auth", ports["auth"], WEB_CONCURRENCY="1", GUNICORN_THREADS="16")
        for name in ("inventory", "payment", "order", "delivery", "notification", "ops"):
            processes.api(name, ports[name], **single)
        # The payment worker relays payment.authorized (its outbox) to the order worker.
        for name in ("order", "inventory", "payment", "notification"):
            processes.worker(name)
        if delivery_worker:
            processes.worker("delivery")
        for url in urls.values():
            wait_until(lambda u=url: _ready(u), timeout=90, message=f"{url} ready")
        return Stack(urls, json.loads(path.read_text()), proxy, processes)

    yield start
    for proxy in proxies:
        proxy.close()


def _ready(url: str) -> bool:
    try:
        return requests.get(f"{url}/health/ready", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def sign_in(page, username: str, password: str) -> None:
    page.get_by_label("Password").fill(password)
    page.locator("#username").fill(username)
    page.get_by_role("button", name="Sign in").click()


__all__ = ["DEMO_CUSTOMER", "DEMO_OPERATOR", "screenshot", "sign_in"]
