"""`make run`: the whole platform on one machine with nothing but Python.

Starts an embedded PostgreSQL under ``.data/postgres`` (unless DATABASE_URL is
set) and moto's SQS server on 127.0.0.1:9324 (unless SQS_ENDPOINT_URL is
set), creates the queues and schemas, then runs every service's API
(gunicorn) and worker, prefixing their output with the process name. Prints
``ready`` once every ``/health/ready`` answers 200.

Ctrl-C or SIGTERM stops everything within 10 seconds and exits 0; a child
dying on its own stops everything and exits 1. Data in ``.data/`` is kept for
the next run.
"""

from __future__ import annotations

import signal
import sys

# Ctrl-C while the imports below run: nothing started yet, so just leave quietly.
for _sig in (signal.SIGINT, signal.SIGTERM):
    signal.signal(_sig, lambda *_: sys.exit(0))

import logging  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as a file: make `shared` importable
    sys.path.insert(0, str(REPO_ROOT))

import click  # noqa: E402
import requests  # noqa: E402

from shared import devstack  # noqa: E402
from shared.config import SERVICE_PORTS, SQS_EMULATOR_PORT  # noqa: E402

SERVICES = ("auth", "order", "delivery", "inventory", "notification")
HOST = devstack.LOOPBACK
READY_TIMEOUT_S = 60.0
READY_POLL_S = 0.5
# Demo client secrets and account passwords made by the auth service (mode 0600).
DEMO_CREDENTIALS = "demo-credentials.json"
# Shutdown budget (the whole of it must stay under 10 s): services drain
# first (workers still need SQS and Postgres for that), then the emulator,
# then Postgres.
# Worst case: 6.0 + 0.5 + 0.3 + 0.8 + 0.3 + 1.5 (pg_ctl -t 1, plus slack) = 9.4 s.
SERVICES_STOP_S = 6.0
KILL_WAIT_S = 0.5
PUMP_JOIN_S = 0.3
EMULATOR_STOP_S = 0.8
EMULATOR_KILL_WAIT_S = 0.3
PG_STOP_S = 1.0
# Children drain inside the supervisor's budget: a long poll returns within
# CONSUMER_WAIT_TIME_S, a worker gives in-flight handlers
# WORKER_SHUTDOWN_TIMEOUT_S, gunicorn gives requests GUNICORN_GRACEFUL_TIMEOUT.
CHILD_DEFAULTS = {
    "LOG_FORMAT": "console",
    "CONSUMER_WAIT_TIME_S": "5",
    "WORKER_SHUTDOWN_TIMEOUT_S": "5",
    "GUNICORN_GRACEFUL_TIMEOUT": "5",
    "DELIVERY_SIMULATOR_ENABLED": "true",
    "DELIVERY_SIMULATOR_STEP_S": "2",
    # Mails are printed, not sent; webhooks may go to a receiver on this machine.
    "NOTIFICATION_EMAIL_PROVIDER": "console",
    "NOTIFICATION_WEBHOOK_ALLOWED_HOSTS": "localhost,127.0.0.1,::1",
}
# The notification API serves long-lived SSE streams: gevent greenlets, not threads.
API_ARGS = {"notification": ("--worker-class", "gevent", "--worker-connections", "2000")}
COLORS = ("36", "33", "35", "32", "34", "31")


class ShutdownRequested(BaseException):
    """Ctrl-C or SIGTERM arrived: stop everything and exit 0."""


class ChildDied(Exception):
    """A managed process exited while it should be running."""


@dataclass
class Child:
    """A managed process and the thread copying its output."""

    name: str
    proc: subprocess.Popen
    pump: threading.Thread | None = None


