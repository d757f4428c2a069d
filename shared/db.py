"""PostgreSQL access: a thread-safe connection pool and one-transaction units of work.

psycopg2 with plain parameterized SQL (repositories own all SQL). Every
connection from the pool has ``search_path`` set to the owning service's schema
so a service can never read another's tables by accident.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import psycopg2
import psycopg2.extras
import psycopg2.pool
from psycopg2 import sql

psycopg2.extras.register_uuid()

CONNECT_TIMEOUT_S = 5
# A statement that takes longer than this is a bug or a lock pile-up; fail it
# rather than hold an HTTP worker forever.
STATEMENT_TIMEOUT_MS = 15_000


class Database:
    """A pooled PostgreSQL connection source bound to one schema."""

    def __init__(self, dsn: str, schema: str, minconn: int = 1, maxconn: int = 10,
                 application_name: str = "order-platform"):
        self.dsn = dsn
        self.schema = schema
        self._options = (
            f"-c search_path={schema},public -c statement_timeout={STATEMENT_TIMEOUT_MS}"
        )
        self._pool = psycopg2.pool.ThreadedConnectionPool(
            minconn, maxconn, dsn=dsn, connect_timeout=CONNECT_TIMEOUT_S,
            options=self._options, application_name=application_name,
        )
        # psycopg2's pool *closes* a returned connection whenever ``minconn``
        # are already idle, so under concurrency every borrow beyond the
        # first opened a new server backend (a fork + auth per transaction).
        # ``minconn`` only sizes the eager start; afterwards keep up to
        # ``maxconn`` idle connections for reuse.
        self._pool.minconn = maxconn
        # ThreadedConnectionPool raises when exhausted; a semaphore makes
        # callers wait for a free connection instead.
        self._slots = threading.BoundedSemaphore(maxconn)
        self._maxconn = maxconn

    @contextlib.contextmanager
    def connection(self, timeout: float = 10.0) -> Iterator[psycopg2.extensions.connection]:
        """Borrow a connection; it goes back to the pool (rolled back) afterwards."""
        if not self._slots.acquire(timeout=timeout):
            raise PoolExhausted(f"no database connection free within {timeout}s")
        conn = None
        try:
            conn = self._pool.getconn()
            yield conn
        finally:
            if conn is not None:
                broken = conn.closed != 0
                if not broken:
                    try:
                        conn.rollback()
                    except psycopg2.Error:
                        broken = True
                self._pool.putconn(conn, close=broken)
            self._slots.release()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[psycopg2.extras.RealDictCursor]:
        """Run the block in one transaction; commit on success, roll back on error."""
        with self.connection() as conn:
            with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
                try:
                    yield cur
                    conn.commit()
                except BaseException:
                    conn.rollback()
                    raise

    def ping(self) -> None:
        """Raise if the database does not answer ``SELECT 1``."""
        with self.transaction() as cur:
            cur.execute("SELECT 1")

    def listen_connection(self, channel: str) -> psycopg2.extensions.connection:
        """Open a dedicated autocommit connection LISTENing on ``channel``."""
        conn = psycopg2.connect(self.dsn, connect_timeout=CONNECT_TIMEOUT_S,
                                options=self._options)
        conn.set_session(autocommit=True)
        with conn.cursor() as cur:
            cur.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        return conn

    def close(self) -> None:
        """Close every pooled connection."""
        self._pool.closeall()


class PoolExhausted(RuntimeError):
    """Every pooled connection stayed busy for the whole wait."""


def database_for(settings) -> Database:
    """Build the pool for a service from its :class:`shared.config.Settings`."""
    return Database(settings.database_url, settings.schema, settings.db_pool_min,
                    settings.db_pool_max, application_name=settings.producer)
