"""The baseline for ``bench_orders.py``: the least a Flask endpoint can do per order.

``POST /orders`` reads the JSON body and does ONE parameterized INSERT into
``bench.orders`` with a pooled psycopg2 connection, then answers 201 with the
new id. No validation, no auth, no outbox, no logging: it measures what
gunicorn + Flask + one Postgres round trip cost on this machine, so the order
API's figures can be read against it.

``POST /orders/two-hop`` is the minimal two-service request: it first calls
``POST /reservations`` of a second instance of this app (``BENCH_PEER_URL``)
over a pooled keep-alive HTTP connection (urllib3), which does ONE INSERT
into ``bench.reservations``, then does its own INSERT. It is what checkout
(order API -> inventory API, a transaction on each side) is measured against.

Run under the same gunicorn config as the services::

    PYTHONPATH=scripts BENCH_DATABASE_URL=postgresql://... \\
        gunicorn -c infra/gunicorn.conf.py "bench_baseline_app:create_app()"

Call :func:`ensure_schema` once before starting it (the workers do not create
tables: several of them racing on ``CREATE TABLE IF NOT EXISTS`` can fail).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import uuid

import psycopg2
import psycopg2.extras
import psycopg2.pool
import urllib3
from flask import Flask, Response, request

from shared.server_model import cooperate_with_the_worker

SCHEMA_DDL = (
    "CREATE SCHEMA IF NOT EXISTS bench",
    "CREATE TABLE IF NOT EXISTS bench.orders ("
    " id uuid PRIMARY KEY,"
    " customer_id text NOT NULL,"
    " body jsonb NOT NULL,"
    " created_at timestamptz NOT NULL DEFAULT clock_timestamp())",
    "CREATE TABLE IF NOT EXISTS bench.reservations ("
    " id uuid PRIMARY KEY,"
    " body jsonb NOT NULL,"
    " created_at timestamptz NOT NULL DEFAULT clock_timestamp())",
)
RESERVE_SQL = "INSERT INTO bench.reservations (id, body) VALUES (%s, %s)"
PEER_TIMEOUT_S = 5.0
INSERT_SQL = "INSERT INTO bench.orders (id, customer_id, body) VALUES (%s, %s, %s)"
# The order service's default DB_POOL_MAX, so both apps hold as many connections.
DEFAULT_POOL_MAX = 10
POOL_WAIT_S = 10.0
CONNECT_TIMEOUT_S = 5


def ensure_schema(database_url: str) -> None:
    """Create the ``bench`` schema and its table if missing."""
    conn = psycopg2.connect(database_url, connect_timeout=CONNECT_TIMEOUT_S)
    try:
        with conn, conn.cursor() as cur:
            for statement in SCHEMA_DDL:
                cur.execute(statement)
    finally:
        conn.close()


class _Pool:
    """A ThreadedConnectionPool that waits for a free connection instead of raising."""

    def __init__(self, dsn: str, maxconn: int):
        self._pool = psycopg2.pool.ThreadedConnectionPool(1, maxconn, dsn=dsn,
                                                          connect_timeout=CONNECT_TIMEOUT_S)
        # psycopg2 closes a returned connection once ``minconn`` are idle; keep
        # up to ``maxconn`` open instead (a pooled connection, not one per request).
        self._pool.minconn = maxconn
        self._slots = threading.BoundedSemaphore(maxconn)

    @contextlib.contextmanager
    def connection(self):
        if not self._slots.acquire(timeout=POOL_WAIT_S):
            raise RuntimeError("no database connection free")
        conn = self._pool.getconn()
        try:
            yield conn
        finally:
            self._pool.putconn(conn, close=conn.closed != 0)
            self._slots.release()


def create_app(config: dict | None = None) -> Flask:
    """The baseline app; reads BENCH_DATABASE_URL (or DATABASE_URL) and BENCH_DB_POOL_MAX."""
    cooperate_with_the_worker()  # under gevent, as the services do (shared/server_model.py)
    env = {**os.environ, **(config or {})}
    dsn = env.get("BENCH_DATABASE_URL") or env["DATABASE_URL"]
    pool = _Pool(dsn, int(env.get("BENCH_DB_POOL_MAX", DEFAULT_POOL_MAX)))
    app = Flask("bench_baseline")
    peer_url = env.get("BENCH_PEER_URL")
    # One keep-alive connection per handler thread, like the order service's HTTP client.
    peer = urllib3.PoolManager(maxsize=int(env.get("GUNICORN_THREADS", "8")), block=False,
                               retries=False, timeout=PEER_TIMEOUT_S)

    def insert(sql: str, params: tuple) -> None:
        with pool.connection() as conn:
            try:
                with conn.cursor() as cur:
                    cur.execute(sql, params)
                conn.commit()
            except BaseException:
                conn.rollback()
                raise

    @app.post("/reservations")
    def reserve():
        reservation_id = uuid.uuid4()
        insert(RESERVE_SQL, (str(reservation_id), psycopg2.extras.Json(request.get_json())))
        return Response(json.dumps({"id": str(reservation_id)}), status=201,
                        mimetype="application/json")

    @app.post("/orders/two-hop")
    def create_order_two_hop():
        payload = request.get_json()
        answer = peer.request("POST", f"{peer_url}/reservations", body=json.dumps(payload),
                              headers={"Content-Type": "application/json"})
        if answer.status != 201:
            return Response(json.dumps({"peer_status": answer.status}), status=502,
                            mimetype="application/json")
        order_id = uuid.uuid4()
        insert(INSERT_SQL, (str(order_id), payload.get("customer_id", "anonymous"),
                            psycopg2.extras.Json(payload)))
        return Response(json.dumps({"id": str(order_id)}), status=201,
                        mimetype="application/json")

    @app.post("/orders")
    def create_order():
        payload = request.get_json()
        order_id = uuid.uuid4()
        with pool.connection() as conn:
            try:
                with conn.cursor() as cur:
                    cur.execute(INSERT_SQL, (str(order_id), payload.get("customer_id", "anonymous"),
                                             psycopg2.extras.Json(payload)))
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
        return Response(json.dumps({"id": str(order_id)}), status=201,
                        mimetype="application/json")

    @app.get("/health/live")
    def live():
        return {"status": "ok"}

    return app
