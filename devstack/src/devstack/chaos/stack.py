"""The system under test: every API and worker as ``make run`` starts them, restarted when killed.

Differences from ``make run``, each for the run's sake: free ports (another
``make run`` on this machine does not collide), output in one log file per
process under the run's directory, the SQS emulator behind a
:class:`~tests.support.tcp_proxy.TcpProxy` (so the run can take the SQS
endpoint away from every service at once), the carrier simulator at speed, a
short payment TTL and reconciliation delay (unpaid orders expire, and a lost
webhook is looked up, within the run), localstripe on a free port (its own
process, so it can be frozen as a "provider down" fault), and
:meth:`ChaosStack.watch` restarting any process that is dead (the orchestrator
a deployment has; the devstack supervisor itself only reports deaths).
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import requests

from devstack import emulators, postgres, readiness
from devstack.paths import DATA_DIR, GUNICORN_CONF, LOOPBACK, REPO_ROOT
from devstack.supervisor import Child, Supervisor

sys.path.insert(0, str(REPO_ROOT))  # tests.support.tcp_proxy, the suite's fault proxy
from tests.support.tcp_proxy import TcpProxy  # noqa: E402

REGION = "us-east-1"
READY_TIMEOUT_S = 90.0
WEBHOOK_PATH = "/v1/payments/stripe-events"   # the payment API's Stripe webhook (as make run)
STOP_BUDGET_S = 8.0
# Products the run orders, with so much stock that no order is refused for the lack of it.
CATALOG = {f"CHAOS-{n}": Decimal(f"{n}.25") for n in range(1, 7)}
INITIAL_ON_HAND = 10_000_000
CHILD_ENV = {
    "LOG_FORMAT": "json",
    "LOG_LEVEL": "INFO",
    "APP_ENV": "development",
    "PYTHONUNBUFFERED": "1",
    "WEB_CONCURRENCY": "1",          # two loaded cores: one gunicorn worker per API
    "GUNICORN_THREADS": "8",
    "CONSUMER_WAIT_TIME_S": "2",
    "WORKER_SHUTDOWN_TIMEOUT_S": "3",
    "GUNICORN_GRACEFUL_TIMEOUT": "3",
    "DELIVERY_SIMULATOR_ENABLED": "true",
    "DELIVERY_SIMULATOR_STEP_S": "1",
    "NOTIFICATION_EMAIL_PROVIDER": "console",
    "NOTIFICATION_WEBHOOK_ALLOWED_HOSTS": "localhost,127.0.0.1,::1",
    "ORDER_RATE_LIMIT_PER_CUSTOMER": "100000000/minute",
    "AUTH_ACCESS_TOKEN_TTL_S": "7200",
    "AUTH_TOKEN_RATE_LIMIT_PER_CLIENT": "100000/minute",
    "AUTH_TOKEN_RATE_LIMIT_PER_IP": "100000/minute",
    # Fail fast and come back soon: the run measures recovery, not patience.
    "BREAKER_RESET_TIMEOUT_S": "2",
    "CONSUMER_RETRY_BASE_S": "0.5",
    "CONSUMER_RETRY_CAP_S": "5",
    "OUTBOX_RETRY_MAX_S": "2",
    # A mail or webhook whose send was cut by a kill or an outage is tried again within seconds
    # (the defaults wait 10 s and 30 s, doubling), so quiescence measures recovery, not backoff.
    "NOTIFICATION_EMAIL_RETRY_BASE_S": "1",
    "NOTIFICATION_EMAIL_RETRY_CAP_S": "5",
    "NOTIFICATION_WEBHOOK_RETRY_BASE_S": "1",
    "NOTIFICATION_WEBHOOK_RETRY_CAP_S": "5",
    # A killed notification worker's leased mails are taken over after 6 s, not the default
    # 120 s that bounded the short run's quiet period.
    "NOTIFICATION_EMAIL_LEASE_S": "6",
    # Unpaid orders expire within the run (the flow leaves a share unpaid on purpose), and
    # the expiry job looks often so "no order PENDING_PAYMENT past the TTL" has a tight bound.
    "ORDER_PAYMENT_TTL_S": "20",
    "ORDER_EXPIRY_INTERVAL_S": "2",
    # A webhook lost while the payment API was killed is looked up at the provider soon.
    "PAYMENT_RECONCILE_INTERVAL_S": "2",
    "PAYMENT_RECONCILE_AFTER_S": "5",
    # A frozen provider is given up on within seconds, so the "provider down" freeze (as long as
    # the checkout made meanwhile takes to be refused) stays short: longer than the payment
    # consumer's redelivery budget, it dead-letters captures and voids (RELIABILITY.md).
    "PAYMENT_STRIPE_TIMEOUT_S": "2",
    "PAYMENT_STRIPE_ATTEMPTS": "2",
}
PAYMENT_TTL_S = float(CHILD_ENV["ORDER_PAYMENT_TTL_S"])
EXPIRY_INTERVAL_S = float(CHILD_ENV["ORDER_EXPIRY_INTERVAL_S"])


@dataclass
class Process:
    """One API or worker: how it is started, and the child running it now."""

    name: str
    args: list[str]
    health_url: str | None = None
    child: Child | None = None
    restarts: int = 0
    unexpected_exits: list[str] = field(default_factory=list)


class ChaosStack:
    """Postgres, the emulator behind its proxy, and every service process."""

    def __init__(self, run_dir: Path, sqs: str = "fauxqs", say: Callable[[str], None] = print):
        self.run_dir = run_dir
        self.sqs = sqs
        self.say = say
        self.supervisor = Supervisor(say=say)
        self.processes: dict[str, Process] = {}
        self.env: dict[str, str] = {}
        self.urls: dict[str, str] = {}
        self.pg_handle = None
        self.database_url = ""
        self.sqs_direct_url = ""
        self.proxy: TcpProxy | None = None
        self.credentials: dict = {}
        self._lock = threading.RLock()
        self._paused: set[str] = set()   # killed on purpose and not to be restarted by watch() yet
        self._stop = threading.Event()
        self._spawns: queue.Queue = queue.Queue()
        self._emulator = None
        self.stripe: object | None = None   # the localstripe process
        self.stripe_url = ""
        self.keep_data = False   # the PostgreSQL data directory after close (the logs are kept)

    @classmethod
    def create(cls, sqs: str, say: Callable[[str], None], keep_data: bool = False) -> ChaosStack:
        run_dir = DATA_DIR / "chaos" / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        (run_dir / "logs").mkdir(parents=True)
        stack = cls(run_dir, sqs, say)
        stack.keep_data = keep_data
        return stack

    # ---------------------------------------------------------------- start
    def start(self) -> None:
        from services.auth.demo import ensure_demo, service_client_env
        from services.inventory.seed import seed
        from shared.bootstrap import bootstrap
        from shared.db import Database
        from shared.services import SERVICES

        self.say(f"chaos: starting embedded PostgreSQL in {self.run_dir / 'pg'}")
        self.pg_handle, self.database_url = postgres.start_embedded_postgres(self.run_dir / "pg")
        port = readiness.free_port(LOOPBACK)
        log_file = self.run_dir / "logs" / f"{self.sqs}.log"
        self.say(f"chaos: starting {self.sqs} on {LOOPBACK}:{port}")
        if self.sqs == "moto":
            self._emulator = emulators.start_moto_server(port, LOOPBACK, log_file=log_file)
        else:
            emulators.install_fauxqs()
            self._emulator = emulators.start_fauxqs(port, host=LOOPBACK, log_file=log_file)
        self.sqs_direct_url = f"http://{LOOPBACK}:{port}"
        self.proxy = TcpProxy.to_url(self.sqs_direct_url)
        stripe_port = readiness.free_port(LOOPBACK)
        self.say(f"chaos: starting localstripe on {LOOPBACK}:{stripe_port}")
        self.stripe = emulators.start_localstripe(stripe_port, LOOPBACK,
                                                  log_file=self.run_dir / "logs" / "localstripe.log")
        self.stripe_url = f"http://{LOOPBACK}:{stripe_port}"
        bootstrap(self.database_url, self.sqs_direct_url, REGION, "")
        inventory = Database(self.database_url, "inventory_svc", 1, 1)
        try:
            seed(inventory, [{"sku": sku, "name": f"Chaos product {sku}", "price": price,
                              "currency": "EUR", "on_hand": INITIAL_ON_HAND, "allow_backorder": False}
                             for sku, price in CATALOG.items()])
        finally:
            inventory.close()
        ports = {s.name: readiness.free_port(LOOPBACK) for s in SERVICES}
        self.urls = {name: f"http://{LOOPBACK}:{p}" for name, p in ports.items()}
        credentials = self.run_dir / "demo-credentials.json"
        ensure_demo(self.database_url, credentials, self.urls["auth"],
                    env={**os.environ, **CHILD_ENV})
        import json

        self.credentials = json.loads(credentials.read_text())
        self.env = {**os.environ, **CHILD_ENV, "DATABASE_URL": self.database_url,
                    "SQS_ENDPOINT_URL": self.proxy.url, "AWS_REGION": REGION, "QUEUE_PREFIX": "",
                    "STRIPE_API_BASE": self.stripe_url,
                    **{f"{name.upper()}_URL": url for name, url in self.urls.items()},
                    **service_client_env(credentials)}
        for svc in SERVICES:
            self.processes[f"{svc.name}-api"] = Process(
                f"{svc.name}-api", [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF),
                                    "--bind", f"{LOOPBACK}:{ports[svc.name]}", *svc.gunicorn_args,
                                    svc.app],
                f"{self.urls[svc.name]}/health/ready")
            if svc.worker is not None:
                self.processes[f"{svc.name}-worker"] = Process(
                    f"{svc.name}-worker", [sys.executable, "-m", svc.worker])
        for process in self.processes.values():
            self._spawn(process)
        for process in self.processes.values():
            if process.health_url:
                self.wait_ready(process, READY_TIMEOUT_S)
        from services.payment.settings import DEV_WEBHOOK_SECRET

        # As make run does: localstripe signs its events and posts them to the payment API.
        emulators.register_localstripe_webhook(
            self.stripe_url, f"{self.urls['payment']}{WEBHOOK_PATH}",
            self.env.get("STRIPE_WEBHOOK_SECRET") or DEV_WEBHOOK_SECRET)
        self.say("chaos: every API is ready")

    def _spawn(self, process: Process) -> None:
        process.child = self.supervisor.start(process.name, process.args, self.env,
                                              log_path=self.run_dir / "logs" / f"{process.name}.log")

    def wait_ready(self, process: Process, timeout: float) -> float:
        """Seconds until ``process``'s /health/ready answered 200 (raises after ``timeout``)."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            try:
                if requests.get(process.health_url, timeout=2).status_code == 200:
                    return time.monotonic() - started
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{process.name} not ready after {timeout:.0f}s; see "
                           f"{self.run_dir / 'logs' / (process.name + '.log')}")

    # ---------------------------------------------------------------- faults
    def kill(self, name: str) -> None:
        """SIGKILL the process and all of its group (a crash: no drain, no cleanup)."""
        with self._lock:
            process = self.processes[name]
            self._paused.add(name)
            if process.child is not None:
                process.child.kill(wait=10)
                self.supervisor.stop(process.child, 0.1)

    def restart(self, name: str) -> float:
        """Start ``name`` again; seconds until it is ready (APIs) or started (workers).

        The watch thread does the spawning: a child's parent-death signal fires when the
        *thread* that forked it ends, so a child started from a short-lived fault thread
        would be sent SIGTERM as soon as that thread is done.
        """
        process = self.processes[name]
        done = threading.Event()
        self._spawns.put((process, done))
        if not done.wait(60):
            raise TimeoutError(f"{name} was not restarted (is watch() running?)")
        return self.wait_ready(process, READY_TIMEOUT_S) if process.health_url else 0.0

    def signal_group(self, name: str, sig: int) -> None:
        child = self.processes[name].child
        if child is not None and child.alive():
            os.killpg(child.pid, sig)

    def signal_provider(self, sig: int) -> None:
        """SIGSTOP/SIGCONT localstripe: the payment provider down (connections hang) and back."""
        if self.stripe is not None and self.stripe.poll() is None:
            os.kill(self.stripe.pid, sig)

    def restart_postgres(self) -> float:
        """Stop PostgreSQL (fast: connections are cut) and start it again; seconds it was away."""
        started = time.monotonic()
        postgres.stop_embedded_postgres(self.pg_handle, timeout=10)
        self.pg_handle, url = postgres.start_embedded_postgres(self.run_dir / "pg")
        if url != self.database_url:
            raise RuntimeError(f"PostgreSQL came back on another URL: {url}")
        return time.monotonic() - started

    # ---------------------------------------------------------------- watch
    def watch(self) -> None:
        """Until :meth:`close`: start what :meth:`restart` asks for, and restart any process that
        died without being killed on purpose. Run it in one long-lived thread."""
        checked = 0.0
        while not self._stop.is_set():
            try:
                process, done = self._spawns.get(timeout=0.1)
            except queue.Empty:
                pass
            else:
                with self._lock:
                    process.restarts += 1
                    self._spawn(process)
                    self._paused.discard(process.name)
                done.set()
            if time.monotonic() - checked < 0.5:
                continue
            checked = time.monotonic()
            with self._lock:
                for process in self.processes.values():
                    if process.name in self._paused or process.child is None or process.child.alive():
                        continue
                    process.unexpected_exits.append(f"exit {process.child.proc.returncode}")
                    self.say(f"chaos: {process.name} exited on its own "
                             f"({process.child.proc.returncode}); restarting it")
                    self.supervisor.stop(process.child, 0.1)
                    process.restarts += 1
                    self._spawn(process)

    def close(self) -> None:
        self._stop.set()
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            for process in self.processes.values():  # a frozen process ignores SIGTERM
                if process.child is not None and process.child.alive():
                    os.killpg(process.child.pid, signal.SIGCONT)
            self.supervisor.stop_all(STOP_BUDGET_S, kill_wait_s=2.0)
            if self.proxy is not None:
                self.proxy.close()
            if self.stripe is not None:
                from devstack.supervisor import stop_process

                self.signal_provider(signal.SIGCONT)
                stop_process(self.stripe, 3.0, kill_wait=1.0)
            if self._emulator is not None:
                from devstack.supervisor import stop_process

                stop_process(self._emulator, 3.0, kill_wait=1.0)
            if self.pg_handle is not None:
                postgres.stop_embedded_postgres(self.pg_handle, timeout=10)
            if not self.keep_data:
                shutil.rmtree(self.run_dir / "pg", ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, previous)