@dataclass
class Supervisor:
    """Starts children, prefixes their output, and stops them all in order."""

    color: bool
    children: list[Child] = field(default_factory=list)
    _out_lock: threading.Lock = field(default_factory=threading.Lock)
    _width: int = 16

    def say(self, text: str) -> None:
        """Print a supervisor line (never interleaved with a child's line)."""
        with self._out_lock:
            sys.stdout.write(text + "\n")
            sys.stdout.flush()

    def start(self, name: str, args: list[str], env: dict[str, str]) -> Child:
        """Start ``args`` as ``name`` with its output prefixed on our stdout."""
        proc = devstack.spawn(args, env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT)
        color = COLORS[len(self.children) % len(COLORS)]
        prefix = f"{name:<{self._width}}| "
        if self.color:
            prefix = f"\x1b[{color}m{prefix}\x1b[0m"
        pump = threading.Thread(target=self._pump, args=(proc, prefix), name=f"out-{name}",
                                daemon=True)
        pump.start()
        child = Child(name, proc, pump)
        self.children.append(child)
        return child

    def _pump(self, proc: subprocess.Popen, prefix: str) -> None:
        assert proc.stdout is not None
        for raw in iter(proc.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            with self._out_lock:
                sys.stdout.write(prefix + line + "\n")
                sys.stdout.flush()
        proc.stdout.close()

    def check_alive(self) -> None:
        """Raise ChildDied for the first child that has exited."""
        for child in self.children:
            code = child.proc.poll()
            if code is not None:
                raise ChildDied(f"{child.name} exited unexpectedly with code {code}")

    def stop_all(self, budget_s: float) -> None:
        """SIGTERM every child's group, wait up to ``budget_s``, SIGKILL stragglers."""
        for child in self.children:
            if child.proc.poll() is None:
                _signal_group(child.proc, signal.SIGTERM)
        deadline = time.monotonic() + budget_s
        for child in self.children:
            try:
                child.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        stragglers = [c for c in self.children if c.proc.poll() is None]
        deadline = time.monotonic() + KILL_WAIT_S
        for child in stragglers:
            self.say(f"run: {child.name} did not stop in {budget_s:.1f}s; killing it")
            _signal_group(child.proc, signal.SIGKILL)
        for child in stragglers:
            try:
                child.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say(f"run: {child.name} (pid {child.proc.pid}) survived SIGKILL")
        # Let the pumps print the last lines; a grandchild may still hold a
        # pipe open, so bound the wait for all of them together.
        pump_deadline = time.monotonic() + PUMP_JOIN_S
        for child in self.children:
            if child.pump is not None:
                child.pump.join(max(0.0, pump_deadline - time.monotonic()))


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def child_env(database_url: str, sqs_endpoint_url: str, region: str, queue_prefix: str,
              services: tuple[str, ...]) -> dict[str, str]:
    """The environment every service process gets."""
    env = dict(os.environ)
    for name, value in CHILD_DEFAULTS.items():
        env.setdefault(name, value)
    env.update({
        "DATABASE_URL": database_url,
        "SQS_ENDPOINT_URL": sqs_endpoint_url,
        "AWS_REGION": region,
        "QUEUE_PREFIX": queue_prefix,
        "APP_ENV": "development",
        "PYTHONUNBUFFERED": "1",
    })
    for service in services:
        env[f"{service.upper()}_URL"] = f"http://{HOST}:{SERVICE_PORTS[service]}"
    return env


def wait_until_ready(supervisor: Supervisor, services: tuple[str, ...], timeout: float) -> None:
    """Poll every API's /health/ready until all answer 200; raise naming the failing ones."""
    pending = {s: f"http://{HOST}:{SERVICE_PORTS[s]}/health/ready" for s in services}
    last: dict[str, str] = {s: "no answer" for s in services}
    deadline = time.monotonic() + timeout
    while pending:
        supervisor.check_alive()
        for service, url in list(pending.items()):
            try:
                response = requests.get(url, timeout=2)
                if response.status_code == 200:
                    del pending[service]
                    supervisor.say(f"run: {service} is ready")
                    continue
                last[service] = f"HTTP {response.status_code}: {response.text.strip()[:300]}"
            except requests.RequestException as exc:
                last[service] = type(exc).__name__
        if not pending:
            return
        if time.monotonic() >= deadline:
            failing = "; ".join(f"{s} ({pending[s]}): {last[s]}" for s in pending)
            raise TimeoutError(f"not ready after {timeout:.0f}s: {failing}")
        time.sleep(READY_POLL_S)


_stopping = threading.Event()


def _install_signal_handlers() -> None:
    def handler(signum, _frame):
        # The first signal unwinds into the shutdown path; later ones (a
        # second Ctrl-C while stopping) must not interrupt the cleanup.
        if _stopping.is_set():
            return
        _stopping.set()
        raise ShutdownRequested(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def _check_ports_free(services: tuple[str, ...]) -> None:
    busy = [f"{s} ({HOST}:{SERVICE_PORTS[s]})" for s in services
            if devstack.port_is_open(HOST, SERVICE_PORTS[s])]
    if busy:
        raise RuntimeError(f"ports already in use: {', '.join(busy)} "
                           f"(another `make run` still running?)")


@click.command()
@click.option("--services", "service_list", default=",".join(SERVICES), show_default=True,
              help="Comma-separated services to run.")
@click.option("--sqs", "sqs_emulator", type=click.Choice(["moto", "fauxqs"]), default="moto",
              show_default=True, help="SQS emulator to start when SQS_ENDPOINT_URL is unset.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              default=devstack.DATA_DIR, show_default=True,
              help="Where the embedded Postgres and logs live.")
def main(service_list: str, sqs_emulator: str, data_dir: Path) -> None:
    """Run every service and worker locally; Ctrl-C stops everything."""
    services = tuple(s.strip() for s in service_list.split(",") if s.strip())
    unknown = [s for s in services if s not in SERVICE_PORTS]
    if unknown:
        raise click.BadParameter(f"unknown service(s): {', '.join(unknown)}",
                                 param_hint="--services")
    logging.basicConfig(level=logging.INFO, format="run: %(message)s")
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    sys.exit(run(services, sqs_emulator, data_dir.resolve()))


def run(services: tuple[str, ...], sqs_emulator: str, data_dir: Path) -> int:
    """Start the stack, supervise it, stop it; return the exit code."""
    supervisor = Supervisor(color=sys.stdout.isatty() and not os.environ.get("NO_COLOR"))
    say = supervisor.say
    pg_handle = None
    pg_dir: Path | None = None  # set once we start (not merely use) an embedded server
    emulator = None
    exit_code = 0
    _install_signal_handlers()
    try:
        _check_ports_free(services)
        data_dir.mkdir(parents=True, exist_ok=True)
        database_url = os.environ.get("DATABASE_URL") or None
        if database_url is None:
            pg_dir = data_dir / "postgres"
            say(f"run: starting embedded PostgreSQL in {pg_dir}")
            pg_handle, database_url = devstack.start_embedded_postgres(pg_dir)
        else:
            say("run: using DATABASE_URL from the environment")
        sqs_endpoint_url = os.environ.get("SQS_ENDPOINT_URL") or None
        if sqs_endpoint_url is None:
            log_file = data_dir / f"{sqs_emulator}.log"
            say(f"run: starting {sqs_emulator} SQS emulator on {HOST}:{SQS_EMULATOR_PORT} "
                f"(log: {log_file})")
            if sqs_emulator == "moto":
                emulator = devstack.start_moto_server(SQS_EMULATOR_PORT, HOST, log_file=log_file)
            else:
                devstack.install_fauxqs()
                emulator = devstack.start_fauxqs(SQS_EMULATOR_PORT, log_file=log_file)
            sqs_endpoint_url = f"http://{HOST}:{SQS_EMULATOR_PORT}"
        else:
            say(f"run: using SQS_ENDPOINT_URL={sqs_endpoint_url}")
        region = os.environ.get("AWS_REGION") or "us-east-1"
        queue_prefix = os.environ.get("QUEUE_PREFIX", "")

        say("run: creating queues and migrating schemas")
        devstack.bootstrap(database_url, sqs_endpoint_url, region, queue_prefix, services)
        if "inventory" in services:
            from services.inventory.seed import seed_database

            created = seed_database(database_url)
            say(f"run: demo catalog: {', '.join(created) if created else 'already there'}")
        if "auth" in services:
            from services.auth.demo import ensure_demo

            changed = ensure_demo(database_url, data_dir / DEMO_CREDENTIALS,
                                  f"http://{HOST}:{SERVICE_PORTS['auth']}")
            say(f"run: demo clients and accounts: {', '.join(changed) if changed else 'already there'} "
                f"(credentials in {data_dir / DEMO_CREDENTIALS})")

        env = child_env(database_url, sqs_endpoint_url, region, queue_prefix, services)
        if "auth" in services:  # the order service reserves stock with its own client's token
            from services.auth.demo import service_client_env

            env.update(service_client_env(data_dir / DEMO_CREDENTIALS))
        for service in services:
            port = SERVICE_PORTS[service]
            supervisor.start(f"{service}-api", [
                sys.executable, "-m", "gunicorn", "-c", str(REPO_ROOT / "infra/gunicorn.conf.py"),
                "--bind", f"{HOST}:{port}", *API_ARGS.get(service, ()),
                f"services.{service}.app:create_app()",
            ], env)
            if (REPO_ROOT / "services" / service / "worker.py").exists():  # auth has no worker
                supervisor.start(f"{service}-worker",
                                 [sys.executable, "-m", f"services.{service}.worker"], env)

        for service in services:
            base = f"http://{HOST}:{SERVICE_PORTS[service]}"
            say(f"run: {service:<10} API {base}   docs {base}/docs   "
                f"OpenAPI {base}/openapi.json")
        wait_until_ready(supervisor, services, READY_TIMEOUT_S)
        say("ready")
        say("run: try the whole flow with scripts/demo.sh; get an access token with "
            "scripts/token. Ctrl-C stops everything.")
        if "auth" in services:
            say(f"run: tokens come from the auth service; the demo client secrets and passwords are in "
                f"{data_dir / DEMO_CREDENTIALS}, e.g.\n"
                f"  curl -s -u carrier-dhl:$SECRET -d grant_type=client_credentials "
                f"http://{HOST}:{SERVICE_PORTS['auth']}/oauth/token\n"
                f"  curl -s -u storefront:$SECRET -d grant_type=password -d username=demo@example.com "
                f"-d password=$PASSWORD http://{HOST}:{SERVICE_PORTS['auth']}/oauth/token")
        while True:
            supervisor.check_alive()
            time.sleep(0.2)
    except ShutdownRequested as stop:
        say(f"run: {stop.args[0] if stop.args else 'signal'} received, stopping")
    except ChildDied as exc:
        say(f"run: {exc}; stopping everything")
        exit_code = 1
    except Exception as exc:  # startup failure: report it plainly, then clean up
        say(f"run: {type(exc).__name__}: {exc}")
        exit_code = 1
    finally:
        _stopping.set()  # from here on signals are ignored: cleanup must finish
        _shutdown(supervisor, emulator, pg_handle, pg_dir)
    say("run: stopped")
    return exit_code


def _shutdown(supervisor: Supervisor, emulator: subprocess.Popen | None, pg_handle,
              pg_dir: Path | None) -> None:
    started = time.monotonic()
    try:
        supervisor.stop_all(SERVICES_STOP_S)
    finally:
        if emulator is not None:
            devstack.stop_process(emulator, EMULATOR_STOP_S, kill_wait=EMULATOR_KILL_WAIT_S)
        if pg_handle is not None:
            devstack.stop_embedded_postgres(pg_handle, timeout=PG_STOP_S)
        elif pg_dir is not None:  # interrupted while starting: it may be up anyway
            devstack.stop_embedded_postgres_at(pg_dir, timeout=PG_STOP_S)
    supervisor.say(f"run: shut down in {time.monotonic() - started:.1f}s")


if __name__ == "__main__":
    main()
