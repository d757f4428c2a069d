"""The baseline for ``bench_orders.py``: the least a Flask endpoint can do per order.

``POST /orders`` reads the JSON body and does ONE parameterized INSERT into
``bench.orders`` with a pooled psycopg2 connection, then answers 201 with the
new id. No validation, no auth, no outbox, no logging: it measures what
gunicorn + Flask + one Postgres round trip cost on this machine, so the order
API's figures can be read against it.

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
from flask import Flask, Response, request

SCHEMA_DDL = (
    "CREATE SCHEMA IF NOT EXISTS bench",
    "CREATE TABLE IF NOT EXISTS bench.orders ("
    " id uuid PRIMARY KEY,"
    " customer_id text NOT NULL,"
    " body jsonb NOT NULL,"
    " created_at timestamptz NOT NULL DEFAULT clock_timestamp())",
)
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
    env = {**os.environ, **(config or {})}
    dsn = env.get("BENCH_DATABASE_URL") or env["DATABASE_URL"]
    pool = _Pool(dsn, int(env.get("BENCH_DB_POOL_MAX", DEFAULT_POOL_MAX)))
    app = Flask("bench_baseline")

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
