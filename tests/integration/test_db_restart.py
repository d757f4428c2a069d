"""Pooled connections across a PostgreSQL restart, against the real server (RELIABILITY.md, issue 10).

What a restart does to a pool is what ``pg_terminate_backend`` does to its
sessions: the server ends each one (a FATAL notice, then end of stream) while
the client still holds it idle. Every pooled connection that predated the
restart used to fail the first request that borrowed it (500). Now no request
meets one, and a database that is really unreachable is a 503 with
``Retry-After``, never a 500.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import psycopg2
import pytest

import shared.db
from shared.db import Database, connection_lost
from tests.support.asserts import assert_problem
from tests.support.tcp_proxy import TcpProxy

POOL_SIZE = 4
SERVICE = ("inventory:reserve",)
# How long pg_terminate_backend waits for the session to be gone (PostgreSQL 14+).
TERMINATE_WAIT_MS = 5000


# --- helpers ---------------------------------------------------------------------------
def hold_idle(db: Database, n: int) -> list[int]:
    """Borrow ``n`` connections at once and give them back: the pool then holds ``n`` idle ones."""
    with contextlib.ExitStack() as borrowed:
        conns = [borrowed.enter_context(db.connection()) for _ in range(n)]
        return [conn.info.backend_pid for conn in conns]


def terminate(database_url: str, pids: list[int]) -> None:
    """End those server sessions, as a restart ends all of them, and wait until they are gone."""
    admin = psycopg2.connect(database_url)
    try:
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute("SELECT bool_and(pg_terminate_backend(pid, %s)) FROM unnest(%s::int[]) pid",
                        (TERMINATE_WAIT_MS, pids))
            assert cur.fetchone()[0], "a session outlived pg_terminate_backend"
    finally:
        admin.close()


def last_query(database_url: str, pid: int) -> str:
    """The last statement the server saw from session ``pid``."""
    admin = psycopg2.connect(database_url)
    try:
        with admin.cursor() as cur:
            cur.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", (pid,))
            return cur.fetchone()[0]
    finally:
        admin.close()


@contextlib.contextmanager
def postgres_behind_proxy(database_url: str) -> Iterator[tuple[TcpProxy, str]]:
    """A TCP proxy in front of the test database (TCP or Unix socket) and the URL through it."""
    probe = psycopg2.connect(database_url)
    try:
        info = probe.info
        host, port, user, password, dbname = info.host, info.port, info.user, info.password, info.dbname
    finally:
        probe.close()
    proxy = TcpProxy.to_unix_socket(f"{host}/.s.PGSQL.{port}") if host.startswith("/") \
        else TcpProxy(host, port)
    with proxy:
        yield proxy, (f"postgresql://{quote(user)}:{quote(password or '')}@127.0.0.1:{proxy.port}"
                      f"/{quote(dbname)}?sslmode=disable")


@pytest.fixture
def pool(clean_db):
    database = Database(clean_db, "inventory_svc", 1, POOL_SIZE)
    yield database
    database.close()


def reserve(client, headers):
    return client.put(f"/v1/reservations/{uuid.uuid4()}", headers=headers,
                      json={"lines": [{"sku": "SKU-1", "quantity": 1}]})


# --- the pool ----------------------------------------------------------------------------
def test_every_pooled_connection_the_server_ended_is_replaced_before_it_is_lent(pool, clean_db):
    stale = hold_idle(pool, POOL_SIZE)
    terminate(clean_db, stale)

    served_by = []
    for _ in range(POOL_SIZE):  # one per stale connection: each used to fail its borrower
        with pool.transaction() as cur:
            cur.execute("SELECT pg_backend_pid() AS pid")
            served_by.append(cur.fetchone()["pid"])

    assert not set(served_by) & set(stale)
    # One restart, one epoch: the first dead connection made the rest suspect, the rest added nothing.
    assert pool.generation == 1


def test_a_connection_lost_in_use_fails_with_its_own_error_and_is_never_lent_again(pool, clean_db):
    [pid] = hold_idle(pool, 1)
    with pytest.raises(psycopg2.Error) as failed:
        with pool.transaction() as cur:
            terminate(clean_db, [pid])
            cur.execute("SELECT 1")
    # The lost connection, not the rollback that could not be sent ("connection already closed").
    assert isinstance(failed.value, psycopg2.OperationalError)
    assert connection_lost(failed.value)
    assert pool.generation == 1

    with pool.transaction() as cur:
        cur.execute("SELECT pg_backend_pid() AS pid")
        assert cur.fetchone()["pid"] != pid


def test_a_lost_connection_makes_the_older_idle_ones_suspect_and_they_are_pinged_once(
        pool, clean_db):
    # The pool lends the connection returned last first: here the first one borrowed.
    doomed, survivor = hold_idle(pool, 2)
    with pytest.raises(psycopg2.OperationalError):
        with pool.transaction() as cur:
            assert cur.connection.info.backend_pid == doomed
            terminate(clean_db, [doomed])
            cur.execute("SELECT 1")
    assert pool.generation == 1

    # The survivor predates the loss: pinged before it is lent (nothing of ours has run yet)...
    with pool.transaction() as cur:
        assert cur.connection.info.backend_pid == survivor
        assert last_query(clean_db, survivor) == "SELECT 1"
        cur.execute("SELECT 'first use after the loss'")
    # ...and trusted again afterwards: its last statement is still our transaction's end.
    with pool.transaction() as cur:
        assert cur.connection.info.backend_pid == survivor
        assert last_query(clean_db, survivor) == "COMMIT"
    assert pool.generation == 1


def test_a_long_idle_connection_is_pinged_but_a_busy_one_is_not(pool, clean_db, monkeypatch):
    [pid] = hold_idle(pool, 1)
    with pool.transaction() as cur:
        assert cur.connection.info.backend_pid == pid
        assert last_query(clean_db, pid) != "SELECT 1"  # just used: no ping on the hot path
        cur.execute("SELECT 'busy'")

    monkeypatch.setattr(shared.db, "IDLE_PING_AFTER_S", 0.0)  # every connection now counts as long idle
    with pool.transaction() as cur:
        assert cur.connection.info.backend_pid == pid
        assert last_query(clean_db, pid) == "SELECT 1"


def test_a_pool_whose_database_is_unreachable_fails_with_a_connection_error_and_recovers(
        clean_db):
    with postgres_behind_proxy(clean_db) as (proxy, url):
        pool = Database(url, "inventory_svc", 1, POOL_SIZE)
        try:
            hold_idle(pool, POOL_SIZE)
            proxy.go_down()
            for _ in range(POOL_SIZE + 1):
                with pytest.raises(psycopg2.Error) as failed:
                    with pool.transaction() as cur:
                        cur.execute("SELECT 1")
                assert connection_lost(failed.value), failed.value
            proxy.go_up()
            with pool.transaction() as cur:
                cur.execute("SELECT 1 AS one")
                assert cur.fetchone()["one"] == 1
        finally:
            pool.close()


# --- through an API ------------------------------------------------------------------------
def test_an_api_answers_every_request_after_the_database_ended_its_pooled_sessions(
        app_for, catalog, auth_header):
    app = app_for("inventory")
    client = app.test_client()
    service = auth_header("order-service", SERVICE)
    db = app.extensions["db"]
    assert reserve(client, service).status_code == 201
    stale = hold_idle(db, db._maxconn)
    terminate(catalog, stale)

    statuses = [reserve(client, service).status_code for _ in range(len(stale) + 1)]

    assert statuses == [201] * (len(stale) + 1)


def test_an_api_answers_503_with_retry_after_while_the_database_is_unreachable(
        app_for, catalog, auth_header):
    with postgres_behind_proxy(catalog) as (proxy, url):
        client = app_for("inventory", DATABASE_URL=url).test_client()
        service = auth_header("order-service", SERVICE)
        assert reserve(client, service).status_code == 201

        proxy.go_down()
        for _ in range(3):  # the pooled connections cut, then no new one to be had
            body = assert_problem(reserve(client, service), 503, "database-unavailable")
            assert body["detail"]
        response = reserve(client, service)
        assert int(response.headers["Retry-After"]) >= 1

        proxy.go_up()
        assert reserve(client, service).status_code == 201
